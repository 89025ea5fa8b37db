"""One entry point: a weights spec (see :mod:`abdnet.hub`) to a local path."""

from __future__ import annotations

import os
from pathlib import Path

from abdnet.hub.cache import download_url
from abdnet.hub.hf import resolve_hub
from abdnet.hub.settings import is_offline
from abdnet.hub.sources import UrlSource, parse_source

__all__ = ["resolve_source"]


def resolve_source(
    spec: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: bool | None = None,
) -> Path:
    """The local path a weights spec stands for, downloading (and verifying) it if needed.

    See :mod:`abdnet.hub` for the forms of ``spec``, the cache and the offline rules.
    ``offline`` / ``cache_dir`` default to ``ABDNET_OFFLINE`` / ``ABDNET_CACHE``;
    ``progress`` shows a download progress bar on stderr (None: only on a terminal).
    Raises :class:`SourceError` (a ``ValueError``) naming the spec when it cannot be resolved.
    """
    source = parse_source(spec)
    if isinstance(source, Path):
        return source
    if isinstance(source, UrlSource):
        return download_url(source, cache_dir=cache_dir, offline=offline, progress=progress)
    return resolve_hub(source, offline=is_offline(offline))
