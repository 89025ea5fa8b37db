"""Command-line interface: ``abdnet COMMAND``; see ``abdnet --help``."""

from abdnet.cli.main import main

__all__ = ["main"]
