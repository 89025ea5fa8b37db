"""The CLI's logging: one set-up for every sub-command.

The library only logs (``logging.getLogger(__name__)``); what reaches the terminal is
decided here. Third-party loggers that report routine work at INFO are held at WARNING:
Milvus Lite logs every server start/stop and index build, and faiss's loader each CPU
feature probe on its first import.
"""

from __future__ import annotations

import logging

__all__ = ["QUIET_LOGGERS", "setup_logging"]

QUIET_LOGGERS = ("milvus_lite", "faiss.loader")


def setup_logging(*, verbose: bool) -> None:
    """Log to stderr at INFO (DEBUG with ``verbose``), third-party chatter at WARNING."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
