"""The HTTP API through FastAPI's TestClient, on a real Milvus Lite gallery and a real model."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from abdnet.evaluation import pairwise_distance
from abdnet.gallery import (
    Threshold,
    describe_extractor,
    enrol_files,
)
from abdnet.retrieval import FeatureExtractor, collect_images, parse_name
from abdnet.service import AccessPolicy, ServiceSettings, create_app

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KEY = "test-key-0123456789abcdef"
LOCAL = ("127.0.0.1", 40000)
REMOTE = ("10.9.8.7", 40000)


@pytest.fixture(scope="module", params=["lite", "server"])
def env(request, tmp_path_factory, make_gallery_target, tiny_checkpoint, synth_root):
    """The service over a gallery of the synthetic test crops: every test of this module runs
    on a Milvus Lite file and on the Milvus server."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("api")
    extractor = FeatureExtractor(tiny_checkpoint, device="cpu")
    model = describe_extractor(extractor)
    paths = collect_images([synth_root / "bounding_box_test"])
    gallery = make_gallery_target(request.param, root).open(model=model, create=True)
    report = enrol_files(gallery, extractor, paths)
    gfeat = extractor(paths)
    # a threshold inside the distance range, so both decisions occur
    d = pairwise_distance(gfeat[:5], gfeat).numpy()
    threshold = Threshold(
        threshold=float(np.quantile(d, 0.2)),
        far=1e-3,
        far_achieved=1e-3,
        tar=0.5,
        eer=0.1,
        model=model,
    )
    yield {
        "root": root,
        "extractor": extractor,
        "model": model,
        "gallery": gallery,
        "paths": paths,
        "ids": [report.ids[p] for p in paths],
        "gfeat": gfeat,
        "threshold": threshold,
        "queries": collect_images([synth_root / "query"]),
    }
    gallery.close()


def _client(env, *, keys=(KEY,), no_auth=False, public_read=False, client=LOCAL, **settings):
    app = create_app(
        extractor=env["extractor"],
        gallery=env["gallery"],
        model=env["model"],
        policy=AccessPolicy(keys=list(keys) or None, no_auth=no_auth, public_read=public_read),
        threshold=env["threshold"],
        settings=ServiceSettings(**settings),
    )
    return TestClient(app, client=client)


def _file(path: str | Path, field="image", ctype="image/jpeg"):
    return [(field, (Path(path).name, Path(path).read_bytes(), ctype))]


def _png(color=(10, 200, 30), size=(32, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_search_top10_equals_brute_force(env):
    gfeat, ids = env["gfeat"], env["ids"]
    gcams = np.array([parse_name(p).camid for p in env["paths"]])
    t = env["threshold"].threshold
    with _client(env) as c:
        for q in env["queries"][:4]:
            r = c.post("/search?k=10", files=_file(q))
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["threshold"] == t and body["far"] == 1e-3
            qcam = parse_name(q).camid  # the data sets' 0-based index
            # parsed from the upload's Market-style name, counted from 1 as the name does
            assert body["camera"] == qcam + 1 and f"_c{body['camera']}" in Path(q).name
            qf = env["extractor"]([q])
            d = pairwise_distance(qf, gfeat).numpy()[0]
            d[gcams == qcam] = np.inf  # exclude_same_camera defaults to true
            order = np.argsort(d, kind="stable")[:10]
            got = body["results"]
            assert len(got) == 10
            np.testing.assert_allclose([x["distance"] for x in got], d[order], atol=1e-5)
            # ids equal wherever the distance order is unambiguous
            for x, i in zip(got, order):
                if np.sum(np.abs(d - d[i]) < 1e-5) == 1:
                    assert x["id"] == ids[i]
            for x in got:
                assert x["match"] == (x["distance"] <= t)
                assert x["score"] == pytest.approx(1 - x["distance"] / 2, abs=1e-5)
                assert x["camera"] != qcam + 1
                # the hit names the file it was enrolled from, and its frame (no invented time)
                assert x["source"] in env["paths"] and x["timestamp"] is None
                assert x["frame"] == parse_name(x["source"]).frame is not None
                assert f"_c{x['camera']}" in Path(x["source"]).name
            assert [x["distance"] for x in got] == sorted(x["distance"] for x in got)
        # filters reach the gallery: same camera allowed, label filter, time window
        q = env["queries"][0]
        same = c.post("/search?k=5&exclude_same_camera=false", files=_file(q)).json()
        assert len(same["results"]) == 5
        none = c.post("/search?k=5&label=nobody", files=_file(q)).json()
        assert none["results"] == []
        # crops with a frame number and no capture time are outside every time window
        window = c.post(
            "/search?k=40&exclude_same_camera=false&after=1970-01-01T00:00:00Z",
            files=_file(q),
        ).json()["results"]
        assert window == []
        # a camera counts from 1
        r = c.post("/search?k=5&camera=0", files=_file(q))
        assert r.status_code == 400 and "'camera'" in r.json()["error"]
        assert c.get("/gallery?camera=0").status_code == 400


def test_sightings_of_unlabelled_crops_are_one_identity_each(env):
    q = env["queries"][1]
    with _client(env) as c:
        hits = c.post("/search?k=6&exclude_same_camera=false", files=_file(q)).json()["results"]
        r = c.post("/search/sightings?k=6", files=_file(q))  # keeps the query's camera
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["threshold"] == env["threshold"].threshold
        got = body["identities"]
        assert [g["hits"][0]["id"] for g in got] == [h["id"] for h in hits]
        for g, h in zip(got, hits):
            assert g["label"] is None and g["sightings"] == 1 and g["complete"]
            assert g["distance"] == h["distance"] and g["match"] == h["match"]
            # a crop with a frame number and no capture time: one span of frames
            (cam,) = g["cameras"]
            assert cam["camera"] == h["camera"]
            assert cam["spans"] == [
                {
                    "first": None,
                    "last": None,
                    "first_frame": h["frame"],
                    "last_frame": h["frame"],
                    "sightings": 1,
                }
            ]
        bad = c.post("/search/sightings?gap=-1", files=_file(q))
        assert bad.status_code in (400, 422) and "gap" in bad.json()["error"]


def test_enrol_browse_fetch_delete(env):
    data = _png()
    with _client(env) as c:
        size0 = c.get("/healthz").json()["gallery_size"]
        r = c.post(
            "/gallery",
            files=[("image", ("new.png", data, "image/png"))],
            data={"camera": "3", "timestamp": "2024-05-01T12:30:00+02:00", "label": "alice"},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert r.status_code == 201, r.text
        (new_id,) = r.json()["ids"]
        assert r.json()["created"] == [True]
        again = c.post(
            "/gallery", files=_file_bytes(data), headers={"Authorization": f"Bearer {KEY}"}
        )
        # nothing created: 200 with the existing entry, as enrolled the first time
        assert again.status_code == 200, again.text
        assert again.json()["ids"] == [new_id] and again.json()["created"] == [False]
        (existing,) = again.json()["entries"]
        assert (existing["id"], existing["source"], existing["label"]) == (
            new_id,
            "new.png",
            "alice",
        )
        assert c.get("/healthz").json()["gallery_size"] == size0 + 1
        e = c.get(f"/gallery/{new_id}").json()
        assert (e["camera"], e["timestamp"], e["label"]) == (3, "2024-05-01T10:30:00.000Z", "alice")
        img = c.get(f"/gallery/{new_id}/image")
        assert img.status_code == 200 and img.content == data
        assert img.headers["content-type"] == "image/png"
        page = c.get("/gallery?camera=3&label=alice").json()
        assert page["total"] == 1 and page["items"][0]["id"] == new_id
        allpages = [c.get(f"/gallery?offset={o}&limit=9").json() for o in range(0, size0 + 1, 9)]
        seen = [x["id"] for p in allpages for x in p["items"]]
        assert len(seen) == len(set(seen)) == size0 + 1 and allpages[0]["total"] == size0 + 1
        # the same crop as a query finds itself at distance 0
        hit = c.post("/search?k=1&exclude_same_camera=false", files=_file_bytes(data)).json()[
            "results"
        ][0]
        assert hit["id"] == new_id and hit["distance"] < 1e-5 and hit["match"] is True
        r = c.delete(f"/gallery/{new_id}", headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 204
        assert c.get(f"/gallery/{new_id}").status_code == 404
        assert c.get(f"/gallery/{new_id}/image").status_code == 404
        assert (
            c.delete(f"/gallery/{new_id}", headers={"Authorization": f"Bearer {KEY}"}).status_code
            == 404
        )
        assert not list(env["gallery"].crops.root.rglob(f"{e['sha256']}.*"))
        assert c.get("/healthz").json()["gallery_size"] == size0


def _file_bytes(data: bytes, name="x.png", field="image"):
    return [(field, (name, data, "image/png"))]


def test_writes_need_a_key(env):
    with _client(env) as c:
        r = c.post("/gallery", files=_file_bytes(_png()))
        assert r.status_code == 401 and "API key" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
        r = c.post("/gallery", files=_file_bytes(_png()), headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        assert c.delete("/gallery/0123456789abcdef").status_code == 401
    with _client(env, keys=()) as c:  # no key file: writes refused
        r = c.post(
            "/gallery", files=_file_bytes(_png()), headers={"Authorization": f"Bearer {KEY}"}
        )
        assert r.status_code == 403 and "--api-key-file" in r.json()["error"]
        assert c.get("/info").json()["writes"] == "disabled"
    assert env["gallery"].find([_sha(_png())]) == {}


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_reads_are_local_unless_public(env):
    q = env["queries"][0]
    with _client(env, client=REMOTE) as c:
        assert c.post("/search", files=_file(q)).status_code == 401
        assert c.get("/gallery").status_code == 401
        assert c.get("/metrics").status_code == 401
        assert c.get("/gallery", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert c.get("/healthz").status_code == 200  # health is public
        assert c.get("/").status_code == 200  # the page (no data) loads, to enter a key
    with _client(env, keys=(), client=REMOTE) as c:
        assert c.get("/gallery").status_code == 403
    with _client(env, client=REMOTE, public_read=True) as c:
        assert c.post("/search", files=_file(q)).status_code == 200


def test_bad_uploads_are_refused_and_the_server_stays_up(env):
    q = env["queries"][0]
    good = Path(q).read_bytes()
    with _client(env, max_upload_bytes=200_000, max_image_pixels=64 * 32) as c:
        r = c.post(
            "/search", files=[("image", ("corrupt.jpg", good[: len(good) // 3], "image/jpeg"))]
        )
        assert r.status_code == 400 and "corrupt.jpg" in r.json()["error"]
        r = c.post("/search", files=[("image", ("noise.jpg", b"\x00garbage", "image/jpeg"))])
        assert r.status_code == 400 and "noise.jpg" in r.json()["error"]
        assert c.get("/healthz").json()["status"] == "ok"
        r = c.post("/search", files=[("image", ("notes.txt", b"hello", "text/plain"))])
        assert r.status_code == 415
        ico = io.BytesIO()
        Image.new("RGB", (16, 16)).save(ico, format="ICO")
        r = c.post("/search", files=[("image", ("x.ico", ico.getvalue(), "image/x-icon"))])
        assert r.status_code == 415 and "ICO" in r.json()["error"]
        r = c.post("/search", files=_file_bytes(_png(size=(64, 64)), name="big.png"))
        assert r.status_code == 413 and "big.png" in r.json()["error"]
        r = c.post("/search", files=_file_bytes(b"\x89PNG" + b"0" * 300_000, name="huge.png"))
        assert r.status_code == 413 and "limit" in r.json()["error"]
        assert c.post("/search", data={"x": "1"}).status_code in (400, 415)
        r = c.post("/search", files=_file(q, field="picture"))
        assert r.status_code == 400 and "'image'" in r.json()["error"]
        assert c.post("/search?k=0", files=_file(q)).status_code == 400
        r = c.post("/search?k=abc", files=_file(q))
        assert r.status_code == 400 and "'k'" in r.json()["error"]
        r = c.post("/search?after=yesterday", files=_file(q))
        assert r.status_code == 400 and "ISO 8601" in r.json()["error"]
        assert c.get("/nope").json() == {"error": "Not Found"}
        assert c.get("/healthz").status_code == 200


def test_verify(env):
    a, b = env["paths"][0], env["paths"][1]
    t = env["threshold"].threshold
    with _client(env) as c:
        r = c.post("/verify", files=[*_file(a, "image_a"), *_file(b, "image_b")]).json()
        fa, fb = env["extractor"]([a, b])
        d = float(((fa - fb) ** 2).sum())
        assert r["distance"] == pytest.approx(d, abs=1e-5) and r["match"] == (r["distance"] <= t)
        same = c.post("/verify", files=[*_file(a, "image_a"), *_file(a, "image_b")]).json()
        assert same["distance"] < 1e-6 and same["match"] is True and same["score"] > 0.9999
        assert c.post("/verify", files=_file(a, "image_a")).status_code == 400


def test_metrics_page_and_info(env):
    with _client(env) as c:
        for q in env["queries"][:3]:
            c.post("/search", files=_file(q))
        text = c.get("/metrics").text
        assert re.search(
            r'abdnet_requests_total\{method="POST",route="/search",status="200"\} [1-9]', text
        )
        assert 'abdnet_batch_size_count{stage="embed"}' in text
        assert f"abdnet_gallery_size {float(len(env['paths']))}" in text
        info = c.get("/info").json()
        assert info["model"]["fingerprint"] == env["model"].fingerprint and info["writes"] == "key"
        page = c.get("/")
        assert (
            page.status_code == 200
            and "default-src 'self'" in page.headers["content-security-policy"]
        )
        assert '<script src="/static/app.js"' in page.text
        assert "http" not in re.sub(r"https?://www\.w3\.org[^\"]*", "", page.text)  # no CDN
        assert c.get("/static/app.js").status_code == 200


def test_another_models_gallery_or_threshold_is_refused(env, tiny_checkpoint):
    from abdnet.gallery import ModelMismatchError

    flipped = FeatureExtractor(tiny_checkpoint, device="cpu", flip=True)
    with pytest.raises(ModelMismatchError, match="flip averaging on"):
        create_app(
            extractor=flipped,
            gallery=env["gallery"],
            model=describe_extractor(flipped),
            policy=AccessPolicy(keys=None),
        )


def test_camera_and_frame_of_an_upload_come_from_its_name(env):
    q = env["queries"][1]
    named = parse_name(q)
    with _client(env) as c:
        r = c.post("/gallery", files=_file(q), headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 201 and r.json()["created"] == [True]
        (i,) = r.json()["ids"]
        e = c.get(f"/gallery/{i}").json()
        # "0003_c2s1_..." is camera 2 and a frame number, no date
        assert e["camera"] == named.camid + 1 and f"_c{e['camera']}" in Path(q).name
        assert e["frame"] == named.frame and e["timestamp"] is None
        assert r.json()["entries"][0] == e
        c.delete(f"/gallery/{i}", headers={"Authorization": f"Bearer {KEY}"})


def test_too_small_images_are_refused_and_the_minimum_is_a_setting(env):
    auth = {"Authorization": f"Bearer {KEY}"}
    dot = _png(size=(1, 1))
    with _client(env) as c:
        size0 = c.get("/healthz").json()["gallery_size"]
        r = c.post("/gallery", files=_file_bytes(dot, name="dot.png"), headers=auth)
        assert r.status_code == 422
        assert "dot.png" in r.json()["error"] and "1x1 pixels" in r.json()["error"]
        r = c.post("/search", files=_file_bytes(_png(size=(40, 7)), name="sliver.png"))
        assert r.status_code == 422 and "sliver.png: " in r.json()["error"]
        assert "40x7" in r.json()["error"] and "minimum is 8" in r.json()["error"]
        assert c.get("/healthz").json()["gallery_size"] == size0
        assert 'abdnet_images_total{outcome="too_small"} 2.0' in c.get("/metrics").text
    with _client(env, min_crop_side=1) as c:
        r = c.post("/gallery", files=_file_bytes(dot, name="dot.png"), headers=auth)
        assert r.status_code == 201, r.text
        c.delete(f"/gallery/{r.json()['ids'][0]}", headers=auth)


def test_k_has_the_command_lines_limit(env):
    from abdnet.retrieval import MAX_K

    q = env["queries"][0]
    with _client(env) as c:
        r = c.post(f"/search?k={MAX_K + 1}", files=_file(q))
        assert r.status_code == 400 and f"at most {MAX_K}" in r.json()["error"]
        # at the limit, above the gallery's size: every entry of another camera
        r = c.post(f"/search?k={MAX_K}", files=_file(q))
        cams = [parse_name(p).camid + 1 for p in env["paths"]]
        assert len(r.json()["results"]) == sum(c != r.json()["camera"] for c in cams)
