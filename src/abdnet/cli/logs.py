"""The ``abdnet`` command's logging and warnings: set once, at start-up, for every command.

The library only logs (``logging.getLogger(__name__)``) and leaves other packages' loggers
and warnings alone; what a command line shows is decided here:

- abdnet's own records at INFO (``-v``: everything at DEBUG, with tracebacks of errors);
- third-party packages that log routine work at INFO (faiss's CPU-feature probes, Milvus
  Lite's server start/stop and index builds) at WARNING unless ``-v``;
- milvus-lite's ``pkg_resources is deprecated`` warning, raised by its own import on every
  gallery open, is not shown (it is about milvus-lite's packaging, nothing a user can act on;
  any other warning is shown as Python shows it).
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["QUIET_LOGGERS", "configure_logging"]

# loggers of other packages that report routine work at INFO
QUIET_LOGGERS = ("faiss.loader", "milvus_lite")


def configure_logging(*, verbose: bool) -> None:
    """Set up the root logger, the third-party loggers and the warning filters of a command."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    # issued by pkg_resources on milvus_lite's behalf (stacklevel points at milvus_lite)
    warnings.filterwarnings(
        "ignore",
        message=r"pkg_resources is deprecated as an API",
        category=UserWarning,
        module=r"milvus_lite(\.|$)",
    )
