"""API keys and the access policy."""

from __future__ import annotations

import pytest

from abdnet.service import AccessPolicy, AuthError, load_api_keys

KEY = "k" * 20
OTHER = "o" * 24


def test_key_file_parsing(tmp_path):
    f = tmp_path / "keys"
    f.write_text(f"# admins\n{KEY}\n\n  {OTHER}  \n")
    assert load_api_keys(f) == [KEY, OTHER]
    f.write_text(f"{KEY}\nshort\n")
    with pytest.raises(ValueError, match="line 2: a key must be at least 16"):
        load_api_keys(f)
    f.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no key"):
        load_api_keys(f)
    with pytest.raises(FileNotFoundError, match="--api-key-file"):
        load_api_keys(tmp_path / "none")


def _status(fn, *args):
    try:
        fn(*args)
    except AuthError as exc:
        return exc.status
    return 200


def test_policy():
    keyed = AccessPolicy(keys=[KEY, OTHER])
    assert _status(keyed.check_write, "127.0.0.1", None) == 401
    assert _status(keyed.check_write, "127.0.0.1", "Bearer wrongwrongwrongwrong") == 401
    assert _status(keyed.check_write, "10.1.2.3", f"Bearer {OTHER}") == 200
    assert _status(keyed.check_write, "127.0.0.1", f"bearer {KEY}") == 200
    assert _status(keyed.check_write, "127.0.0.1", f"Basic {KEY}") == 401
    assert _status(keyed.check_read, "127.0.0.1", None) == 200
    assert _status(keyed.check_read, "::1", None) == 200
    assert _status(keyed.check_read, "10.1.2.3", None) == 401
    assert _status(keyed.check_read, "10.1.2.3", f"Bearer {KEY}") == 200

    closed = AccessPolicy(keys=None)
    assert closed.writes == "disabled"
    assert _status(closed.check_write, "127.0.0.1", f"Bearer {KEY}") == 403
    assert _status(closed.check_read, "192.168.0.5", None) == 403

    open_ = AccessPolicy(keys=None, no_auth=True, public_read=True)
    assert open_.writes == "open"
    assert _status(open_.check_write, "192.168.0.5", None) == 200
    assert _status(AccessPolicy(keys=None, no_auth=True).check_write, "192.168.0.5", None) == 403
