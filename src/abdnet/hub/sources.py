"""Weights specs: what a spec string names (a local path, a pinned or unpinned URL, a file
on the Hugging Face Hub), parsed without touching the network.

- ``PATH`` (or ``file://PATH``): a local path (``~`` expanded).
- ``https://HOST/PATH`` or ``http://...``, optionally pinned with ``#sha256=HEX`` (pip's
  convention): a :class:`UrlSource`.
- ``hf://OWNER/REPO[/FILE][@REVISION]``: a :class:`HubSource`; ``FILE`` defaults to
  ``model.safetensors``, the file ``abdnet export hf`` writes.
"""

from __future__ import annotations

import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from abdnet.layout import MODEL_FILE

__all__ = ["HF_DEFAULT_FILE", "HubSource", "SourceError", "UrlSource", "parse_source"]

HF_DEFAULT_FILE = MODEL_FILE  # what ``abdnet export hf`` writes and hf:// loads
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class SourceError(ValueError):
    """A weights spec cannot be resolved; the message names the spec and the reason."""


@dataclass(frozen=True)
class UrlSource:
    """An ``http(s)://`` spec: the URL (without its fragment) and the optional SHA-256 pin."""

    url: str
    sha256: str | None = None  # lower-case hex; None: unpinned

    @property
    def filename(self) -> str:
        """The URL's last path segment (what the cached file is called)."""
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.url).path.rsplit("/", 1)[-1])
        name = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".")
        return name or "download"

    def __str__(self) -> str:
        return self.url + (f"#sha256={self.sha256}" if self.sha256 else "")


@dataclass(frozen=True)
class HubSource:
    """An ``hf://OWNER/REPO[/FILE][@REVISION]`` spec."""

    repo_id: str  # OWNER/REPO
    filename: str = HF_DEFAULT_FILE  # path inside the repository
    revision: str | None = None  # branch, tag or commit; None: the default branch

    def __str__(self) -> str:
        return f"hf://{self.repo_id}/{self.filename}" + (
            f"@{self.revision}" if self.revision else ""
        )


def parse_source(spec: str | os.PathLike[str]) -> Path | UrlSource | HubSource:
    """What a weights spec names: a local path, a URL (with its pin) or a Hub file.

    Raises :class:`SourceError` for an unknown scheme or a malformed pin / Hub name.
    """
    if not isinstance(spec, str):
        return Path(spec).expanduser()
    m = _SCHEME.match(spec)
    if m is None:
        return Path(spec).expanduser()
    scheme = m.group(1).lower()
    if scheme in ("http", "https"):
        return _parse_url(spec)
    if scheme == "hf":
        return _parse_hub(spec)
    if scheme == "file":
        return Path(urllib.request.url2pathname(urllib.parse.urlsplit(spec).path))
    raise SourceError(
        f"{spec}: unsupported scheme {scheme}://; expected a local path, an https:// or http:// "
        "URL (optionally ending in #sha256=HEX) or hf://OWNER/REPO[/FILE][@REVISION]"
    )


def _parse_url(spec: str) -> UrlSource:
    url, _, fragment = spec.partition("#")
    if not urllib.parse.urlsplit(url).netloc:
        raise SourceError(f"{spec}: no host in the URL")
    if not fragment:
        return UrlSource(url)
    name, _, value = fragment.partition("=")
    if name.lower() != "sha256":
        raise SourceError(
            f"{spec}: unsupported URL fragment #{fragment}; the only one understood is "
            "#sha256=<64 hex digits>"
        )
    if not _HEX64.match(value):
        raise SourceError(f"{spec}: the #sha256= pin must be 64 hex digits, got {value!r}")
    return UrlSource(url, value.lower())


def _parse_hub(spec: str) -> HubSource:
    rest = spec[len("hf://") :]
    revision = None
    if "@" in rest:
        rest, revision = rest.rsplit("@", 1)
        if not revision:
            raise SourceError(f"{spec}: empty revision after '@'")
    parts = rest.strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise SourceError(f"{spec}: expected hf://OWNER/REPO[/FILE][@REVISION]")
    filename = "/".join(parts[2:]) or HF_DEFAULT_FILE
    return HubSource(f"{parts[0]}/{parts[1]}", filename, revision)
