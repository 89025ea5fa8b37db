"""abdnet extract / index / search end to end on a tiny synthetic set."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from abdnet.cli.main import main
from abdnet.config import Config, DataConfig, SyntheticConfig, model_config
from abdnet.data import write_synthetic
from abdnet.models import build_model_from_config
from abdnet.models.io import save_model


def _tiny_run(root: Path, dim: int, seed: int = 0) -> Path:
    cfg = Config(
        model=model_config(
            "paper", backbone="resnet18", global_dim=dim, attentive_dim=dim, reduction_dim=dim
        ),
        data=DataConfig(height=64, width=32),
    )
    torch.manual_seed(seed)
    model = build_model_from_config(cfg.model, 4)
    save_model(root / "checkpoints" / "last", model, cfg)
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    syn = write_synthetic(
        root / "syn", SyntheticConfig(ids=8, cams=2, per_id=4, height=64, width=32)
    )
    run = _tiny_run(root / "run", 16)
    gallery = root / "syn" / "bounding_box_test"
    assert (
        main(
            [
                "extract",
                "--checkpoint",
                str(run),
                "--images",
                str(gallery),
                "--out",
                str(root / "g.npz"),
            ]
        )
        == 0
    )
    return root, Path(syn), run, gallery


def _load(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_extract_writes_sorted_paths_labels_and_unit_features(env):
    root, _, _, gallery = env
    g = _load(root / "g.npz")
    names = sorted(p.name for p in gallery.iterdir() if p.suffix == ".jpg")
    assert [Path(p).name for p in g["paths"]] == names
    assert list(g["paths"]) == sorted(g["paths"])
    assert all(p.startswith(str(gallery)) for p in g["paths"])
    # Market names "PPPP_cC...": pid as written, camera 0-based
    assert g["pids"].tolist() == [int(n.split("_")[0]) for n in names]
    assert g["camids"].tolist() == [int(n.split("_")[1][1]) - 1 for n in names]
    assert g["features"].dtype == np.float32 and g["features"].shape == (len(names), 32)
    np.testing.assert_allclose(np.linalg.norm(g["features"], axis=1), 1.0, rtol=1e-5)


def test_extract_onnx_matches_checkpoint(env):
    root, _, run, gallery = env
    onnx_path = root / "m.onnx"
    assert (
        main(
            ["export", "onnx", "--checkpoint", str(run), "--out", str(onnx_path), "--dynamic-batch"]
        )
        == 0
    )
    assert (
        main(
            [
                "extract",
                "--onnx",
                str(onnx_path),
                "--images",
                str(gallery),
                "--out",
                str(root / "g_onnx.npz"),
                "--batch-size",
                "5",
            ]
        )
        == 0
    )
    a, b = _load(root / "g.npz"), _load(root / "g_onnx.npz")
    assert a["paths"].tolist() == b["paths"].tolist()
    assert np.abs(a["features"] - b["features"]).max() <= 1e-4


@pytest.mark.openvino
def test_extract_backend_onnx_matches_pytorch(env, tmp_path, monkeypatch, capsys):
    root, _, run, gallery = env
    monkeypatch.setenv("ABDNET_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "g_backend.npz"
    args = ["extract", "--checkpoint", str(run), "--images", str(gallery), "--out", str(out)]
    assert main([*args, "--backend", "onnx", "--batch-size", "7"]) == 0
    a, b = _load(root / "g.npz"), _load(out)
    assert a["paths"].tolist() == b["paths"].tolist()
    assert np.abs(a["features"] - b["features"]).max() <= 1e-4
    assert json.loads(str(b["meta"]))["backend"] == "onnxruntime fp32"
    (exported,) = (tmp_path / "cache" / "backends").glob("*.onnx")
    if importlib.util.find_spec("openvino") is not None:  # the same graph run by OpenVINO
        ov_out = tmp_path / "g_openvino.npz"
        ov_args = ["extract", "--onnx", str(exported), "--backend", "openvino"]
        assert main([*ov_args, "--images", str(gallery), "--out", str(ov_out)]) == 0
        c = _load(ov_out)
        assert c["paths"].tolist() == a["paths"].tolist()
        assert np.abs(a["features"] - c["features"]).max() <= 1e-4
        assert json.loads(str(c["meta"]))["backend"] == "openvino fp32"
    # an ONNX file cannot run in PyTorch; --remeasure means nothing without auto
    with pytest.raises(SystemExit):
        main([*args, "--backend", "fast"])
    assert "--backend: invalid choice: 'fast'" in capsys.readouterr().err
    assert main([*args, "--force", "--remeasure"]) == 2
    assert "--remeasure: only with --backend auto" in capsys.readouterr().err
    onnx_args = ["extract", "--onnx", "m.onnx", "--images", str(gallery), "--out", str(out)]
    assert main([*onnx_args, "--force", "--backend", "torch"]) == 2
    assert "--backend torch with --onnx" in capsys.readouterr().err


def test_index_flat_search_json_equals_brute_force(env, capsys):
    root, syn, run, _ = env
    assert (
        main(
            [
                "index",
                "build",
                "--features",
                str(root / "g.npz"),
                "--out",
                str(root / "ix"),
                "--kind",
                "flat",
            ]
        )
        == 0
    )
    queries = sorted(str(p) for p in (syn / "query").iterdir())[:3]
    # the query features through the extract command, the distances by hand
    assert (
        main(
            [
                "extract",
                "--checkpoint",
                str(run),
                "--images",
                *queries,
                "--out",
                str(root / "q.npz"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "search",
                "--index",
                str(root / "ix"),
                "--checkpoint",
                str(run),
                "--query",
                *queries,
                "-k",
                "10",
                "--json",
            ]
        )
        == 0
    )
    answers = json.loads(capsys.readouterr().out)
    g, q = _load(root / "g.npz"), _load(root / "q.npz")
    assert [a["query"] for a in answers] == queries == q["paths"].tolist()
    for qi, ans in enumerate(answers):
        d = ((g["features"].astype(np.float64) - q["features"][qi].astype(np.float64)) ** 2).sum(1)
        order = np.argsort(d, kind="stable")[:10]
        assert [r["path"] for r in ans["results"]] == g["paths"][order].tolist()
        assert [r["rank"] for r in ans["results"]] == list(range(1, 11))
        np.testing.assert_allclose([r["distance"] for r in ans["results"]], d[order], atol=1e-5)


def test_search_help_names_the_distance(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "squared Euclidean" in out and "L2-normalized" in out


def test_index_add_appends(env, capsys):
    root, syn, run, _ = env
    ix = root / "ix_add"
    train = syn / "bounding_box_train"
    assert main(["index", "build", "--features", str(root / "g.npz"), "--out", str(ix)]) == 0
    assert (
        main(
            [
                "extract",
                "--checkpoint",
                str(run),
                "--images",
                str(train),
                "--out",
                str(root / "t.npz"),
            ]
        )
        == 0
    )
    assert main(["index", "add", "--index", str(ix), "--features", str(root / "t.npz")]) == 0
    meta = json.loads((ix / "meta.json").read_text())
    n_g, n_t = len(_load(root / "g.npz")["paths"]), len(_load(root / "t.npz")["paths"])
    assert meta["count"] == n_g + n_t
    # adding the same files again is refused, naming one of them
    assert main(["index", "add", "--index", str(ix), "--features", str(root / "t.npz")]) == 2
    assert "already in index" in capsys.readouterr().err


def test_unreadable_image_fails_unless_skip_bad(env, tmp_path, capsys):
    root, _, run, gallery = env
    folder = tmp_path / "imgs"
    shutil.copytree(gallery, folder)
    bad = folder / "0001_c1s1_000000_00.jpg"
    bad.write_text("not a jpeg")
    out = tmp_path / "f.npz"
    assert (
        main(["extract", "--checkpoint", str(run), "--images", str(folder), "--out", str(out)]) == 2
    )
    assert str(bad) in capsys.readouterr().err and not out.exists()
    assert (
        main(
            [
                "extract",
                "--checkpoint",
                str(run),
                "--images",
                str(folder),
                "--out",
                str(out),
                "--skip-bad",
            ]
        )
        == 0
    )
    assert f"skipped {bad}" in capsys.readouterr().err
    assert str(bad) not in _load(out)["paths"].tolist()


def test_search_errors_name_the_fault(env, tmp_path, capsys):
    root, syn, run, _ = env
    if not (root / "ix").exists():
        main(["index", "build", "--features", str(root / "g.npz"), "--out", str(root / "ix")])
    query = sorted(str(p) for p in (syn / "query").iterdir())[0]
    other = _tiny_run(tmp_path / "other", 8)  # 16-d model vs the 32-d index
    assert (
        main(["search", "--index", str(root / "ix"), "--checkpoint", str(other), "--query", query])
        == 2
    )
    err = capsys.readouterr().err
    assert "16-d" in err and "32-d" in err and str(root / "ix") in err
    not_image = tmp_path / "query.jpg"
    not_image.write_text("text")
    assert (
        main(
            [
                "search",
                "--index",
                str(root / "ix"),
                "--checkpoint",
                str(run),
                "--query",
                str(not_image),
            ]
        )
        == 2
    )
    assert str(not_image) in capsys.readouterr().err
    assert (
        main(
            [
                "search",
                "--index",
                str(tmp_path / "noindex"),
                "--checkpoint",
                str(run),
                "--query",
                query,
            ]
        )
        == 2
    )
    assert "noindex" in capsys.readouterr().err
    assert (
        main(
            [
                "extract",
                "--checkpoint",
                str(run),
                "--images",
                str(tmp_path / "nodir"),
                "--out",
                str(tmp_path / "x.npz"),
            ]
        )
        == 2
    )
    assert "nodir" in capsys.readouterr().err


def test_index_build_option_errors(env, capsys):
    root, _, _, _ = env
    feats = str(root / "g.npz")
    assert (
        main(
            [
                "index",
                "build",
                "--features",
                feats,
                "--out",
                str(root / "e1"),
                "--kind",
                "flat",
                "--nlist",
                "4",
            ]
        )
        == 2
    )
    assert "--nlist" in capsys.readouterr().err
    # a gallery of a few dozen vectors cannot train 2**8 PQ centroids
    assert (
        main(
            [
                "index",
                "build",
                "--features",
                feats,
                "--out",
                str(root / "e2"),
                "--kind",
                "ivfpq",
                "--nlist",
                "4",
                "--m",
                "4",
                "--nbits",
                "8",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "too few training vectors" in err and "leave --nlist / --nbits unset" in err
    assert (
        main(["index", "build", "--features", str(root / "none.npz"), "--out", str(root / "e3")])
        == 2
    )
    assert "none.npz" in capsys.readouterr().err


def test_index_hnsw_cli_finds_exact_neighbours_on_small_gallery(env, capsys):
    root, syn, run, _ = env
    out = root / "ix_hnsw"
    assert (
        main(
            [
                "index",
                "build",
                "--features",
                str(root / "g.npz"),
                "--out",
                str(out),
                "--kind",
                "hnsw",
            ]
        )
        == 0
    )
    g = _load(root / "g.npz")
    query = g["paths"][3]  # a gallery image is its own nearest neighbour, distance ~0
    capsys.readouterr()
    assert (
        main(
            [
                "search",
                "--index",
                str(out),
                "--checkpoint",
                str(run),
                "--query",
                query,
                "-k",
                "1",
                "--json",
            ]
        )
        == 0
    )
    ans = json.loads(capsys.readouterr().out)
    assert ans[0]["results"][0]["path"] == query
    assert ans[0]["results"][0]["distance"] < 1e-6


def test_outputs_are_not_overwritten_unless_forced(env, tmp_path, capsys, monkeypatch):
    root, _, run, gallery = env
    # a run's config.yaml given as --out by mistake: refused, naming it, nothing computed
    victim = tmp_path / "config.yaml"
    victim.write_text("model: {}\n")
    from abdnet.retrieval import FeatureExtractor

    def no_work(*a, **k):
        raise AssertionError("features computed before the output was checked")

    monkeypatch.setattr(FeatureExtractor, "extract", no_work)
    base = ["extract", "--checkpoint", str(run), "--images", str(gallery)]
    capsys.readouterr()
    assert main([*base, "--out", str(victim)]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"abdnet extract: error: --out {victim}: already exists; pass --force to overwrite it\n"
    )
    assert victim.read_text() == "model: {}\n"
    # an output that cannot be written is found before the extraction too
    assert main([*base, "--out", str(victim / "f.npz")]) == 2
    assert "cannot write there" in capsys.readouterr().err
    monkeypatch.undo()
    out = tmp_path / "f.npz"
    assert main([*base, "--out", str(out)]) == 0
    assert main([*base, "--out", str(out), "--force"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "f.npz"]


def test_export_refuses_existing_and_cleans_killed_temporaries(env, tmp_path, capsys):
    import os
    import subprocess
    import sys

    root, _, run, _ = env
    out = tmp_path / "m.onnx"
    out.write_bytes(b"someone's model")
    capsys.readouterr()
    assert main(["export", "onnx", "--checkpoint", str(run), "--out", str(out)]) == 2
    assert f"--out {out}: already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"someone's model"
    assert main(["export", "onnx", "--checkpoint", str(run), "--out", str(out / "m.onnx")]) == 2
    assert f"cannot write there: {out} is a file" in capsys.readouterr().err
    # an export killed mid-write (os._exit, like SIGKILL) leaves its temporary; the next
    # export removes it
    script = (
        "import os, sys, onnx\n"
        "onnx.save = lambda *a, **k: os._exit(9)\n"
        "from abdnet.cli.main import main\n"
        f"sys.exit(main(['export', 'onnx', '--checkpoint', {str(run)!r}, '--out', "
        f"{str(out)!r}, '--force']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr[-2000:]
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".m.onnx.tmp-")]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0
    assert out.read_bytes() == b"someone's model"  # the kill did not touch the old file
    assert main(["export", "onnx", "--checkpoint", str(run), "--out", str(out), "--force"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_search_query_folder_without_images_is_an_error(env, tmp_path, capsys):
    root, _, run, _ = env
    if not (root / "ix").exists():
        main(["index", "build", "--features", str(root / "g.npz"), "--out", str(root / "ix")])
    empty = tmp_path / "queries"
    empty.mkdir()
    capsys.readouterr()
    rc = main(
        ["search", "--index", str(root / "ix"), "--checkpoint", str(run), "--query", str(empty)]
    )
    assert rc == 2
    assert (
        f"abdnet search: error: {empty}: no image files in this folder" in capsys.readouterr().err
    )


def test_tiny_image_extracted_with_a_warning_naming_it(env, tmp_path, caplog):
    import logging

    from PIL import Image

    root, _, run, gallery = env
    tiny = tmp_path / "tiny.jpg"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(tiny)
    normal = sorted(gallery.iterdir())[0]
    with caplog.at_level(logging.WARNING):
        assert (
            main(["extract", "--checkpoint", str(run), "--images", str(tiny), str(normal),
                  "--out", str(tmp_path / "f.npz")])
            == 0
        )  # fmt: skip
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith(f"{tiny}: image of 1x1 pixels")


def test_object_array_feature_file_is_named(tmp_path, capsys):
    bad = tmp_path / "obj.npz"
    np.savez(
        bad, features=np.zeros((2, 4), np.float32), paths=np.array([object(), 1], dtype=object)
    )
    assert main(["index", "build", "--features", str(bad), "--out", str(tmp_path / "ix")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"abdnet index: error: {bad}: array 'paths' cannot be read safely")
    assert not (tmp_path / "ix").exists()


def test_readme_ivfpq_line_works_on_a_small_gallery(env, capsys, caplog):
    # `abdnet index build --features gallery.npz --out gallery.index --kind ivfpq` on a
    # gallery of a few dozen crops: sizes chosen for it (and said), results those of flat
    root, syn, run, _ = env
    feats = str(root / "g.npz")
    for kind in ("ivfpq", "flat"):
        argv = ["index", "build", "--features", feats, "--out", str(root / f"readme-{kind}")]
        with caplog.at_level("INFO"):
            assert main([*argv, "--kind", kind, "--force"]) == 0, capsys.readouterr().err
    assert "ivfpq on a small gallery" in caplog.text
    query = sorted((syn / "query").glob("*.jpg"))[0]
    answers = {}
    for kind in ("ivfpq", "flat"):
        capsys.readouterr()
        argv = ["search", "--index", str(root / f"readme-{kind}"), "--checkpoint", str(run)]
        assert main([*argv, "--query", str(query), "-k", "5", "--json"]) == 0
        answers[kind] = json.loads(capsys.readouterr().out)[0]["results"]
    assert [r["path"] for r in answers["ivfpq"]] == [r["path"] for r in answers["flat"]]


def test_search_k_has_the_api_limit(env, capsys):
    from abdnet.retrieval import MAX_K
    from abdnet.service import ServiceSettings

    assert ServiceSettings().max_k == MAX_K  # one rule for the command line and the API
    root, syn, run, _ = env
    main(["index", "build", "--features", str(root / "g.npz"), "--out", str(root / "k.index"),
          "--force"])  # fmt: skip
    query = str(sorted((syn / "query").glob("*.jpg"))[0])
    argv = ["search", "--index", str(root / "k.index"), "--checkpoint", str(run), "--query", query]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*argv, "-k", str(MAX_K + 1)])
    assert exc.value.code == 2
    assert f"-k: expected an integer in 1..{MAX_K}, got '{MAX_K + 1}'" in capsys.readouterr().err
    # at the limit and above the gallery's size: every gallery item, nearest first
    assert main([*argv, "-k", str(MAX_K), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)[0]["results"]
    with np.load(root / "g.npz") as z:
        assert len(results) == len(z["features"])
