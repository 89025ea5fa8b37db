"""Table 1 of the paper: the ablation variants as configs, trained and tabulated.

Each row of Table 1 is a ``Variant``: a name, the paper's label, and the model/loss values
it sets over a base config (whose data, optimizer, schedule and remaining model values --
backbone, sizes, dropout -- are kept). This module is the one source of those values; the
YAML files under ``configs/ablation/`` must agree with it (``tests/test_ablation.py``
checks).

Decisions where the paper leaves room:

* baseline (XE): the ``baseline`` preset -- ResNet with two branches built from duplicated
  res_conv_5 (Table 1 footnote), cross-entropy only (``beta_tr = 0``), no attention, no
  O.F./O.W.; dropout and the base config's augmentation stay on.
* "+ CAM" puts CAM in both places ABD-Net uses it (Table 1 footnote (1)): the shallow CAM
  after res_conv_2 and the CAM of the attentive branch. "+ PAM" adds only the attentive
  branch's PAM, "+ PAM + CAM" all three modules.
* "+ O.F." regularizes the feature maps that exist in the no-attention network: the
  res_conv_2 output ("shallow") and Ta ("reduction"); ABD-Net adds the CAM and PAM outputs.
  "+ O.W." regularizes all conv weights (``ow_scope = "all"``, the paper's choice) unless
  the base config asks for ``"stem"``.
* ABD-Net (full eq. 6) keeps the base config's ``beta_tr`` (0.1 when the base has 0); all
  other rows are "(XE)" and set ``beta_tr = 0``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abdnet.config import Config, LossConfig, config_from_dict, config_to_dict, dump_config
from abdnet.data import build_dataset
from abdnet.engine import evaluate_model, resolve_device, train
from abdnet.evaluation import RankResult
from abdnet.files import atomic_write
from abdnet.layout import RunLayout
from abdnet.models import load_model

__all__ = [
    "Variant",
    "VariantResult",
    "VARIANTS",
    "TABLE1_VARIANTS",
    "EXTRA_VARIANTS",
    "variant_overrides",
    "variant_config",
    "resolve_variants",
    "run_ablation",
    "read_result",
    "write_tables",
    "RESULT_FILE",
]

log = logging.getLogger(__name__)

RESULT_FILE = "ablation_result.json"
METRIC_NAMES = (
    "rank1",
    "rank5",
    "rank10",
    "mAP",
    "mINP",
)  # RankResult field names  # in DIR/<variant>/; its presence marks a finished variant


@dataclass(frozen=True)
class Variant:
    """One ablation row. ``model``/``loss`` hold the values the row sets; ``"of"``/``"ow"``
    say whether the orthogonality terms are on (their positions/scope are derived from the
    attention modules present and the base config)."""

    name: str  # run-folder name, e.g. "pam_cam"
    label: str  # the paper's row label, e.g. "baseline (XE) + PAM + CAM"
    shallow_cam: bool = False
    cam: bool = False
    pam: bool = False
    of: bool = False
    ow: bool = False
    svd_layer: bool = False
    triplet: bool = False  # False: "(XE)", beta_tr = 0
    # Table 1 numbers of the paper: (Market rank1, Market mAP, Duke rank1, Duke mAP) in %.
    paper: tuple[float, float, float, float] | None = None
    note: str = ""


TABLE1_VARIANTS: tuple[Variant, ...] = (
    Variant("baseline", "baseline (XE)", paper=(91.50, 77.40, 82.80, 66.40)),
    Variant("pam", "baseline (XE) + PAM", pam=True, paper=(92.10, 78.10, 83.80, 67.00)),
    Variant(
        "cam",
        "baseline (XE) + CAM",
        shallow_cam=True,
        cam=True,
        paper=(91.80, 78.00, 84.30, 67.60),
        note="CAM in both places: shallow (after res_conv_2) and attentive branch",
    ),
    Variant(
        "pam_cam",
        "baseline (XE) + PAM + CAM",
        shallow_cam=True,
        cam=True,
        pam=True,
        paper=(92.70, 78.50, 84.40, 67.90),
    ),
    Variant("of", "baseline (XE) + O.F.", of=True, paper=(92.90, 82.10, 84.90, 71.30)),
    Variant("ow", "baseline (XE) + O.W.", ow=True, paper=(92.50, 78.50, 83.70, 67.40)),
    Variant(
        "of_ow", "baseline (XE) + O.F. + O.W.", of=True, ow=True, paper=(93.20, 82.30, 85.30, 72.20)
    ),
    Variant("svd", "baseline + SVD layer", svd_layer=True, paper=(90.80, 76.90, 79.40, 62.50)),
    Variant(
        "abdnet_xe",
        "ABD-Net (XE)",
        shallow_cam=True,
        cam=True,
        pam=True,
        of=True,
        ow=True,
        paper=(94.90, 85.90, 87.30, 76.00),
    ),
    Variant(
        "abdnet",
        "ABD-Net",
        shallow_cam=True,
        cam=True,
        pam=True,
        of=True,
        ow=True,
        triplet=True,
        paper=(95.60, 88.28, 89.00, 78.59),
    ),
)

EXTRA_VARIANTS: tuple[Variant, ...] = (
    Variant(
        "abdnet_no_shallow_cam",
        "ABD-Net w/o shallow CAM",
        cam=True,
        pam=True,
        of=True,
        ow=True,
        triplet=True,
        note="extra: ABD-Net without the CAM after res_conv_2",
    ),
    Variant(
        "abdnet_no_of",
        "ABD-Net w/o O.F.",
        shallow_cam=True,
        cam=True,
        pam=True,
        ow=True,
        triplet=True,
        note="extra: attention + O.W. + triplet, no feature orthogonality",
    ),
)

VARIANTS: dict[str, Variant] = {v.name: v for v in TABLE1_VARIANTS + EXTRA_VARIANTS}


def variant_overrides(variant: Variant, base: Config) -> dict[str, dict[str, Any]]:
    """The ``model``/``loss`` values ``variant`` sets over ``base`` (a nested dict, YAML-ready)."""
    of_positions: list[str] = []
    if variant.of:
        # Feature maps that exist in the network: res_conv_2 output (shallow-CAM output when
        # there is one), Ta, and the attention outputs.
        of_positions = ["shallow", "reduction"]
        if variant.cam:
            of_positions.append("cam")
        if variant.pam:
            of_positions.append("pam")
    ow_scope = "none"
    if variant.ow:
        ow_scope = base.model.ow_scope if base.model.ow_scope in ("all", "stem") else "all"
    beta_tr = 0.0
    if variant.triplet:
        beta_tr = base.loss.beta_tr if base.loss.beta_tr > 0 else LossConfig().beta_tr
    attention = variant.shallow_cam or variant.cam or variant.pam
    preset = "paper" if attention or variant.of or variant.ow else "baseline"
    return {
        "model": {
            "preset": preset,
            "arch": "abd",
            "shallow_cam": variant.shallow_cam,
            "cam": variant.cam,
            "pam": variant.pam,
            "of_positions": of_positions,
            "ow_scope": ow_scope,
            "svd_layer": variant.svd_layer,
        },
        "loss": {"beta_tr": beta_tr},
    }


def variant_config(variant: Variant | str, base: Config) -> Config:
    """``base`` with ``variant``'s model/loss values; data, optim, train, eval untouched."""
    if isinstance(variant, str):
        variant = resolve_variants([variant])[0]
    data = config_to_dict(base)
    for section, values in variant_overrides(variant, base).items():
        data[section].update(values)
    return config_from_dict(data)


def resolve_variants(names: Sequence[str] | None) -> list[Variant]:
    """Variants by name (``None``/empty: the ten Table 1 rows; ``all``: plus the extras)."""
    if not names:
        return list(TABLE1_VARIANTS)
    out: list[Variant] = []
    for n in names:
        if n == "all":
            out.extend(v for v in VARIANTS.values() if v not in out)
            continue
        if n not in VARIANTS:
            raise ValueError(
                f"--variants: unknown variant {n!r}; expected 'all' or some of {', '.join(VARIANTS)}"
            )
        if VARIANTS[n] not in out:
            out.append(VARIANTS[n])
    return out


# ---------------------------------------------------------------------------------------
# running


@dataclass
class VariantResult:
    """Test-set numbers of one trained variant (fractions in [0, 1]; time in seconds)."""

    name: str
    label: str
    rank1: float
    rank5: float
    rank10: float
    mAP: float
    mINP: float
    train_seconds: float
    run_dir: str
    paper: tuple[float, float, float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["paper"] = list(self.paper) if self.paper else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VariantResult:
        d = dict(d)
        if d.get("paper") is not None:
            d["paper"] = tuple(d["paper"])
        return cls(**d)


def read_result(run_dir: str | Path) -> VariantResult | None:
    """The finished variant's result in ``run_dir``, or None when it has not finished."""
    p = Path(run_dir) / RESULT_FILE
    if not p.is_file():
        return None
    try:
        return VariantResult.from_json(json.loads(p.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(
            f"{p}: not a valid ablation result ({exc}); delete it to retrain the variant"
        ) from exc


def _metrics_from(obj: RankResult | dict[str, Any]) -> dict[str, float]:
    """rank-1/5/10, mAP, mINP from a RankResult or a metrics dict with the same names (the
    trainer's test record)."""
    d = obj.to_dict() if isinstance(obj, RankResult) else obj
    try:
        return {k: float(d[k]) for k in METRIC_NAMES}
    except KeyError as exc:
        raise ValueError(f"test metrics lack {exc}") from None


def _training_seconds(run_dir: Path) -> float | None:
    """Sum of the per-epoch training times in the run's ``metrics.jsonl`` (all sessions of a
    resumed run; a re-run epoch counts once), or None without that file."""
    path = RunLayout(run_dir).metrics
    if not path.is_file():
        return None
    per_epoch: dict[Any, float] = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interruption
        if isinstance(rec, dict) and "seconds" in rec:
            per_epoch[rec.get("epoch", len(per_epoch))] = float(rec["seconds"])
    return sum(per_epoch.values()) if per_epoch else None


def _default_train(cfg: Config, out_dir: Path, resume: bool) -> Any:
    return train(cfg, out_dir, resume=resume)


def _default_evaluate(cfg: Config, run_dir: Path) -> dict[str, float]:
    """Test-set numbers of the run's kept model (best if there is one, else last)."""
    device = resolve_device(cfg.train.device)
    model = load_model(run_dir).model.to(device)
    return _metrics_from(evaluate_model(model, build_dataset(cfg.data), cfg.eval, cfg.data, device))


def _has_checkpoint(run_dir: Path) -> bool:
    return RunLayout(run_dir).checkpoint("last").exists()


def _run_one(
    variant: Variant,
    base: Config,
    out_dir: Path,
    train_fn: Callable[[Config, Path, bool], Any],
    evaluate_fn: Callable[[Config, Path], dict[str, float]],
) -> VariantResult:
    run_dir = out_dir / variant.name
    done = read_result(run_dir)
    cfg = variant_config(variant, base)
    if done is not None:
        log.info("%s: finished earlier (%s), not retrained", variant.name, run_dir / RESULT_FILE)
        saved = run_dir / "ablation_variant.yaml"
        if saved.is_file() and saved.read_text() != dump_config(cfg):
            log.warning(
                "%s was trained with a different config than %s asks for now; delete the folder "
                "to retrain it",
                run_dir,
                variant.name,
            )
        return done
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "ablation_variant.yaml").write_text(dump_config(cfg))
    resume = _has_checkpoint(run_dir)
    log.info("%s (%s): %s", variant.name, variant.label, "resuming" if resume else "training")
    t0 = time.perf_counter()
    result = train_fn(cfg, run_dir, resume)
    seconds = _training_seconds(run_dir)
    if seconds is None:
        seconds = float(getattr(result, "seconds", 0.0) or 0.0) or (time.perf_counter() - t0)
    # The trainer evaluates its final model on the test split; evaluate only when it did not.
    test = getattr(result, "test", None)
    metrics = _metrics_from(test) if test else evaluate_fn(cfg, run_dir)
    vr = VariantResult(
        name=variant.name,
        label=variant.label,
        train_seconds=seconds,
        run_dir=str(run_dir),
        paper=variant.paper,
        **{k: float(metrics[k]) for k in METRIC_NAMES},
    )
    atomic_write(run_dir / RESULT_FILE, json.dumps(vr.to_json(), indent=2))
    return vr


def _worker(args: tuple) -> dict[str, Any]:
    variant_name, base_dict, out_dir, threads = args
    import torch

    torch.set_num_threads(max(1, threads))
    vr = _run_one(
        VARIANTS[variant_name],
        config_from_dict(base_dict),
        Path(out_dir),
        _default_train,
        _default_evaluate,
    )
    return vr.to_json()


def run_ablation(
    base: Config,
    out_dir: str | Path,
    variants: Sequence[str] | None = None,
    *,
    jobs: int = 1,
    train_fn: Callable[[Config, Path, bool], Any] | None = None,
    evaluate_fn: Callable[[Config, Path], dict[str, float]] | None = None,
) -> list[VariantResult]:
    """Train and evaluate each variant in ``out_dir/<name>/``, then write the tables.

    Finished variants (their ``ablation_result.json`` exists) are read, not retrained; an
    unfinished one with a checkpoint resumes through the engine's resume. ``jobs > 1`` runs
    variants in parallel processes (default train/evaluate only). ``train_fn(cfg, dir,
    resume)`` and ``evaluate_fn(cfg, dir) -> metrics`` default to ``abdnet.engine``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = resolve_variants(variants)
    if base.model.dropout == 0.0 or (base.data.flip_p == 0.0 and base.data.erasing_p == 0.0):
        log.warning(
            "Table 1's footnote trains every row with dropout and data augmentation; this config "
            "has model.dropout=%s, data.flip_p=%s, data.erasing_p=%s",
            base.model.dropout,
            base.data.flip_p,
            base.data.erasing_p,
        )
    (out / "base_config.yaml").write_text(dump_config(base))
    results: list[VariantResult] = []
    if jobs > 1 and train_fn is None and evaluate_fn is None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // jobs)
        tasks = [(v.name, config_to_dict(base), str(out), threads) for v in chosen]
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            results = [VariantResult.from_json(d) for d in pool.map(_worker, tasks)]
    else:
        if jobs > 1:
            log.warning(
                "--jobs %d ignored: custom train/evaluate functions run in this process", jobs
            )
        tf = train_fn or _default_train
        ef = evaluate_fn or _default_evaluate
        for v in chosen:
            results.append(_run_one(v, base, out, tf, ef))
            write_tables(results, out)  # a partial table survives an interruption
    write_tables(results, out)
    return results


# ---------------------------------------------------------------------------------------
# tables


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100.0 * x:.2f}"


def _paper_cells(p: tuple[float, float, float, float] | None) -> list[str]:
    return [f"{x:.2f}" for x in p] if p else ["-", "-", "-", "-"]


TABLE_HEADER = [
    "variant",
    "name",
    "rank1",
    "rank5",
    "rank10",
    "mAP",
    "mINP",
    "train time (s)",
    "paper Market rank1",
    "paper Market mAP",
    "paper Duke rank1",
    "paper Duke mAP",
]


def write_tables(results: Sequence[VariantResult], out_dir: str | Path) -> dict[str, Path]:
    """``table.md``, ``table.csv`` (metrics in %) and the bar chart ``table.png``."""
    out = Path(out_dir)
    rows = [
        [
            r.label,
            r.name,
            _pct(r.rank1),
            _pct(r.rank5),
            _pct(r.rank10),
            _pct(r.mAP),
            _pct(r.mINP),
            f"{r.train_seconds:.1f}",
            *_paper_cells(r.paper),
        ]
        for r in results
    ]
    md = [
        "# Table 1 ablation",
        "",
        "Our numbers: test set of the config's data, in %. The paper's Table 1 numbers "
        "(Market-1501 / DukeMTMC-reID, ResNet-50, full schedule) are given for reference.",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(TABLE_HEADER) - 2)) + "|",
    ]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    paths = {"md": out / "table.md", "csv": out / "table.csv", "png": out / "table.png"}
    paths["md"].write_text("\n".join(md) + "\n")
    with paths["csv"].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(TABLE_HEADER)
        w.writerows(rows)
    _bar_chart(results, paths["png"])
    return paths


def _bar_chart(results: Sequence[VariantResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [r.label for r in results]
    y = np.arange(len(results))
    h = 0.26
    fig, ax = plt.subplots(figsize=(10, 2.4 + 0.6 * len(results)))
    for i, (key, name, colour) in enumerate(
        (
            ("rank1", "rank-1", "tab:blue"),
            ("mAP", "mAP", "tab:orange"),
            ("mINP", "mINP", "tab:green"),
        )
    ):
        vals = [100.0 * getattr(r, key) for r in results]
        ax.barh(y + (i - 1) * h, vals, height=h, color=colour, label=f"ours {name}")
    pm = [r.paper[0] if r.paper else np.nan for r in results]
    pa = [r.paper[1] if r.paper else np.nan for r in results]
    ax.scatter(pm, y - h, marker="|", s=200, color="navy", label="paper Market rank1", zorder=3)
    ax.scatter(pa, y, marker="|", s=200, color="saddlebrown", label="paper Market mAP", zorder=3)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("%")
    ax.set_title("Table 1 ablation: test-set rank1 / mAP / mINP")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=5, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")  # keeps the legend below the axes
    plt.close(fig)
