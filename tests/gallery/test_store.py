"""The content-addressed crop store."""

from __future__ import annotations

import hashlib

import pytest

from abdnet.gallery import CropStore


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_put_get_delete(tmp_path):
    store = CropStore(tmp_path / "crops")
    a, b = b"first crop", b"second crop"
    written = store.put_many([(_sha(a), "jpg", a), (_sha(b), "png", b), (_sha(a), "jpg", a)])
    assert len(written) == 2  # the duplicate is written once
    pa = store.get(_sha(a), "jpg")
    assert pa is not None and pa.read_bytes() == a
    assert pa.parent.name == _sha(a)[:2] and pa.name == _sha(a) + ".jpg"
    assert store.put_many([(_sha(a), "jpg", a)]) == []  # already stored
    st = store.stats()
    assert (st.files, st.bytes) == (2, len(a) + len(b))
    assert store.delete(_sha(a), "jpg") and not store.delete(_sha(a), "jpg")
    assert store.get(_sha(a), "jpg") is None
    assert not [p for p in (tmp_path / "crops").rglob(".*")]  # no temporaries left


def test_paths_are_validated(tmp_path):
    store = CropStore(tmp_path)
    with pytest.raises(ValueError, match="sha256"):
        store.path("../../etc/passwd", "jpg")
    with pytest.raises(ValueError, match="extension"):
        store.path("0" * 64, "exe")
