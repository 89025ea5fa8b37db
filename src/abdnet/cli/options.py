"""Argument types, options and help shared by the sub-commands.

A numeric option is checked by argparse when it is parsed, so a bad value is a usage error
naming the option (``abdnet eval: error: argument --batch-size: expected an integer >= 1,
got '0'``) before anything is loaded.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = [
    "CHECKPOINT_HELP",
    "add_k_option",
    "int_at_least",
    "int_between",
    "positive_int",
    "non_negative_int",
    "positive_float",
    "non_negative_float",
    "add_force_option",
    "add_keep_state_option",
]


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"  # argparse names the type in some messages
    return parse


def int_between(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``minimum..maximum``."""
    at_least = int_at_least(minimum)

    def parse(text: str) -> int:
        value = at_least(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(
                f"expected an integer in {minimum}..{maximum}, got {text!r}"
            )
        return value

    parse.__name__ = f"integer in {minimum}..{maximum}"
    return parse


def add_k_option(parser: argparse.ArgumentParser) -> None:
    """``-k``: results per query, 1..``MAX_K``: the limit the HTTP API applies to ``k`` too."""
    from abdnet.retrieval import MAX_K  # imports torch: not at the top level

    parser.add_argument(
        "-k",
        type=int_between(1, MAX_K),
        default=10,
        help=f"results per query, 1..{MAX_K} (default 10; the HTTP API's limit too); a "
        "gallery of fewer entries gives all of them",
    )


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse ``type``: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def add_force_option(parser: argparse.ArgumentParser, what: str, *aliases: str) -> None:
    """``--force``: replace an existing output (``what`` says which) instead of refusing."""
    parser.add_argument(
        "--force", *aliases, dest="force", action="store_true", help=f"replace {what}"
    )


CHECKPOINT_HELP = (
    "run folder (checkpoints/best, else last), checkpoint folder, model.safetensors, the "
    "authors' .pth.tar, an https:// URL (pinned: URL#sha256=HEX; downloads are verified and "
    "cached in $ABDNET_CACHE, default ~/.cache/abdnet; ABDNET_OFFLINE=1 uses only the cache) "
    "or hf://OWNER/REPO[/FILE][@REVISION] (Hugging Face Hub)"
)


def add_keep_state_option(parser: argparse.ArgumentParser) -> None:
    """``--keep-state`` of the commands that train many runs (``abdnet cv``, ``abdnet
    ablate``): a finished run keeps its training state instead of dropping it."""
    parser.add_argument(
        "--keep-state",
        action="store_true",
        help="keep each finished run's training state (checkpoints/*/state.pt: optimizer, "
        "schedule, RNG; twice the weights' size) instead of removing it once the run's "
        "result is written (the weights, config and metrics always stay)",
    )
