"""The crop store on an S3-compatible server: a local moto server on 127.0.0.1, reached by
s3fs through the standard ``AWS_ENDPOINT_URL`` setting (the one ``--crops s3://...`` uses)."""

from __future__ import annotations

import hashlib
import socket

import pytest

from abdnet.gallery import CropIntegrityError, UrlCropStore, open_crop_store

moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the test extras")
pytest.importorskip("s3fs", reason="s3fs is in the test extras")
boto3 = pytest.importorskip("boto3", reason="a dependency of moto")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """A fresh bucket on the server; s3fs and boto3 configured through the environment only."""
    import fsspec

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    fsspec.get_filesystem_class("s3").clear_instance_cache()
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"crops-{_free_port()}"
    client.create_bucket(Bucket=bucket)
    yield client, bucket
    fsspec.get_filesystem_class("s3").clear_instance_cache()


def _keys(client, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_crops_are_content_addressed_objects_checked_on_read(s3):
    client, bucket = s3
    store = open_crop_store(f"s3://{bucket}/abdnet/crops")
    assert isinstance(store, UrlCropStore)
    a, b = b"first crop bytes", b"\x89PNG second crop"
    written = store.put_many([(_sha(a), "jpg", a), (_sha(b), "png", b), (_sha(a), "jpg", a)])
    assert len(written) == 2  # the duplicate is written once
    # the objects, as an independent S3 client lists them: final names only, no temporaries
    assert _keys(client, bucket) == sorted(
        [f"abdnet/crops/{_sha(a)[:2]}/{_sha(a)}.jpg", f"abdnet/crops/{_sha(b)[:2]}/{_sha(b)}.png"]
    )
    got = client.get_object(Bucket=bucket, Key=f"abdnet/crops/{_sha(a)[:2]}/{_sha(a)}.jpg")
    assert got["Body"].read() == a
    assert store.read(_sha(a), "jpg") == a and store.read(_sha(b), "png") == b
    assert store.put_many([(_sha(a), "jpg", a)]) == []  # already stored
    st = store.stats()
    assert (st.files, st.bytes) == (2, len(a) + len(b))
    assert store.get(_sha(a), "jpg") is None  # no local path for s3://
    assert store.read(_sha(b"never stored"), "jpg") is None

    # an object whose bytes no longer match its name is refused, naming the URL
    client.put_object(
        Bucket=bucket, Key=f"abdnet/crops/{_sha(a)[:2]}/{_sha(a)}.jpg", Body=b"tampered"
    )
    with pytest.raises(CropIntegrityError, match=f"s3://{bucket}/abdnet/crops"):
        store.read(_sha(a), "jpg")

    assert store.delete(_sha(b), "png") and not store.delete(_sha(b), "png")
    assert store.read(_sha(b), "png") is None
    assert len(_keys(client, bucket)) == 1


def test_two_stores_on_one_url_see_each_others_crops(s3):
    import fsspec

    client, bucket = s3
    url = f"s3://{bucket}/shared"
    first = open_crop_store(url)
    fsspec.get_filesystem_class("s3").clear_instance_cache()  # a second, separate connection
    second = open_crop_store(url)
    assert first.fs is not second.fs
    a, b = b"enrolled through replica A", b"enrolled through replica B"
    assert len(first.put_many([(_sha(a), "jpg", a)])) == 1
    assert len(second.put_many([(_sha(b), "jpg", b)])) == 1
    assert second.read(_sha(a), "jpg") == a
    assert first.read(_sha(b), "jpg") == b
    assert second.put_many([(_sha(a), "jpg", a)]) == []  # A's object is seen, not rewritten
    assert first.stats().files == second.stats().files == 2
    assert len(_keys(client, bucket)) == 2
