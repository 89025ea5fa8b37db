"""Table 1 variants: each config builds the intended network, the YAML rows agree, the
tables are well formed, the statistics over seeds agree with numpy, and an ablation resumes
per (variant, seed) without retraining."""

import csv
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from abdnet.ablation import (
    METRIC_NAMES,
    NOISE_SE,
    TABLE1_VARIANTS,
    TIME_NAME,
    VARIANTS,
    VariantResult,
    read_result,
    reference_row,
    resolve_variants,
    run_ablation,
    run_folder,
    summarize,
    variant_config,
    write_tables,
)
from abdnet.ablation.report import _figure
from abdnet.config import config_to_dict, dump_config, load_config
from abdnet.files import FileLockedError, FolderLock, atomic_write
from abdnet.layout import RunLayout
from abdnet.models import CAM, PAM, EigenLayer, build_model_from_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: faster than threads fighting for shared cores
    yield
    torch.set_num_threads(before)


# name -> (CAM modules, PAM modules, O.F. positions, O.W. on, SVD layer, triplet)
EXPECTED = {
    "baseline": (0, 0, [], False, False, False),
    "pam": (0, 1, [], False, False, False),
    "cam": (2, 0, [], False, False, False),
    "pam_cam": (2, 1, [], False, False, False),
    "of": (0, 0, ["shallow", "reduction"], False, False, False),
    "ow": (0, 0, [], True, False, False),
    "of_ow": (0, 0, ["shallow", "reduction"], True, False, False),
    "svd": (0, 0, [], False, True, False),
    "abdnet_xe": (2, 1, ["shallow", "reduction", "cam", "pam"], True, False, False),
    "abdnet": (2, 1, ["shallow", "reduction", "cam", "pam"], True, False, True),
}


def _base():
    return load_config(
        None,
        [
            "model.backbone=resnet18",
            "model.global_dim=16",
            "model.attentive_dim=16",
            "model.reduction_dim=16",
        ],
    )


def _resnet18_convs() -> tuple[int, int]:
    """Conv layers of torchvision's resnet18 and of its layer4 (res_conv_5)."""
    net = torchvision.models.resnet18()
    total = sum(isinstance(m, nn.Conv2d) for m in net.modules())
    return total, sum(isinstance(m, nn.Conv2d) for m in net.layer4.modules())


def test_ten_table1_rows_named_as_in_the_paper():
    labels = [v.label for v in TABLE1_VARIANTS]
    assert len(labels) == 10 and labels[0] == "baseline (XE)" and labels[-1] == "ABD-Net"
    assert set(EXPECTED) == {v.name for v in TABLE1_VARIANTS}
    assert resolve_variants(None) == list(TABLE1_VARIANTS)
    assert len(resolve_variants(["all"])) == len(VARIANTS) > 10
    with pytest.raises(ValueError, match="--variants: unknown variant 'nope'"):
        resolve_variants(["nope"])


@pytest.mark.parametrize("name", list(EXPECTED))
def test_variant_builds_intended_model(name):
    n_cam, n_pam, of_pos, ow, svd, triplet = EXPECTED[name]
    base = _base()
    cfg = variant_config(name, base)
    assert cfg.data == base.data and cfg.optim == base.optim and cfg.train == base.train
    assert cfg.model.backbone == "resnet18" and cfg.model.dropout > 0  # footnote: dropout on
    assert (cfg.loss.beta_tr > 0) == triplet
    torch.manual_seed(0)
    model = build_model_from_config(cfg.model, 4)
    assert sum(isinstance(m, CAM) for m in model.modules()) == n_cam
    assert sum(isinstance(m, PAM) for m in model.modules()) == n_pam
    assert sum(isinstance(m, EigenLayer) for m in model.modules()) == int(svd)
    total, layer4 = _resnet18_convs()
    # O.W. on: every trunk conv, res_conv_5 counted twice (two branches)
    assert len(model.ow_weights()) == (total + layer4 if ow else 0)
    model.train()
    out = model(torch.randn(2, 3, 64, 32))
    assert [name for name, _, _ in out.features.of_terms(cfg.model.of_positions)] == of_pos


@pytest.mark.parametrize("name", list(EXPECTED))
def test_yaml_rows_agree_with_the_variant_table(name):
    path = ROOT / "configs" / "ablation" / f"{name}.yaml"
    from_yaml = load_config(path)
    expected = variant_config(name, load_config(ROOT / "configs" / "paper.yaml"))
    assert config_to_dict(from_yaml.model) == config_to_dict(expected.model)
    assert config_to_dict(from_yaml.loss) == config_to_dict(expected.loss)


def _result(name, rank1, paper=True, seed=0, **metrics):
    v = VARIANTS[name]
    values = {"rank5": 0.9, "rank10": 0.95, "mAP": 0.5, "mINP": 0.25, "train_seconds": 12.5}
    values.update(metrics)
    return VariantResult(
        name=name,
        label=v.label,
        rank1=rank1,
        run_dir=f"/x/{name}/seed-{seed}",
        seed=seed,
        paper=v.paper if paper else None,
        **values,
    )


def _md_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row (header and body, not the alignment row)."""
    return [
        [c.strip() for c in ln.strip().strip("|").split("|")]
        for ln in text.splitlines()
        if ln.startswith("| ")
    ]


def _error_segments(fig) -> list[list[tuple[float, float]]]:
    """Per bar series of the chart, the (left, right) x of each error bar."""
    ax = fig.axes[0]
    out = []
    for c in ax.containers:
        if getattr(c, "errorbar", None) is not None:
            segs = c.errorbar.lines[2][0].get_segments()
            out.append([(float(s[0][0]), float(s[1][0])) for s in segs])
    return out


def test_tables_well_formed(tmp_path):
    results = [_result("baseline", 0.8125), _result("abdnet", 0.9)]
    paths = write_tables(results, tmp_path)
    md = paths["md"].read_text()
    assert "±" not in md and "Difference" not in md  # one seed: each run's own numbers
    rows = _md_rows(md)
    header = rows[0]
    assert header[:8] == [
        "variant",
        "name",
        "rank1",
        "rank5",
        "rank10",
        "mAP",
        "mINP",
        "train time (s)",
    ]
    body = rows[1:]
    assert [b[0] for b in body] == ["baseline (XE)", "ABD-Net"]
    assert body[0][2:8] == ["81.25", "90.00", "95.00", "50.00", "25.00", "12.5"]
    assert body[1][8:] == ["95.60", "88.28", "89.00", "78.59"]  # the paper's Table 1 row
    with paths["csv"].open() as fh:
        table = list(csv.reader(fh))
    assert table[0] == header and [r[:8] for r in table[1:]] == [b[:8] for b in body]
    with paths["runs"].open() as fh:
        runs = list(csv.DictReader(fh))
    assert [(r["name"], r["seed"], r["rank1"]) for r in runs] == [
        ("baseline", "0", "81.2500"),
        ("abdnet", "0", "90.0000"),
    ]
    assert _error_segments(_figure(summarize(results))) == []  # no error bars
    from PIL import Image

    with Image.open(paths["png"]) as im:
        assert min(im.size) >= 200


def _seed_results(rng: np.random.Generator, names_n: dict[str, int]) -> list[VariantResult]:
    out = []
    for name, n in names_n.items():
        shift = 0.3 if name == "abdnet" else 0.0  # one row clearly better than the reference
        for seed in range(n):
            m = {k: float(rng.uniform(0.0, 0.1) + shift) for k in ("rank1", *METRIC_NAMES[1:])}
            m[TIME_NAME] = float(rng.uniform(10, 100))
            out.append(_result(name, paper=True, seed=seed, **m))
    return out


def test_statistics_over_seeds_agree_with_numpy(tmp_path):
    rng = np.random.default_rng(3)
    # pam has 2 seeds, the others 3 (a table written while a run is still missing)
    results = _seed_results(rng, {"baseline": 3, "pam": 2, "abdnet": 3})
    shuffled = list(results)
    rng.shuffle(shuffled)  # the order runs finish in does not matter, but for the row order
    rows = summarize(shuffled)
    assert [r.name for r in rows] == list(dict.fromkeys(r.name for r in shuffled))
    by = {r.name: r for r in rows}
    assert reference_row(rows).name == "baseline"
    assert reference_row([by["pam"], by["abdnet"]]).name == "pam"  # no baseline: first row

    def values(name, metric):
        rs = sorted((r for r in results if r.name == name), key=lambda r: r.seed)
        return np.array([getattr(r, metric) for r in rs])

    for name, row in by.items():
        assert row.seeds == tuple(range(row.n))
        for metric in (*METRIC_NAMES, TIME_NAME):
            x, s = values(name, metric), row.stats(metric)
            assert s.n == len(x)
            assert s.mean == pytest.approx(np.mean(x), abs=1e-12)
            assert s.std == pytest.approx(np.std(x, ddof=1), abs=1e-12)
            assert s.sem == pytest.approx(np.std(x, ddof=1) / np.sqrt(len(x)), abs=1e-12)
            ref = values("baseline", metric)
            d = row.difference(metric, by["baseline"])
            se = np.sqrt(np.var(x, ddof=1) / len(x) + np.var(ref, ddof=1) / len(ref))
            assert d.delta == pytest.approx(np.mean(x) - np.mean(ref), abs=1e-12)
            assert d.se == pytest.approx(se, abs=1e-12)
            assert d.beyond_noise == bool(abs(np.mean(x) - np.mean(ref)) > NOISE_SE * se)
    assert by["abdnet"].difference("mAP", by["baseline"]).beyond_noise  # +30 points
    with pytest.raises(ValueError, match="unknown metric 'map'"):
        by["pam"].stats("map")
    one = summarize([_result("baseline", 0.5)])[0].stats("rank1")
    assert one.n == 1 and math.isnan(one.std)

    paths = write_tables(results, tmp_path)
    md = paths["md"].read_text()
    tables = md.split("## Difference to the reference row: baseline (XE), n = 3")
    assert len(tables) == 2
    main, diff = _md_rows(tables[0]), _md_rows(tables[1])
    assert main[0][:9] == ["variant", "name", "n", *METRIC_NAMES, "train time (s)"]
    assert [r[1] for r in main[1:]] == ["baseline", "pam", "abdnet"]  # first appearance
    for cells in main[1:]:
        name = cells[1]
        assert cells[2] == str(by[name].n)
        for j, metric in enumerate(METRIC_NAMES):
            x = 100 * values(name, metric)
            assert cells[3 + j] == f"{np.mean(x):.2f} ± {np.std(x, ddof=1):.2f}"
        t = values(name, TIME_NAME)
        assert cells[8] == f"{np.mean(t):.1f} ± {np.std(t, ddof=1):.1f}"
    assert diff[0] == ["variant", "name", "n", *(f"Δ {m}" for m in METRIC_NAMES)]
    assert [r[1] for r in diff[1:]] == ["pam", "abdnet"]  # the reference is not compared to itself
    for cells in diff[1:]:
        for j, metric in enumerate(METRIC_NAMES):
            x, ref = 100 * values(cells[1], metric), 100 * values("baseline", metric)
            delta = np.mean(x) - np.mean(ref)
            se = np.sqrt(np.var(x, ddof=1) / len(x) + np.var(ref, ddof=1) / len(ref))
            mark = " *" if abs(delta) > 2 * se else ""
            assert cells[3 + j] == f"{delta:+.2f} ± {se:.2f}{mark}"
    assert "sample standard deviation (n − 1 in the denominator)" in md
    assert "`*` marks |Δ| > 2 SE" in md  # the rule is explained under the table

    with paths["csv"].open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["name"] for r in table] == ["baseline", "pam", "abdnet"]
    for r in table:
        for metric in METRIC_NAMES:
            x = 100 * values(r["name"], metric)
            assert float(r[f"{metric}_mean"]) == pytest.approx(np.mean(x), abs=0.005)
            assert float(r[f"{metric}_std"]) == pytest.approx(np.std(x, ddof=1), abs=0.005)
            if r["name"] == "baseline":
                assert r[f"{metric}_delta"] == r[f"{metric}_delta_se"] == ""
            else:
                d = by[r["name"]].difference(metric, by["baseline"])
                assert float(r[f"{metric}_delta"]) == pytest.approx(100 * d.delta, abs=0.005)
                assert float(r[f"{metric}_delta_se"]) == pytest.approx(100 * d.se, abs=0.005)
                assert r[f"{metric}_beyond_2se"] == str(d.beyond_noise).lower()
        t = values(r["name"], TIME_NAME)
        assert float(r["train_seconds_mean"]) == pytest.approx(np.mean(t), abs=0.05)
        assert float(r["train_seconds_std"]) == pytest.approx(np.std(t, ddof=1), abs=0.05)
        assert r["paper Market mAP"] == f"{VARIANTS[r['name']].paper[1]:.2f}"

    # the chart: one error-bar series per plotted metric, each bar mean ± sample std
    rows_in_table_order = summarize(results)
    segments = _error_segments(_figure(rows_in_table_order))
    assert len(segments) == 3
    for series, metric in zip(segments, ("rank1", "mAP", "mINP")):
        for (left, right), row in zip(series, rows_in_table_order):
            x = 100 * values(row.name, metric)
            assert left == pytest.approx(np.mean(x) - np.std(x, ddof=1), abs=1e-9)
            assert right == pytest.approx(np.mean(x) + np.std(x, ddof=1), abs=1e-9)
    from PIL import Image

    with Image.open(paths["png"]) as im:
        assert min(im.size) >= 200


def _fake_training(calls):
    """A train_fn that writes the run's config.yaml as the trainer does and reports test
    metrics that depend on the variant and the seed."""

    def fake(cfg, run_dir, resume):
        calls.append((Path(run_dir).parent.name, cfg.train.seed, resume))
        atomic_write(RunLayout(run_dir).config, dump_config(cfg))
        x = 0.1 + 0.01 * cfg.train.seed + (0.2 if cfg.model.pam else 0.0)
        return SimpleNamespace(test=dict.fromkeys(METRIC_NAMES, x), seconds=1.0)

    return fake


def test_seeds_run_folders_order_and_refusals(tmp_path):
    base = load_config(ROOT / "configs" / "tiny.yaml", ["train.seed=7"])
    calls = []
    rows = run_ablation(
        base, tmp_path, ["baseline", "pam"], seeds=3, train_fn=_fake_training(calls)
    )
    # seed by seed, train.seed = base seed + i, each run in its own folder
    assert calls == [(n, s, False) for s in (7, 8, 9) for n in ("baseline", "pam")]
    for n in ("baseline", "pam"):
        for s in (7, 8, 9):
            run = run_folder(tmp_path, n, s)
            assert run == tmp_path / n / f"seed-{s}"
            assert load_config(RunLayout(run).config) == variant_config(n, base, seed=s)
            assert read_result(run).seed == s
    assert [(r.name, r.n, r.seeds) for r in rows] == [
        ("baseline", 3, (7, 8, 9)),
        ("pam", 3, (7, 8, 9)),
    ]
    assert rows[1].stats("mAP").mean == pytest.approx(0.38)
    assert "train.seed = 7, 8, ..." in (tmp_path / "table.md").read_text()

    # a fourth seed adds one run per variant; the first three are read
    run_ablation(base, tmp_path, ["baseline", "pam"], seeds=4, train_fn=_fake_training(calls))
    assert calls[6:] == [("baseline", 10, False), ("pam", 10, False)]

    # another base config: refused before anything trains, naming the folder and the key
    other = load_config(ROOT / "configs" / "tiny.yaml", ["train.seed=7", "optim.lr=0.01"])
    with pytest.raises(
        ValueError, match=r"baseline/seed-7: trained with another config .*optim\.lr"
    ):
        run_ablation(other, tmp_path, ["baseline", "pam"], seeds=4, train_fn=_fake_training(calls))
    assert len(calls) == 8
    with pytest.raises(ValueError, match="--seeds: expected a positive number"):
        run_ablation(base, tmp_path, ["baseline"], seeds=0, train_fn=_fake_training(calls))
    # a run directly in DIR/<variant>/ is not silently trained again
    (tmp_path / "old" / "pam").mkdir(parents=True)
    atomic_write(tmp_path / "old" / "pam" / "ablation_result.json", "{}")
    with pytest.raises(ValueError, match=r"old/pam: holds a run directly.*old/pam/seed-0/"):
        run_ablation(base, tmp_path / "old", ["pam"], train_fn=_fake_training(calls))
    # one ablation per folder at a time
    with FolderLock(tmp_path), pytest.raises(FileLockedError, match="ablation folder"):
        run_ablation(base, tmp_path, ["baseline"], seeds=4, train_fn=_fake_training(calls))


TINY_SETS = [
    "model.global_dim=16",
    "model.attentive_dim=16",
    "model.reduction_dim=16",
    "data.height=64",
    "data.width=32",
    "data.synthetic.ids=8",  # 4 training identities, 2 cameras, 4 images each
    "data.synthetic.cams=2",
    "data.synthetic.per_id=4",
    "data.batch_size=16",  # 4 identities x 4
    "data.synthetic.height=64",
    "data.synthetic.width=32",
    "train.frozen_epochs=1",
    "train.epochs=1",
]


def _tiny_base():
    return load_config(ROOT / "configs" / "tiny.yaml", TINY_SETS)


def _records(run_dir):
    return [json.loads(ln) for ln in RunLayout(run_dir).metrics.read_text().splitlines()]


@pytest.mark.slow
def test_resumes_per_variant_and_seed(tmp_path):
    from abdnet.engine import train

    calls: list[tuple[str, bool]] = []

    def counting_train(cfg, run_dir, resume):
        calls.append((Path(run_dir).name, resume))
        return train(cfg, run_dir, resume=resume)

    base = _tiny_base()
    # seed 0 finished by an earlier one-seed ablation (its table has no ±)
    first = run_ablation(base, tmp_path, ["baseline"], train_fn=counting_train)
    assert calls == [("seed-0", False)] and first[0].n == 1
    assert "±" not in (tmp_path / "table.md").read_text()
    stamp = (run_folder(tmp_path, "baseline", 0) / "ablation_result.json").stat().st_mtime_ns

    def cfg(seed):
        return variant_config("baseline", base, seed=seed)

    # seed 1 killed after its first epoch's checkpoint
    train(cfg(1), run_folder(tmp_path, "baseline", 1), max_epochs=1)
    # seed 2 killed after its last epoch, before the ablation wrote its result
    train(cfg(2), run_folder(tmp_path, "baseline", 2))
    finished_records = _records(run_folder(tmp_path, "baseline", 2))
    # seed 3 killed during its first epoch: the trainer had written only its config
    run_folder(tmp_path, "baseline", 3).mkdir()
    atomic_write(RunLayout(run_folder(tmp_path, "baseline", 3)).config, dump_config(cfg(3)))

    rows = run_ablation(base, tmp_path, ["baseline"], seeds=4, train_fn=counting_train)
    # only the interrupted runs continue, through the engine's resume
    assert calls[1:] == [("seed-1", True), ("seed-2", True), ("seed-3", True)]
    stamp_after = (run_folder(tmp_path, "baseline", 0) / "ablation_result.json").stat()
    assert stamp_after.st_mtime_ns == stamp
    (row,) = rows
    assert row.seeds == (0, 1, 2, 3)
    for run in row.runs:
        records = _records(run.run_dir)
        assert [r["epoch"] for r in records] == [1, 2]
        assert load_config(RunLayout(run.run_dir).config).train.seed == run.seed
        # the numbers are the trainer's own test evaluation of the last epoch; seed 2 trained
        # nothing now and its last checkpoint was evaluated, giving the same numbers
        for m in METRIC_NAMES:
            assert getattr(run, m) == pytest.approx(records[-1]["test"][m], abs=1e-6)
        assert run.train_seconds == pytest.approx(sum(r["seconds"] for r in records))
    assert _records(run_folder(tmp_path, "baseline", 2)) == finished_records
    md = (tmp_path / "table.md").read_text()
    assert re.search(r"\| baseline \(XE\) \| baseline \| 4 \| \d+\.\d\d ± \d+\.\d\d \|", md)

    again = run_ablation(base, tmp_path, ["baseline"], seeds=4, train_fn=counting_train)
    assert len(calls) == 4  # nothing retrained
    assert [r.to_json() for r in again[0].runs] == [r.to_json() for r in row.runs]
    for run in row.runs:  # finished: the weights stay, the training state went
        last = Path(run.run_dir) / "checkpoints" / "last"
        assert (last / "model.safetensors").is_file() and not (last / "state.pt").exists()


@pytest.mark.slow
def test_cli_two_seeds_writes_mean_and_std(tmp_path, capsys):
    from abdnet.cli.main import main

    out = tmp_path / "abl"
    argv = ["ablate", "--config", str(ROOT / "configs" / "tiny.yaml")]
    argv += [a for s in [*TINY_SETS, "train.frozen_epochs=0"] for a in ("--set", s)]  # 1 epoch
    argv += ["--seeds", "2", "--out", str(out)]
    # the baseline's two seeds in two worker processes, then ABD-Net's in this one
    assert main([*argv, "--variants", "baseline", "--jobs", "2"]) == 0
    assert "baseline (XE)                   2" in capsys.readouterr().out
    argv += ["--variants", "baseline", "abdnet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert re.search(r"ABD-Net\s+2\s+\d+\.\d\d ± +\d+\.\d\d", printed)

    runs = {
        (n, s): read_result(run_folder(out, n, s)) for n in ("baseline", "abdnet") for s in (0, 1)
    }
    for (_, s), r in runs.items():
        assert r.seed == s
        assert load_config(RunLayout(r.run_dir).config).train.seed == s
    # different seeds train differently
    losses = [_records(run_folder(out, "abdnet", s))[-1]["loss"] for s in (0, 1)]
    assert losses[0] != losses[1]
    rows = _md_rows((out / "table.md").read_text())
    body = {r[1]: r for r in rows[1:3]}
    for n in ("baseline", "abdnet"):
        assert body[n][2] == "2"
        for j, m in enumerate(METRIC_NAMES):
            x = np.array([100 * getattr(runs[(n, s)], m) for s in (0, 1)])
            assert body[n][3 + j] == f"{np.mean(x):.2f} ± {np.std(x, ddof=1):.2f}"
    with (out / "table.csv").open() as fh:
        header = next(csv.reader(fh))
    assert {"rank1_mean", "rank1_std", "mINP_mean", "mINP_std", "mAP_delta_se"} <= set(header)
    assert (out / "table.png").stat().st_size > 0

    # a rerun reads the four finished runs
    stamps = {
        k: Path(r.run_dir, "ablation_result.json").stat().st_mtime_ns for k, r in runs.items()
    }
    assert main(argv) == 0
    assert {
        k: Path(r.run_dir, "ablation_result.json").stat().st_mtime_ns for k, r in runs.items()
    } == stamps
    assert capsys.readouterr().out == printed


def test_cli_lists_variants_and_names_a_bad_one(capsys):
    from abdnet.cli.main import main

    cfg = str(ROOT / "configs" / "tiny.yaml")
    assert main(["ablate", "--config", cfg, "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == [v.name for v in TABLE1_VARIANTS]
    assert main(["ablate", "--config", cfg, "--out", "unused", "--variants", "pam", "bogus"]) == 2
    assert "--variants: unknown variant 'bogus'" in capsys.readouterr().err
    assert main(["ablate", "--config", cfg, "--out", "unused", "--seeds", "0"]) == 2
    assert "--seeds: expected a positive number" in capsys.readouterr().err
    assert main(["ablate", "--config", cfg]) == 2
    assert "--out DIR is required" in capsys.readouterr().err
