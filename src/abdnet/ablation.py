"""Table 1 of the paper: the ablation variants as configs, trained over seeds and tabulated.

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

Seeds: on small data one run per row is noise. Each variant is trained ``seeds`` times with
``train.seed`` = the base config's seed + 0, 1, ..., each in its own run folder
``DIR/<variant>/seed-<S>/`` (resumable on its own); the tables give, per metric, the mean
and the sample standard deviation (n - 1 in the denominator) over the seeds, and each row's
difference to the reference row (the baseline) with its standard error.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from abdnet.config import (
    Config,
    LossConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
)
from abdnet.data import build_dataset
from abdnet.engine import evaluate_model, resolve_device, train
from abdnet.evaluation import RankResult
from abdnet.files import FolderLock, atomic_file, atomic_write
from abdnet.layout import RunLayout
from abdnet.models import load_model

__all__ = [
    "Variant",
    "VariantResult",
    "MetricSummary",
    "Difference",
    "VariantSummary",
    "VARIANTS",
    "TABLE1_VARIANTS",
    "EXTRA_VARIANTS",
    "METRIC_NAMES",
    "TIME_NAME",
    "NOISE_SE",
    "REFERENCE",
    "RESULT_FILE",
    "variant_overrides",
    "variant_config",
    "resolve_variants",
    "run_seeds",
    "run_folder",
    "run_ablation",
    "read_result",
    "summarize",
    "reference_row",
    "write_tables",
]

log = logging.getLogger(__name__)

RESULT_FILE = "ablation_result.json"  # in each run folder; its presence marks a finished run
BASE_CONFIG_FILE = "base_config.yaml"  # DIR/base_config.yaml: the config the variants start from
RUNS_FILE = "runs.csv"  # DIR/runs.csv: one row per (variant, seed)
METRIC_NAMES = ("rank1", "rank5", "rank10", "mAP", "mINP")  # abdnet.evaluation.RankResult fields
TIME_NAME = "train_seconds"  # VariantResult field: training time summed over the epochs
NOISE_SE = 2.0  # a difference to the reference row is marked when |delta| > NOISE_SE * SE
REFERENCE = "baseline"  # the row differences are taken to (the first row when it is absent)


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


def variant_config(variant: Variant | str, base: Config, *, seed: int | None = None) -> Config:
    """``base`` with ``variant``'s model/loss values (and ``train.seed = seed`` when given);
    data, optim, eval and the rest of train untouched."""
    if isinstance(variant, str):
        variant = resolve_variants([variant])[0]
    data = config_to_dict(base)
    for section, values in variant_overrides(variant, base).items():
        data[section].update(values)
    if seed is not None:
        data["train"]["seed"] = seed
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


def run_seeds(base: Config, seeds: int) -> list[int]:
    """The ``train.seed`` of each run of a variant: the base config's seed + 0, 1, ..., seeds - 1."""
    if seeds < 1:
        raise ValueError(f"--seeds: expected a positive number of runs per variant, got {seeds}")
    return [base.train.seed + i for i in range(seeds)]


def run_folder(out_dir: str | Path, name: str, seed: int) -> Path:
    """The run folder of one (variant, seed): ``out_dir/<name>/seed-<seed>/``."""
    return Path(out_dir) / name / f"seed-{seed}"


@dataclass
class VariantResult:
    """Test-set numbers of one trained (variant, seed) (fractions in [0, 1]; time in seconds)."""

    name: str
    label: str
    rank1: float
    rank5: float
    rank10: float
    mAP: float
    mINP: float
    train_seconds: float
    run_dir: str
    seed: int = 0  # the run's train.seed
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
    """The finished run's result in ``run_dir``, or None when it has not finished."""
    p = Path(run_dir) / RESULT_FILE
    if not p.is_file():
        return None
    try:
        return VariantResult.from_json(json.loads(p.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(
            f"{p}: not a valid ablation result ({exc}); delete it to evaluate the run again"
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
    """Test-set numbers of the run's last checkpoint: the model the trainer tests after its
    final epoch (needed when the epochs finished in an earlier, interrupted session)."""
    device = resolve_device(cfg.train.device)
    model = load_model(RunLayout(run_dir).checkpoint("last")).model.to(device)
    return _metrics_from(evaluate_model(model, build_dataset(cfg.data), cfg.eval, cfg.data, device))


def _flat_keys(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_run_config(run_dir: Path, cfg: Config) -> None:
    """Refuse a run folder that was trained with another config than ``cfg``: its numbers
    would answer another question (e.g. the base config changed between two sessions)."""
    saved_path = RunLayout(run_dir).config
    if not saved_path.is_file():
        return
    saved = load_config(saved_path)
    if saved == cfg:
        return
    a, b = _flat_keys(config_to_dict(saved)), _flat_keys(config_to_dict(cfg))
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    raise ValueError(
        f"{run_dir}: trained with another config than this ablation asks for (differs in "
        f"{', '.join(keys)}); use another --out, or delete {run_dir} to train it again"
    )


def _refuse_single_folder_run(folder: Path) -> None:
    """A run directly in ``DIR/<variant>/`` (one run per variant, no seed folder) would be
    ignored and trained again; say where it belongs instead."""
    layout = RunLayout(folder)
    if not ((folder / RESULT_FILE).is_file() or layout.config.is_file()):
        return
    seed = load_config(layout.config).train.seed if layout.config.is_file() else 0
    raise ValueError(
        f"{folder}: holds a run directly, not in seed folders; move its files to "
        f"{run_folder(folder.parent, folder.name, seed)}/ (its train.seed) to keep it, or use "
        "another --out"
    )


def _run_one(
    variant: Variant,
    seed: int,
    cfg: Config,
    run_dir: Path,
    train_fn: Callable[[Config, Path, bool], Any],
    evaluate_fn: Callable[[Config, Path], dict[str, float]],
) -> VariantResult:
    """Train (or continue) and evaluate one (variant, seed); its result file marks it finished."""
    # The trainer writes config.yaml before anything else: from then on the folder holds the
    # run, continued from its last checkpoint (from the first epoch when none was written).
    resume = RunLayout(run_dir).config.is_file()
    log.info(
        "%s (%s), seed %d: %s %s",
        variant.name,
        variant.label,
        seed,
        "resuming" if resume else "training",
        run_dir,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = train_fn(cfg, run_dir, resume)
    seconds = _training_seconds(run_dir)
    if seconds is None:
        seconds = float(getattr(result, "seconds", 0.0) or 0.0) or (time.perf_counter() - t0)
    # The trainer tests its final model after the last epoch; a run whose epochs all finished
    # in an earlier session trains none now and is evaluated here.
    test = getattr(result, "test", None)
    metrics = _metrics_from(test) if test else evaluate_fn(cfg, run_dir)
    vr = VariantResult(
        name=variant.name,
        label=variant.label,
        train_seconds=seconds,
        run_dir=str(run_dir),
        seed=seed,
        paper=variant.paper,
        **{k: float(metrics[k]) for k in METRIC_NAMES},
    )
    atomic_write(run_dir / RESULT_FILE, json.dumps(vr.to_json(), indent=2))
    return vr


def _worker(args: tuple[str, int, dict[str, Any], str, int]) -> dict[str, Any]:
    """One (variant, seed) in a worker process of ``jobs > 1``."""
    name, seed, base_dict, out_dir, threads = args
    torch.set_num_threads(threads)
    variant = VARIANTS[name]
    cfg = variant_config(variant, config_from_dict(base_dict), seed=seed)
    run_dir = run_folder(out_dir, name, seed)
    return _run_one(variant, seed, cfg, run_dir, _default_train, _default_evaluate).to_json()


def run_ablation(
    base: Config,
    out_dir: str | Path,
    variants: Sequence[str] | None = None,
    *,
    seeds: int = 1,
    jobs: int = 1,
    train_fn: Callable[[Config, Path, bool], Any] | None = None,
    evaluate_fn: Callable[[Config, Path], dict[str, float]] | None = None,
) -> list[VariantSummary]:
    """Train and evaluate each variant ``seeds`` times, then write the tables.

    Run ``i`` of a variant trains with ``train.seed`` = ``base.train.seed + i`` in
    ``out_dir/<variant>/seed-<S>/`` (:func:`run_folder`). Runs go seed by seed (every variant's
    first seed, then every variant's second, ...), so an interrupted ablation already has a
    complete table of its first seeds; the tables are rewritten after each run.

    Resuming is per (variant, seed): a finished run (its ``ablation_result.json`` exists) is
    read, not retrained; a started one continues through the engine's resume; a run folder
    trained with another config is an error, raised before anything trains. ``out_dir`` is
    locked against a second ablation. ``jobs > 1`` trains runs in parallel processes
    (default train/evaluate only). ``train_fn(cfg, dir, resume)`` and ``evaluate_fn(cfg, dir)
    -> metrics`` default to ``abdnet.engine``. Returns one summary per variant.
    """
    out = Path(out_dir)
    chosen = resolve_variants(variants)
    seed_list = run_seeds(base, seeds)
    if jobs < 1:
        raise ValueError(f"--jobs: expected a positive number, got {jobs}")
    if base.model.dropout == 0.0 or (base.data.flip_p == 0.0 and base.data.erasing_p == 0.0):
        log.warning(
            "Table 1's footnote trains every row with dropout and data augmentation; this config "
            "has model.dropout=%s, data.flip_p=%s, data.erasing_p=%s",
            base.model.dropout,
            base.data.flip_p,
            base.data.erasing_p,
        )
    out.mkdir(parents=True, exist_ok=True)
    with FolderLock(out.resolve(), what=f"ablation folder {out}"):
        done: dict[tuple[str, int], VariantResult] = {}
        todo: list[tuple[Variant, int, Config]] = []
        for v in chosen:
            _refuse_single_folder_run(out / v.name)
        for seed in seed_list:
            for v in chosen:
                cfg = variant_config(v, base, seed=seed)
                run_dir = run_folder(out, v.name, seed)
                _check_run_config(run_dir, cfg)
                finished = read_result(run_dir)
                if finished is None:
                    todo.append((v, seed, cfg))
                else:
                    log.info("%s seed %d: finished earlier (%s)", v.name, seed, run_dir)
                    done[(v.name, seed)] = finished
        atomic_write(out / BASE_CONFIG_FILE, dump_config(base))

        def collected() -> list[VariantResult]:
            return [done[(v.name, s)] for v in chosen for s in seed_list if (v.name, s) in done]

        if todo and jobs > 1 and train_fn is None and evaluate_fn is None:
            _run_parallel(todo, base, out, jobs, done, collected)
        else:
            if jobs > 1:
                log.warning(
                    "--jobs %d ignored: custom train/evaluate functions run in this process", jobs
                )
            tf = train_fn or _default_train
            ef = evaluate_fn or _default_evaluate
            for v, seed, cfg in todo:
                done[(v.name, seed)] = _run_one(v, seed, cfg, run_folder(out, v.name, seed), tf, ef)
                write_tables(collected(), out)  # a partial table survives an interruption
        results = collected()
        write_tables(results, out)
    return summarize(results)


def _run_parallel(
    todo: Sequence[tuple[Variant, int, Config]],
    base: Config,
    out: Path,
    jobs: int,
    done: dict[tuple[str, int], VariantResult],
    collected: Callable[[], list[VariantResult]],
) -> None:
    """The runs of ``todo`` in ``jobs`` worker processes; the tables are rewritten as each
    finishes, and a failed run does not stop the others (its error is raised at the end)."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    base_dict = config_to_dict(base)
    errors: list[BaseException] = []
    # spawn: a fresh interpreter per worker (forking a process that holds torch threads is unsafe)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {
            pool.submit(_worker, (v.name, seed, base_dict, str(out), threads)): (v, seed)
            for v, seed, _ in todo
        }
        for future in as_completed(futures):
            v, seed = futures[future]
            try:
                done[(v.name, seed)] = VariantResult.from_json(future.result())
            except Exception as exc:  # noqa: BLE001 - reported below, the other runs go on
                log.error("%s failed: %s", run_folder(out, v.name, seed), exc)
                errors.append(exc)
                continue
            write_tables(collected(), out)
    if errors:
        write_tables(collected(), out)
        raise errors[0]


# ---------------------------------------------------------------------------------------
# statistics over seeds


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one variant over its seeds."""

    values: tuple[float, ...]  # one per seed, in seed order

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1 in the denominator); NaN with one seed."""
        return statistics.stdev(self.values) if self.n > 1 else math.nan

    @property
    def sem(self) -> float:
        """Standard error of the mean, ``std / sqrt(n)``; NaN with one seed."""
        return self.std / math.sqrt(self.n)


@dataclass(frozen=True)
class Difference:
    """A row's mean minus the reference row's mean, with the standard error of the difference
    (``sqrt(s^2/n + s_ref^2/n_ref)``: the two rows' seeds taken as independent samples)."""

    delta: float
    se: float  # NaN when either row has a single seed

    @property
    def beyond_noise(self) -> bool:
        """``|delta| > NOISE_SE * se``: larger than the seed-to-seed noise measured. A screen,
        not a significance test (see the footer of ``table.md``)."""
        return not math.isnan(self.se) and abs(self.delta) > NOISE_SE * self.se

    @classmethod
    def between(cls, row: MetricSummary, reference: MetricSummary) -> Difference:
        return cls(row.mean - reference.mean, math.hypot(row.sem, reference.sem))


@dataclass(frozen=True)
class VariantSummary:
    """All finished seeds of one variant."""

    name: str
    label: str
    paper: tuple[float, float, float, float] | None
    runs: tuple[VariantResult, ...]  # in seed order

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs)

    def stats(self, metric: str) -> MetricSummary:
        """``metric``: one of ``METRIC_NAMES`` (fractions) or ``TIME_NAME`` (seconds)."""
        if metric not in (*METRIC_NAMES, TIME_NAME):
            raise ValueError(
                f"unknown metric {metric!r}; expected one of {', '.join((*METRIC_NAMES, TIME_NAME))}"
            )
        return MetricSummary(tuple(float(getattr(r, metric)) for r in self.runs))

    def difference(self, metric: str, reference: VariantSummary) -> Difference:
        return Difference.between(self.stats(metric), reference.stats(metric))


def summarize(results: Sequence[VariantResult]) -> list[VariantSummary]:
    """Per-seed results grouped by variant (variants in order of appearance, runs by seed)."""
    groups: dict[str, list[VariantResult]] = {}
    for r in results:
        groups.setdefault(r.name, []).append(r)
    return [
        VariantSummary(
            name=rs[0].name,
            label=rs[0].label,
            paper=rs[0].paper,
            runs=tuple(sorted(rs, key=lambda r: r.seed)),
        )
        for rs in groups.values()
    ]


def reference_row(rows: Sequence[VariantSummary]) -> VariantSummary:
    """The row the differences are taken to: ``REFERENCE`` (the baseline) when present, else
    the first row."""
    if not rows:
        raise ValueError("no finished runs to compare")
    return next((r for r in rows if r.name == REFERENCE), rows[0])


# ---------------------------------------------------------------------------------------
# tables


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100.0 * x:.2f}"


def _paper_cells(p: tuple[float, float, float, float] | None) -> list[str]:
    return [f"{x:.2f}" for x in p] if p else ["-", "-", "-", "-"]


PAPER_HEADER = ["paper Market rank1", "paper Market mAP", "paper Duke rank1", "paper Duke mAP"]
TABLE_HEADER = [
    "variant",
    "name",
    *METRIC_NAMES,
    "train time (s)",
    *PAPER_HEADER,
]
_PAPER_NOTE = (
    "The paper's Table 1 numbers (Market-1501 / DukeMTMC-reID, ResNet-50, full schedule) are "
    "given for reference."
)


def write_tables(results: Sequence[VariantResult], out_dir: str | Path) -> dict[str, Path]:
    """``table.md``, ``table.csv`` (metrics in %), the chart ``table.png`` and ``runs.csv``
    (one row per run), all written atomically.

    With one seed per variant the tables hold each run's numbers. With more, every metric is
    the mean ± the sample standard deviation over the seeds (``n`` column), the CSV has
    ``<metric>_mean`` / ``<metric>_std`` columns, the chart error bars, and a second table
    gives each row's difference to the reference row with its standard error.
    """
    out = Path(out_dir)
    paths = {
        "md": out / "table.md",
        "csv": out / "table.csv",
        "png": out / "table.png",
        "runs": out / RUNS_FILE,
    }
    rows = summarize(results)
    if not rows:
        return {}
    out.mkdir(parents=True, exist_ok=True)
    if any(r.n > 1 for r in rows):
        md, table = _seed_tables(rows)
    else:
        md, table = _single_tables(rows)
    atomic_write(paths["md"], "\n".join(md) + "\n")
    atomic_write(paths["csv"], _csv_text(table))
    atomic_write(paths["runs"], _csv_text(_runs_table(rows)))
    figure = _figure(rows)
    with atomic_file(paths["png"]) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")  # legend below the axes
    return paths


def _csv_text(rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int) -> list[str]:
    align = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _single_tables(rows: Sequence[VariantSummary]) -> tuple[list[str], list[list[str]]]:
    """One run per variant: its numbers."""
    body = [
        [
            r.label,
            r.name,
            *(_pct(getattr(r.runs[0], m)) for m in METRIC_NAMES),
            f"{r.runs[0].train_seconds:.1f}",
            *_paper_cells(r.paper),
        ]
        for r in rows
    ]
    md = [
        "# Table 1 ablation",
        "",
        f"Our numbers: test set of the config's data, in %. {_PAPER_NOTE}",
        "",
        *_md_table(TABLE_HEADER, body, 2),
    ]
    return md, [TABLE_HEADER, *body]


def _mean_std(s: MetricSummary, scale: float, digits: int) -> str:
    if s.n < 2:
        return f"{scale * s.mean:.{digits}f}"
    return f"{scale * s.mean:.{digits}f} ± {scale * s.std:.{digits}f}"


def _difference_cell(d: Difference) -> str:
    if math.isnan(d.se):
        return f"{100 * d.delta:+.2f}"
    return f"{100 * d.delta:+.2f} ± {100 * d.se:.2f}" + (" *" if d.beyond_noise else "")


def _seeds_text(rows: Sequence[VariantSummary]) -> str:
    ns = sorted({r.n for r in rows})
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]} to {ns[-1]}"


def _seed_tables(rows: Sequence[VariantSummary]) -> tuple[list[str], list[list[str]]]:
    """Several seeds per variant: mean ± sample std, and differences to the reference row."""
    ref = reference_row(rows)
    first_seed = min(s for r in rows for s in r.seeds)
    mark = f"beyond_{NOISE_SE:g}se"
    header = ["variant", "name", "n", *METRIC_NAMES, "train time (s)", *PAPER_HEADER]
    body = [
        [
            r.label,
            r.name,
            str(r.n),
            *(_mean_std(r.stats(m), 100.0, 2) for m in METRIC_NAMES),
            _mean_std(r.stats(TIME_NAME), 1.0, 1),
            *_paper_cells(r.paper),
        ]
        for r in rows
    ]
    others = [r for r in rows if r is not ref]
    diff_header = ["variant", "name", "n", *(f"Δ {m}" for m in METRIC_NAMES)]
    diff_body = [
        [r.label, r.name, str(r.n), *(_difference_cell(r.difference(m, ref)) for m in METRIC_NAMES)]
        for r in others
    ]
    md = [
        "# Table 1 ablation",
        "",
        "Our numbers: test set of the config's data, in %. Each cell is the mean ± the sample "
        "standard deviation (n − 1 in the denominator) over the row's n seeds "
        f"(train.seed = {first_seed}, {first_seed + 1}, ...). {_PAPER_NOTE}",
        "",
        *_md_table(header, body, 2),
        "",
        f"## Difference to the reference row: {ref.label}, n = {ref.n}",
        "",
        *_md_table(diff_header, diff_body, 2),
        "",
        "How to read these tables:",
        "",
        "- ± in the first table is the spread of one run (the sample standard deviation over "
        "seeds), not the uncertainty of the mean.",
        "- Δ is the row's mean minus the reference row's mean, in points, ± its standard error "
        "SE = √(s²/n + s_ref²/n_ref) (the two rows' seeds taken as independent samples; s is "
        "the sample standard deviation).",
        f"- `*` marks |Δ| > {NOISE_SE:g} SE: a difference larger than the seed-to-seed noise "
        "measured here. It is a screen, not a significance test: with so few seeds the "
        "standard errors are themselves rough, a two-sided 95% t-test would need about 2.8 SE "
        "with 3 seeds per row and 4.3 SE with 2 (more when the rows' spreads differ), and with "
        "many rows compared to one reference some marks appear by chance. A difference "
        "without `*` is within the noise and is no evidence of an effect.",
        "- A seed changes the weight initialisation, the batch order, the augmentation and the "
        "validation split. The data set and its test split stay the same, so the spread says "
        "nothing about other data.",
        "- Train time: the epochs' own times summed over the sessions of a resumed run; runs "
        "trained in parallel (`--jobs`) shared the machine.",
    ]
    csv_header = [
        "variant",
        "name",
        "n",
        *(f"{m}_{s}" for m in (*METRIC_NAMES, TIME_NAME) for s in ("mean", "std")),
        *PAPER_HEADER,
        *(f"{m}_{s}" for m in METRIC_NAMES for s in ("delta", "delta_se", mark)),
    ]
    csv_body = []
    for r in rows:
        cells = [r.label, r.name, str(r.n)]
        for m in (*METRIC_NAMES, TIME_NAME):
            s = r.stats(m)
            scale, digits = (1.0, 1) if m == TIME_NAME else (100.0, 2)
            std = "" if s.n < 2 else f"{scale * s.std:.{digits}f}"
            cells += [f"{scale * s.mean:.{digits}f}", std]
        cells += _paper_cells(r.paper)
        for m in METRIC_NAMES:
            if r is ref:
                cells += ["", "", ""]
                continue
            d = r.difference(m, ref)
            se = "" if math.isnan(d.se) else f"{100 * d.se:.2f}"
            cells += [f"{100 * d.delta:.2f}", se, "true" if d.beyond_noise else "false"]
        csv_body.append(cells)
    return md, [csv_header, *csv_body]


def _runs_table(rows: Sequence[VariantSummary]) -> list[list[str]]:
    """One row per (variant, seed), metrics in % with enough digits to recompute the table."""
    header = ["variant", "name", "seed", *METRIC_NAMES, TIME_NAME, "run_dir"]
    body = [
        [
            r.label,
            r.name,
            str(run.seed),
            *(f"{100.0 * getattr(run, m):.4f}" for m in METRIC_NAMES),
            f"{run.train_seconds:.3f}",
            run.run_dir,
        ]
        for r in rows
        for run in r.runs
    ]
    return [header, *body]


_CHART_METRICS = (("rank1", "tab:blue"), ("mAP", "tab:orange"), ("mINP", "tab:green"))


def _figure(rows: Sequence[VariantSummary]) -> Any:
    """The chart of ``table.png``: bars of rank1 / mAP / mINP per variant (with several seeds:
    the mean, ± sample std error bars and one dot per seed), the paper's Market numbers as
    ticks. Returns the matplotlib ``Figure``."""
    from matplotlib.figure import Figure  # heavy, optional: only for the chart

    seeds = any(r.n > 1 for r in rows)
    y = [float(i) for i in range(len(rows))]
    h = 0.26
    fig = Figure(figsize=(10, 2.4 + 0.6 * len(rows)))
    ax = fig.subplots()
    for i, (key, colour) in enumerate(_CHART_METRICS):
        stats = [r.stats(key) for r in rows]
        pos = [p + (i - 1) * h for p in y]
        means = [100.0 * s.mean for s in stats]
        if not seeds:
            ax.barh(pos, means, height=h, color=colour, label=f"ours {key}")
            continue
        errors = [100.0 * s.std if s.n > 1 else 0.0 for s in stats]
        ax.barh(
            pos,
            means,
            height=h,
            color=colour,
            xerr=errors,
            error_kw={"capsize": 3, "elinewidth": 1, "ecolor": "black"},
            label=f"ours {key}",
        )
        ax.scatter(
            [100.0 * v for s in stats for v in s.values],
            [p for p, s in zip(pos, stats) for _ in s.values],
            s=8,
            color="black",
            alpha=0.6,
            zorder=4,
            label="one seed" if i == 0 else "_nolegend_",
        )
    h_paper = [r.paper[0] if r.paper else math.nan for r in rows]
    m_paper = [r.paper[1] if r.paper else math.nan for r in rows]
    ax.scatter(
        h_paper, [p - h for p in y], marker="|", s=200, color="navy", label="paper Market rank1",
        zorder=3,
    )  # fmt: skip
    ax.scatter(
        m_paper, y, marker="|", s=200, color="saddlebrown", label="paper Market mAP", zorder=3
    )
    ax.set_yticks(y, [r.label for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("%")
    title = "Table 1 ablation: test-set rank1 / mAP / mINP"
    if seeds:
        title += f"\nmean ± sample std (n − 1) over {_seeds_text(rows)} seeds, dots: single seeds"
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=6, fontsize=8)
    fig.tight_layout()
    return fig
