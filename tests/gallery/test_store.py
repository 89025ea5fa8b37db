"""The content-addressed crop store: a local folder, or any fsspec URL (tested through
fsspec's local file system)."""

from __future__ import annotations

import hashlib

import pytest

from abdnet.gallery import CropIntegrityError, CropStore, open_crop_store


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


@pytest.fixture(params=["folder", "fsspec"])
def store(request, tmp_path):
    """Today's local folder, and the same folder through fsspec's local file system."""
    root = tmp_path / "crops"
    return open_crop_store(root if request.param == "folder" else root.as_uri()), root


def test_both_stores_share_the_layout_and_check_sha256_on_read(store):
    s, root = store
    a, b = b"first crop", b"second crop"
    written = s.put_many([(_sha(a), "jpg", a), (_sha(b), "png", b), (_sha(a), "jpg", a)])
    assert len(written) == 2 and s.put_many([(_sha(a), "jpg", a)]) == []
    assert s.read(_sha(a), "jpg") == a and s.read(_sha(b), "png") == b
    assert (root / _sha(a)[:2] / f"{_sha(a)}.jpg").read_bytes() == a  # one layout for both
    assert (s.stats().files, s.stats().bytes) == (2, len(a) + len(b))
    assert not [p for p in root.rglob(".*")]  # no temporaries left
    (root / _sha(b)[:2] / f"{_sha(b)}.png").write_bytes(b"tampered")
    with pytest.raises(CropIntegrityError, match=f"not {_sha(b)}"):
        s.read(_sha(b), "png")
    assert s.delete(_sha(a), "jpg") and not s.delete(_sha(a), "jpg")
    assert s.read(_sha(a), "jpg") is None


def test_a_url_with_an_unknown_protocol_is_one_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="crop store nosuchfs://bucket/x: .*nosuchfs"):
        open_crop_store("nosuchfs://bucket/x")
    from abdnet.gallery import Gallery, GalleryError

    with pytest.raises(GalleryError, match="--crops: crop store nosuchfs://b"):
        Gallery.open(tmp_path / "g.db", crops="nosuchfs://b", create=True)
    assert not (tmp_path / "g.db").exists()
