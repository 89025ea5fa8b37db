"""The ``abdnet`` command: one entry point, one module per sub-command.

Each sub-command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; a module imports only the standard library and light abdnet modules at
its top level. ``abdnet --help`` (or no command) reads each module's ``HELP`` and calls no
``add_arguments``; a named command gets the full parser of that command only. So the top-level
help and ``--version`` load no PyTorch, and a command's heavy imports (torch, faiss,
onnxruntime, matplotlib) load only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from abdnet.cli.logs import configure_logging
from abdnet.files import FileLockedError

# sub-command -> module under abdnet.cli
COMMANDS: dict[str, str] = {
    "train": "train",
    "eval": "evaluate",
    "demo": "demo",
    "synth": "synth",
    "extract": "extract",
    "index": "index",
    "search": "search",
    "export": "export",
    "ablate": "ablate",
    "cv": "cv",
    "viz": "viz",
    "calibrate": "calibrate",
    "gallery": "gallery",
    "serve": "serve",
    "track": "track",
}


def _load(name: str):
    return importlib.import_module(f"abdnet.cli.{COMMANDS[name]}")


def build_parser(commands: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``abdnet`` parser with the full sub-parsers of ``commands``.

    ``commands=None`` builds every command's full parser (slow: some commands' options are
    read from torch-importing modules); ``main`` passes the one command it was given, or an
    empty list for the top level, where each command is listed with its ``HELP`` line only.
    """
    parser = argparse.ArgumentParser(
        prog="abdnet",
        description="ABD-Net person re-identification: train, evaluate, search, serve, export, visualize.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging; tracebacks of errors"
    )
    parser.add_argument("--version", action="version", version=f"abdnet {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    full = set(COMMANDS) if commands is None else set(commands)
    for name in COMMANDS:
        module = _load(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        if name in full:
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def version() -> str:
    """abdnet's version, from the installed package's metadata (``pyproject.toml``)."""
    from abdnet import __version__

    return __version__


# Failures a user causes and can fix: bad input (ValueError: ConfigError, DatasetError,
# ImageReadError, ...), files missing, existing, unwritable or unreadable (OSError,
# OutputExistsError), a folder in use (FileLockedError), a diverging loss
# (FloatingPointError), an optional package not installed (ImportError). Their messages name
# the file, key or option at fault; anything else is a bug and keeps its traceback.
KNOWN_ERRORS = (ValueError, OSError, FileLockedError, FloatingPointError, ImportError)


def error_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line."""
    text = str(exc) or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Original Traceback" in text and lines:
        # re-raised from a DataLoader worker: the last line is the original error
        return lines[-1]
    return " ".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Build only the requested sub-command's parser when one is named: keeps start-up fast.
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([first] if first in COMMANDS else [])
    args = parser.parse_args(argv)
    configure_logging(verbose=args.verbose)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except KNOWN_ERRORS as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"abdnet {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
