"""The settings weights are resolved under: ``ABDNET_OFFLINE`` (never contact a server),
``ABDNET_CACHE`` (where URL downloads are cached) and the version abdnet announces itself
with to servers (``User-Agent``, the Hugging Face Hub's ``library_version``).
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

from abdnet.hub.sources import SourceError

__all__ = ["CACHE_ENV", "OFFLINE_ENV", "cache_root", "client_version", "is_offline"]

CACHE_ENV = "ABDNET_CACHE"
OFFLINE_ENV = "ABDNET_OFFLINE"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else the ``ABDNET_OFFLINE`` environment variable (1/true/yes/on)."""
    if offline is not None:
        return bool(offline)
    value = os.environ.get(OFFLINE_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SourceError(f"{OFFLINE_ENV}={value!r}: expected 1/true/yes/on or 0/false/no/off")


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``cache_dir`` if given, else ``$ABDNET_CACHE``, else ~/.cache/abdnet."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/abdnet").expanduser()


def client_version() -> str:
    """abdnet's installed version ("0" when run from a source tree)."""
    try:
        return importlib.metadata.version("abdnet")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0"
