"""abdnet train / eval / demo command lines (small and in-process)."""

import json

import numpy as np
import pytest
import torch

from abdnet.cli.main import main


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, small_config_file):
    cfg_file = small_config_file
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--config", str(cfg_file), "--out", str(run), "--no-progress"]) == 0
    return run


def test_train_writes_run_folder(small_run):
    assert (small_run / "config.yaml").is_file()
    assert (small_run / "checkpoints" / "last" / "model.safetensors").is_file()
    lines = (small_run / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["epoch"] == 1 and set(record["loss"]) == {"total", "xent", "triplet", "of", "ow"}
    assert 0.0 <= record["test"]["mAP"] <= 1.0
    assert any((small_run / "tb").iterdir())  # TensorBoard event file


def _brute_force_map(qf, gf, qp, gp, qc, gc):
    # Market-1501 protocol by hand: drop same-pid-same-camera gallery items, AP over matches
    aps, top1 = [], []
    for i in range(len(qf)):
        d = ((gf - qf[i]) ** 2).sum(1)
        keep = ~((gp == qp[i]) & (gc == qc[i]))
        order = np.argsort(d[keep], kind="stable")
        match = (gp[keep][order] == qp[i]).astype(float)
        if match.sum() == 0:
            continue
        hits = np.cumsum(match)
        aps.append(float((hits / np.arange(1, len(match) + 1))[match == 1].mean()))
        top1.append(match[0])
    return float(np.mean(aps)), float(np.mean(top1)), len(aps)


def test_eval_json_matches_brute_force(small_run, capsys):
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(small_run), "--json", "--device", "cpu"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert {"mAP", "mINP", "rank1", "rank5", "rank10", "num_query", "num_gallery"} <= set(got)

    from abdnet.data import build_dataset, build_test_transform
    from abdnet.models.io import load_model

    loaded = load_model(small_run)
    ds = build_dataset(loaded.config.data)
    tf = build_test_transform(loaded.config.data)
    model = loaded.model.eval()
    with torch.no_grad():
        feats = {
            name: torch.stack(
                [model(tf(ds.read_image(r))[None]).embedding[0] for r in recs]
            ).numpy()
            for name, recs in (("q", ds.query), ("g", ds.gallery))
        }
    qp, gp = np.array([r.pid for r in ds.query]), np.array([r.pid for r in ds.gallery])
    qc, gc = np.array([r.camid for r in ds.query]), np.array([r.camid for r in ds.gallery])
    mAP, rank1, valid = _brute_force_map(feats["q"], feats["g"], qp, gp, qc, gc)
    assert got["mAP"] == pytest.approx(mAP, abs=1e-5)
    assert got["rank1"] == pytest.approx(rank1, abs=1e-9)
    assert got["num_query_used"] == valid and got["num_query"] == len(ds.query)
    assert got["num_gallery"] == len(ds.gallery)
    # the verification numbers in the embedder's space (squared L2 of unit vectors, whatever
    # eval.normalize ranks by), against a brute-force pair count
    q = feats["q"] / np.linalg.norm(feats["q"], axis=1, keepdims=True)
    g = feats["g"] / np.linalg.norm(feats["g"], axis=1, keepdims=True)
    d = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    cross = qc[:, None] != gc[None, :]
    genuine = d[cross & (qp[:, None] == gp[None, :])]
    impostor = d[cross & (qp[:, None] != gp[None, :])]
    assert got["num_genuine_pairs"] == genuine.size and got["num_impostor_pairs"] == impostor.size
    for far in ("1e-02", "1e-03"):
        t = got[f"threshold@far={far}"]
        # the reference distances are computed here in another order: a pair within float32
        # rounding (1e-6) of the threshold may fall on either side of it
        assert (impostor <= t - 1e-6).mean() <= float(far) + 1e-12
        assert got[f"tar@far={far}"] == pytest.approx((genuine <= t).mean(), abs=1e-4)
    assert 0.0 <= got["eer"] <= 1.0


def test_bad_override_names_the_key(tmp_path, capsys, small_config_file):
    cfg_file = small_config_file
    rc = main(
        ["train", "--config", str(cfg_file), "--out", str(tmp_path / "r"), "--set", "optim.lrr=1"]
    )
    assert rc == 2 and "optim.lrr" in capsys.readouterr().err


def test_resume_rejects_config_and_missing_run(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--config", "x.yaml"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "none")]) == 2
    assert "config.yaml" in capsys.readouterr().err


def test_train_options_parse_with_their_defaults_and_checks(tmp_path, capsys, small_config_file):
    from abdnet.cli.main import build_parser

    parser = build_parser(["train"])
    args = parser.parse_args(["train"])
    assert (args.config, args.out, args.resume, args.data) == (None, None, None, None)
    assert (args.overrides, args.max_epochs, args.force, args.no_progress) == (
        [],
        None,
        False,
        False,
    )
    args = parser.parse_args(
        ["train", "--config", "c.yaml", "--out", "r", "--set", "optim.lr=1e-4", "--set",
         "train.epochs=2", "--max-epochs", "3", "--force", "--no-progress"]
    )  # fmt: skip
    assert (args.config, args.out, args.max_epochs, args.force) == ("c.yaml", "r", 3, True)
    assert args.overrides == ["optim.lr=1e-4", "train.epochs=2"]  # in order, repeatable
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["train", "--max-epochs", "0"])
    assert exc.value.code == 2
    assert "argument --max-epochs: expected an integer >= 1, got '0'" in capsys.readouterr().err
    # --config and --out go together; refused before anything is written
    for argv in (["--config", str(small_config_file)], ["--out", str(tmp_path / "r")]):
        assert main(["train", *argv]) == 2
        assert "--config C and --out RUN are required" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    # the help text renders (a stray % in a help string would fail here)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("usage: abdnet train")


@pytest.mark.slow
def test_demo_writes_metrics_and_report(tmp_path, capsys):
    # the demo's plumbing on a minute problem (the real demo's numbers are checked by hand)
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--no-progress"]
    for kv in (
        "data.synthetic.ids=8", "data.synthetic.cams=2", "data.synthetic.per_id=4",
        "data.height=64", "data.width=32", "data.batch_size=8", "model.global_dim=32",
        "model.attentive_dim=32", "model.reduction_dim=32", "train.frozen_epochs=0",
        "train.epochs=1", "train.precision=fp32",
    ):  # fmt: skip
        args += ["--set", kv]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("abdnet", "untrained"):
        assert 0.0 <= metrics[key]["mAP"] <= 1.0 and 0.0 <= metrics[key]["rank1"] <= 1.0
    report = (out / "report.md").read_text()
    assert f"{100 * metrics['abdnet']['mAP']:.1f}%" in report
    assert "ABD-Net, trained" in capsys.readouterr().out
    assert main(args) == 0  # a second demo into the same folder replaces its run


def test_eval_reproduces_what_training_recorded(small_run, capsys, monkeypatch):
    # A CPU with native bf16 where "auto" would pick bf16: evaluation must still run in the
    # precision the run evaluated in (eval.precision, fp32) and say so.
    from abdnet.engine import precision as P

    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(P, "_cpu_bf16_speedup", lambda: 3.0)
    recorded = json.loads((small_run / "metrics.jsonl").read_text().splitlines()[-1])["test"]
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(small_run), "--json", "--device", "cpu"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["precision"] == "fp32"
    for key in ("mAP", "mINP", "rank1", "rank5", "rank10"):
        assert got[key] == pytest.approx(recorded[key], abs=1e-6), key
    assert main(["eval", "--checkpoint", str(small_run), "--device", "cpu", "--no-progress"]) == 0
    assert "precision fp32" in capsys.readouterr().out


def test_eval_options_are_checked_before_any_work(small_run, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--checkpoint", str(small_run), "--batch-size", "0"])
    assert exc.value.code == 2
    assert "argument --batch-size: expected an integer >= 1, got '0'" in capsys.readouterr().err


def test_dangling_resume_is_refused_and_history_kept(small_run, tmp_path, capsys, copy_run):
    import shutil

    run = copy_run(small_run, tmp_path / "run")
    history = (run / "metrics.jsonl").read_text()
    shutil.rmtree((run / "checkpoints" / "last").resolve())
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("abdnet train: error: --resume ") and err.count("\n") == 1
    assert "checkpoints/last points to a missing folder" in err and "Traceback" not in err
    assert (run / "metrics.jsonl").read_text() == history


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_state_on_resume_is_one_line_naming_the_file(
    small_run, tmp_path, capsys, copy_run
):
    import pickle

    run = copy_run(small_run, tmp_path / "run")
    marker = tmp_path / "code-ran"
    state_file = run / "checkpoints" / "last" / "state.pt"
    state_file.unlink()  # a fresh file: the copy's state.pt is the original's inode
    state_file.write_bytes(pickle.dumps({"epoch": 1, "x": _Payload(str(marker))}))
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("abdnet train: error: ") and err.count("\n") == 1
    assert "state.pt: refused" in err and not marker.exists()


def test_known_failures_are_one_line_and_traceback_only_with_v(
    tmp_path, capsys, monkeypatch, small_config_file
):
    import abdnet.engine as engine

    def diverging(*args, **kwargs):
        raise FloatingPointError("epoch 1: the loss is not finite; lower optim.lr")

    monkeypatch.setattr(engine, "train", diverging)
    cfg_file = small_config_file
    args = ["train", "--config", str(cfg_file), "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == "abdnet train: error: epoch 1: the loss is not finite; lower optim.lr\n"
    assert main(["-v", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("lower optim.lr\n")


def test_error_line_of_a_dataloader_worker_failure():
    from abdnet.cli.main import error_line

    wrapped = ValueError(
        "Caught ImageReadError in DataLoader worker process 0.\nOriginal Traceback (most "
        "recent call last):\n  File ...\nabdnet.data.images.ImageReadError: a.jpg: cannot read"
    )
    assert error_line(wrapped) == "abdnet.data.images.ImageReadError: a.jpg: cannot read"
    assert error_line(ValueError("c.yaml: not valid YAML:\n  line 3")) == (
        "c.yaml: not valid YAML: line 3"
    )
