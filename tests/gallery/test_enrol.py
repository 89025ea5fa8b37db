"""Bulk enrolment of files: metadata from names, embeddings equal FeatureExtractor's,
idempotent, resumable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from abdnet.gallery import (
    Gallery,
    NameMetadata,
    describe_extractor,
    embed_files,
    enrol_files,
    name_metadata,
    pending_files,
)
from abdnet.retrieval import FeatureExtractor, ImageReadError, collect_images, parse_name

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def extractor(tiny_checkpoint):
    return FeatureExtractor(tiny_checkpoint, device="cpu")


def test_name_metadata_counts_cameras_as_the_names_do_and_keeps_frames():
    # c3 is camera 3 (the data sets' camid is 2); a frame number is a frame, not a time
    assert name_metadata("x/0002_c3s1_000451_03.jpg") == NameMetadata(camera=3, frame=451, pid=2)
    assert parse_name("x/0002_c3s1_000451_03.jpg").camid == 2
    assert name_metadata("0001_c2_f0046182.jpg") == NameMetadata(camera=2, frame=46182, pid=1)
    assert name_metadata("street.jpg") == NameMetadata(None, None, None)


def test_enrol_resume_and_idempotence(tmp_path, synth_root, extractor):
    paths = collect_images([synth_root / "bounding_box_test"])
    info = describe_extractor(extractor)
    with Gallery.open(tmp_path / "g.db", model=info, create=True) as g:
        calls = []

        def interrupt(n):
            calls.append(n)
            if len(calls) == 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            enrol_files(g, extractor, paths, batch_size=8, commit_every=8, progress=interrupt)
        assert g.size() == 16  # two committed batches
        report = enrol_files(g, extractor, paths, batch_size=8, label_from_pid=True)
        assert (report.added, report.skipped) == (len(paths) - 16, 16)
        assert g.size() == len(paths)
        again = enrol_files(g, extractor, paths, batch_size=8)
        assert (again.added, again.skipped) == (0, len(paths))
        # embeddings are FeatureExtractor's; camera and time from the names
        feats = extractor(paths).numpy()
        ids = [report.ids[p] for p in paths]
        hits = g.search(feats, 1)
        assert [h[0].entry.id for h in hits] == ids
        np.testing.assert_allclose([h[0].distance for h in hits], 0.0, atol=1e-5)
        for p, i in zip(paths[:5], ids[:5]):
            (e,) = g.get([i])
            named = parse_name(p)  # the name's "c<N>" and frame, read independently
            assert (e.camera, e.frame) == (named.camid + 1, named.frame) and e.source == p
            assert e.timestamp is None  # a frame number is no capture time
            assert f"_c{e.camera}" in Path(p).name
            as_json = e.to_dict()
            assert as_json["timestamp"] is None and as_json["frame"] == named.frame
        labelled = [g.get([report.ids[p]])[0].label for p in paths[16:20]]
        assert labelled == [str(parse_name(p).pid) for p in paths[16:20]]


def test_bad_file_stops_or_is_skipped(tmp_path, synth_root, extractor):
    good = collect_images([synth_root / "query"])[:3]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with Gallery.open(tmp_path / "g.db", model=describe_extractor(extractor), create=True) as g:
        with pytest.raises(ImageReadError, match="broken.jpg"):
            enrol_files(g, extractor, [*good, str(bad)])
        report = enrol_files(g, extractor, [*good, str(bad)], skip_bad=True, camera=5)
        assert report.added == 3 and [f for f, _ in report.failed] == [str(bad)]
        assert {e.camera for e in g.page(limit=100).items} == {5}


def test_crops_below_the_minimum_side_are_refused_naming_file_and_size(
    tmp_path, synth_root, extractor, tiny_checkpoint, capsys
):
    from PIL import Image

    from abdnet.cli.main import main
    from abdnet.gallery import ImageTooSmall

    good = collect_images([synth_root / "query"])[:2]
    dot, sliver = tmp_path / "dot.png", tmp_path / "sliver.png"
    Image.new("RGB", (1, 1)).save(dot)
    Image.new("RGB", (5, 60)).save(sliver)
    with Gallery.open(tmp_path / "g.db", model=describe_extractor(extractor), create=True) as g:
        with pytest.raises(ImageTooSmall, match=r"dot.png: .*1x1 pixels, the minimum is 8 "):
            enrol_files(g, extractor, [*good, str(dot)])
        report = enrol_files(g, extractor, [*good, str(dot), str(sliver)], skip_bad=True)
        assert report.added == 2 and [f for f, _ in report.failed] == [str(dot), str(sliver)]
        assert "5x60 pixels" in report.failed[1][1]
        # the minimum is a setting: 1 takes any image
        report = enrol_files(g, extractor, [str(dot)], min_side=1)
        assert report.added == 1 and g.size() == 3
    # the command line: --min-side, and the error names the file and its size
    g2 = str(tmp_path / "g2.db")
    argv = ["gallery", "add", "--gallery", g2, "--checkpoint", str(tiny_checkpoint),
            "--no-progress", "--images", str(dot)]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("abdnet gallery: error: ") and f"{dot}: " in err and "1x1 pixels" in err
    assert main([*argv, "--min-side", "1"]) == 0
    assert "added 1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*argv, "--min-side", "0"])
    assert "--min-side: expected an integer >= 1" in capsys.readouterr().err


def test_enrol_with_precomputed_embeddings(tmp_path, synth_root, extractor):
    paths = collect_images([synth_root / "query"])[:6]
    with Gallery.open(tmp_path / "g.db", model=describe_extractor(extractor), create=True) as g:
        enrol_files(g, extractor, paths[:2])
        # what is not enrolled yet, once per content
        assert pending_files(g, [*paths, paths[3]], chunk=4) == paths[2:]
        embedded = embed_files(extractor, paths[2:], batch_size=3)
        np.testing.assert_allclose(embedded.features, extractor(paths[2:]).numpy(), atol=1e-5)
        partial = embedded.as_dict()
        del partial[embedded.sha256[-1]]
        with pytest.raises(ValueError, match=f"{paths[5]}: no embedding"):
            enrol_files(g, None, paths, embeddings=partial)
        assert g.size() == 2  # the failed call committed nothing
        report = enrol_files(g, None, paths, embeddings=embedded.as_dict(), commit_every=1)
        assert (report.added, report.skipped) == (4, 2)
        hits = g.search(extractor(paths).numpy(), 1, None)
        assert [h[0].entry.id for h in hits] == [report.ids[p] for p in paths]
        np.testing.assert_allclose([h[0].distance for h in hits], 0.0, atol=1e-5)
