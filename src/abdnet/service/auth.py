"""Who may do what: bearer API keys for writes, reads open on the loopback interface only.

- Writes (enrol, delete) need ``Authorization: Bearer KEY`` with a key of the key file. Without
  a key file, writes are refused (403) unless the server runs with ``--no-auth``.
- Reads (search, verify, browse, crops, metrics, the page) are open to clients on the loopback
  interface; other clients need a valid key, unless the server runs with ``--public-read``.
- ``/healthz`` is open to everyone (load balancers), and reveals only the gallery size and
  the model fingerprint.

Keys are compared in constant time: the presented key's SHA-256 is compared with every
stored key's SHA-256 by ``hmac.compare_digest``, always against all of them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AccessPolicy", "AuthError", "load_api_keys", "MIN_KEY_LENGTH"]

log = logging.getLogger(__name__)

# Shorter keys are guessable; `openssl rand -hex 32` gives 64 characters.
MIN_KEY_LENGTH = 16


class AuthError(Exception):
    """A request is not allowed: ``status`` is 401 (no or wrong key) or 403 (refused)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def load_api_keys(path: str | Path) -> list[str]:
    """Keys from a file, one per line (blank lines and lines starting with ``#`` ignored)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--api-key-file {p}: not found")
    mode = p.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s is readable by other users (chmod 600 it)", p)
    keys = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key):
            raise ValueError(
                f"--api-key-file {p}, line {n}: a key must be at least {MIN_KEY_LENGTH} "
                f"characters without spaces (e.g. `openssl rand -hex 32`)"
            )
        keys.append(key)
    if not keys:
        raise ValueError(f"--api-key-file {p}: no key in the file")
    return keys


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@dataclass
class AccessPolicy:
    keys: list[str] | None  # None: no key file
    no_auth: bool = False  # writes open to anyone who may read
    public_read: bool = False  # reads open to every client

    def __post_init__(self) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in self.keys or []]

    @property
    def writes(self) -> str:
        """``key`` (a key is needed), ``open`` (--no-auth) or ``disabled``."""
        if self.keys:
            return "key"
        return "open" if self.no_auth else "disabled"

    def valid_key(self, authorization: str | None) -> bool:
        if not authorization or not self._digests:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        presented = hashlib.sha256(token.strip().encode()).digest()
        ok = False
        for d in self._digests:  # every key, no early exit
            ok |= hmac.compare_digest(presented, d)
        return ok

    def check_read(self, client_host: str | None, authorization: str | None) -> None:
        if self.public_read or _is_loopback(client_host) or self.valid_key(authorization):
            return
        if self.keys:
            raise AuthError(
                401, "reads from other hosts need an API key (Authorization: Bearer KEY)"
            )
        raise AuthError(
            403, "reads are open to the local host only (the server runs without --public-read)"
        )

    def check_write(self, client_host: str | None, authorization: str | None) -> None:
        if self.keys:
            if self.valid_key(authorization):
                return
            raise AuthError(
                401,
                "a valid API key is needed (Authorization: Bearer KEY)"
                if authorization
                else "an API key is needed (Authorization: Bearer KEY)",
            )
        if not self.no_auth:
            raise AuthError(
                403, "writes are disabled: the server runs without --api-key-file (or --no-auth)"
            )
        self.check_read(client_host, authorization)
