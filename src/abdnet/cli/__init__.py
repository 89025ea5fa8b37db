"""Command-line interface: ``abdnet COMMAND``; see ``abdnet --help``."""

from __future__ import annotations

from typing import Any

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``python -m abdnet.cli.main`` (torchrun, tests) does not
    # find abdnet.cli.main already imported by its package and warn about it.
    if name == "main":
        from abdnet.cli.main import main

        return main
    raise AttributeError(f"module 'abdnet.cli' has no attribute {name!r}")
