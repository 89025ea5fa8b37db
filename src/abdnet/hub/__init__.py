"""abdnet.hub: model weights from anywhere: local paths, verified URL downloads, the Hugging
Face Hub.

:func:`resolve_source` turns a weights *spec* into a local path:

- ``PATH`` (or ``file://PATH``): returned as given (``~`` expanded); the caller decides whether
  it is a file, a checkpoint folder or a run folder.
- ``https://HOST/PATH`` or ``http://...``, optionally pinned with ``#sha256=HEX`` (pip's
  convention): downloaded into the abdnet cache and returned from there (the cache's rules:
  :mod:`abdnet.hub.cache`).
- ``hf://OWNER/REPO[/FILE][@REVISION]``: ``huggingface_hub.hf_hub_download`` (its own cache,
  ``HF_HOME`` / ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, branch / tag / commit
  revisions; :mod:`abdnet.hub.hf`). ``FILE`` defaults to ``model.safetensors``, the file
  ``abdnet export hf`` writes.

Offline (``ABDNET_OFFLINE=1`` or the ``offline`` argument): no server is contacted; a cached
file is used and a missing one is an error.

Modules: ``sources`` (parsing a spec), ``settings`` (``ABDNET_OFFLINE``, ``ABDNET_CACHE``),
``cache`` (URL downloads), ``hf`` (the Hub), ``resolve`` (:func:`resolve_source`).
``pooch`` is imported when a URL is downloaded, ``huggingface_hub`` when an ``hf://`` spec
is resolved. This package imports only :mod:`abdnet.files` and :mod:`abdnet.layout` of abdnet.
"""

from abdnet.hub.cache import ChecksumError, download_url, sha256_file
from abdnet.hub.resolve import resolve_source
from abdnet.hub.settings import CACHE_ENV, OFFLINE_ENV, cache_root, is_offline
from abdnet.hub.sources import HF_DEFAULT_FILE, HubSource, SourceError, UrlSource, parse_source

__all__ = [
    "CACHE_ENV",
    "OFFLINE_ENV",
    "HF_DEFAULT_FILE",
    "ChecksumError",
    "SourceError",
    "UrlSource",
    "HubSource",
    "cache_root",
    "download_url",
    "is_offline",
    "parse_source",
    "resolve_source",
    "sha256_file",
]
