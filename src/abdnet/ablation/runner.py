"""Running an ablation: each variant trained over seeds in its own run folder, resumable.

Each (variant, seed) trains in ``DIR/<variant>/seed-<S>/`` through ``abdnet.engine.train``;
its ``ablation_result.json`` marks it finished. ``DIR`` is locked against a second ablation.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, NamedTuple

import torch

from abdnet.ablation.report import write_tables
from abdnet.ablation.results import METRIC_NAMES, RESULT_FILE, VariantResult, read_result
from abdnet.ablation.stats import VariantSummary, summarize
from abdnet.ablation.variants import VARIANTS, Variant, resolve_variants, variant_config
from abdnet.config import Config, config_from_dict, config_to_dict, dump_config, load_config
from abdnet.data import build_dataset
from abdnet.engine import drop_training_state, evaluate_model, resolve_device, train
from abdnet.evaluation import RankResult
from abdnet.files import FolderLock, atomic_write
from abdnet.layout import LAST, RunLayout
from abdnet.models import load_model

__all__ = ["BASE_CONFIG_FILE", "run_ablation", "run_folder", "run_seeds"]

log = logging.getLogger(__name__)

BASE_CONFIG_FILE = "base_config.yaml"  # DIR/base_config.yaml: the config the variants start from


def run_seeds(base: Config, seeds: int) -> list[int]:
    """The ``train.seed`` of each run of a variant: the base config's seed + 0, 1, ..., seeds - 1."""
    if seeds < 1:
        raise ValueError(f"--seeds: expected a positive number of runs per variant, got {seeds}")
    return [base.train.seed + i for i in range(seeds)]


def run_folder(out_dir: str | Path, name: str, seed: int) -> Path:
    """The run folder of one (variant, seed): ``out_dir/<name>/seed-<seed>/``."""
    return Path(out_dir) / name / f"seed-{seed}"


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
    model = load_model(RunLayout(run_dir).checkpoint(LAST)).model.to(device)
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
    keep_state: bool = False,
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
    if not keep_state:  # a finished run is read, never resumed: its weights are what stays
        drop_training_state(run_dir)
    return vr


class _Pending(NamedTuple):
    """A (variant, seed) still to train, with the config it trains."""

    variant: Variant
    seed: int
    cfg: Config


class _Job(NamedTuple):
    """What a worker process of ``jobs > 1`` needs for one (variant, seed); picklable."""

    name: str
    seed: int
    base: dict[str, Any]  # the base config, as config_to_dict gives it
    out_dir: str
    threads: int
    keep_state: bool


def _worker(job: _Job) -> dict[str, Any]:
    """One (variant, seed) in a worker process of ``jobs > 1``."""
    name, seed, base_dict, out_dir, threads, keep_state = job
    torch.set_num_threads(threads)
    variant = VARIANTS[name]
    cfg = variant_config(variant, config_from_dict(base_dict), seed=seed)
    run_dir = run_folder(out_dir, name, seed)
    return _run_one(
        variant, seed, cfg, run_dir, _default_train, _default_evaluate, keep_state
    ).to_json()


def run_ablation(
    base: Config,
    out_dir: str | Path,
    variants: Sequence[str] | None = None,
    *,
    seeds: int = 1,
    jobs: int = 1,
    train_fn: Callable[[Config, Path, bool], Any] | None = None,
    evaluate_fn: Callable[[Config, Path], dict[str, float]] | None = None,
    keep_state: bool = False,
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
    -> metrics`` default to ``abdnet.engine``. A finished run keeps its weights, config and
    metrics; its training state goes (:func:`abdnet.engine.drop_training_state`: two thirds
    of a checkpoint) unless ``keep_state``. Returns one summary per variant.
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
        todo: list[_Pending] = []
        for v in chosen:
            _refuse_single_folder_run(out / v.name)
        for seed in seed_list:
            for v in chosen:
                cfg = variant_config(v, base, seed=seed)
                run_dir = run_folder(out, v.name, seed)
                _check_run_config(run_dir, cfg)
                finished = read_result(run_dir)
                if finished is None:
                    todo.append(_Pending(v, seed, cfg))
                else:
                    log.info("%s seed %d: finished earlier (%s)", v.name, seed, run_dir)
                    done[(v.name, seed)] = finished
        atomic_write(out / BASE_CONFIG_FILE, dump_config(base))

        def collected() -> list[VariantResult]:
            return [done[(v.name, s)] for v in chosen for s in seed_list if (v.name, s) in done]

        if todo and jobs > 1 and train_fn is None and evaluate_fn is None:
            _run_parallel(todo, base, out, jobs, done, collected, keep_state)
        else:
            if jobs > 1:
                log.warning(
                    "--jobs %d ignored: custom train/evaluate functions run in this process", jobs
                )
            tf = train_fn or _default_train
            ef = evaluate_fn or _default_evaluate
            for v, seed, cfg in todo:
                run_dir = run_folder(out, v.name, seed)
                done[(v.name, seed)] = _run_one(v, seed, cfg, run_dir, tf, ef, keep_state)
                write_tables(collected(), out)  # a partial table survives an interruption
        results = collected()
        write_tables(results, out)
    return summarize(results)


def _run_parallel(
    todo: Sequence[_Pending],
    base: Config,
    out: Path,
    jobs: int,
    done: dict[tuple[str, int], VariantResult],
    collected: Callable[[], list[VariantResult]],
    keep_state: bool,
) -> None:
    """The runs of ``todo`` in ``jobs`` worker processes; the tables are rewritten as each
    finishes, and a failed run does not stop the others (its error is raised at the end)."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    base_dict = config_to_dict(base)
    errors: list[BaseException] = []
    # spawn: a fresh interpreter per worker (forking a process that holds torch threads is unsafe)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        jobs_of = [
            (v, seed, _Job(v.name, seed, base_dict, str(out), threads, keep_state))
            for v, seed, _ in todo
        ]
        futures = {pool.submit(_worker, job): (v, seed) for v, seed, job in jobs_of}
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
