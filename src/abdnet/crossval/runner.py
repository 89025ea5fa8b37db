"""Train and evaluate a config on every identity fold of a data set, resumably.

``run_cv(base, out_dir, folds=K, repeats=R)`` lays the cross-validation out as::

    DIR/
      plan.json            the config, data root, seed, K and every repeat's fold ids
      data/                the synthetic set written to disk (only for data.name: synthetic)
      r<R>-f<K>/
        split.csv          the fold as a data-set CSV (absolute image paths)
        run/               an ordinary run folder (abdnet.engine.train)
        fold_result.json   the fold's test numbers; its presence marks the fold finished
      cv.json, cv.md, cv.png

Resuming: run the same command again. A finished fold is read, a started one continues from
its last checkpoint, and a folder planned with another config, data set, seed, K or query
rule is refused (its numbers would answer another question). More repeats may be added later
(repeat r's folds do not depend on how many repeats there are). Every fold is evaluated with
flip averaging (``eval.flip``) on the cross-camera Market-1501 protocol.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from abdnet.config import Config, config_from_dict, config_to_dict, replace_checked
from abdnet.crossval.folds import FoldSplit
from abdnet.crossval.plan import METRICS, CVPlan, FoldResult, plan_cv
from abdnet.data import build_dataset
from abdnet.engine import drop_training_state, evaluate_model, resolve_device, train
from abdnet.files import FolderLock, atomic_write
from abdnet.layout import LAST, RunLayout

__all__ = [
    "RESULT_FILE",
    "run_cv",
    "fold_config",
    "read_fold_result",
]

log = logging.getLogger(__name__)

RESULT_FILE = "fold_result.json"
PLAN_FILE = "plan.json"
SPLIT_FILE = "split.csv"
RUN_DIR = "run"


def fold_config(base: Config, split_csv: Path) -> Config:
    """The run config of one fold: ``base`` reading the fold's CSV, evaluated with flip."""
    data = replace_checked(base.data, "data", name="csv", root=str(split_csv))
    return dataclasses.replace(base, data=data, eval=replace_checked(base.eval, "eval", flip=True))


def _check_plan(out: Path, plan: CVPlan) -> None:
    path = out / PLAN_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        mine = json.loads(json.dumps(plan.key()))
        # the saved config through today's defaults: options added since keep their defaults
        saved["config"] = config_to_dict(config_from_dict(saved.get("config")))
        differs = sorted(k for k in mine if saved.get(k) != mine[k])
        if differs:
            raise ValueError(
                f"{out}: holds a cross-validation planned with another {', '.join(differs)}; "
                "use another --out, or delete it to start over"
            )
    atomic_write(path, json.dumps(plan.to_json(), indent=1) + "\n")


def _evaluate_last(cfg: Config, run_dir: Path) -> dict[str, float]:
    """Test numbers of a run's last checkpoint (its epochs ended in an earlier session)."""
    from abdnet.models import load_model

    device = resolve_device(cfg.train.device)
    model = load_model(RunLayout(run_dir).checkpoint(LAST)).model.to(device)
    result = evaluate_model(
        model, build_dataset(cfg.data), cfg.eval, cfg.data, device, verification=False
    )
    return result.metrics()


def _train_fold(
    split: FoldSplit,
    cfg: Config,
    fold_dir: Path,
    train_fn: Callable[[Config, Path, bool], Any],
) -> FoldResult:
    run_dir = fold_dir / RUN_DIR
    resume = RunLayout(run_dir).config.is_file()  # the engine refuses another config
    log.info(
        "fold %s: %s, %d train ids, %d test ids",
        split.name,
        "resuming" if resume else "training",
        len(split.train_pids),
        len(split.test_pids),
    )
    t0 = time.perf_counter()
    result = train_fn(cfg, run_dir, resume)
    test = getattr(result, "test", None)
    metrics = {k: float(test[k]) for k in METRICS} if test else _evaluate_last(cfg, run_dir)
    return FoldResult(
        repeat=split.repeat,
        fold=split.fold,
        counts=split.counts(),
        train_seconds=_training_seconds(run_dir) or (time.perf_counter() - t0),
        run_dir=str(run_dir),
        test_pids=split.test_pids,
        **metrics,
    )


def _training_seconds(run_dir: Path) -> float | None:
    """The epochs' own times summed over every session of a (resumed) run."""
    path = RunLayout(run_dir).metrics
    if not path.is_file():
        return None
    per_epoch: dict[int, float] = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if isinstance(rec, dict) and "seconds" in rec:
            per_epoch[int(rec.get("epoch", len(per_epoch)))] = float(rec["seconds"])
    return sum(per_epoch.values()) or None


def _default_train(cfg: Config, run_dir: Path, resume: bool) -> Any:
    return train(cfg, run_dir, resume=resume)


def read_fold_result(fold_dir: Path) -> FoldResult | None:
    path = fold_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return FoldResult.from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{path}: not a fold result ({exc}); delete it to evaluate again") from exc


def run_cv(
    base: Config,
    out_dir: str | Path,
    *,
    folds: int,
    repeats: int = 1,
    seed: int | None = None,
    queries_per_camera: int = 2,
    train_fn: Callable[[Config, Path, bool], Any] | None = None,
    on_fold: Callable[[FoldResult], None] | None = None,
    keep_state: bool = False,
) -> list[FoldResult]:
    """Cross-validate ``base`` (module docstring): every fold trained with
    ``train_fn(cfg, run_dir, resume)`` (default :func:`abdnet.engine.train`) and tested;
    ``cv.json`` / ``cv.md`` / ``cv.png`` rewritten after each fold. Returns the fold
    results in plan order (repeat, then fold). A finished fold's run keeps its weights,
    config and metrics; its training state goes (:func:`abdnet.engine.drop_training_state`)
    unless ``keep_state``."""
    from abdnet.crossval.report import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fn = train_fn or _default_train
    with FolderLock(out.resolve(), what=f"cross-validation folder {out}"):
        plan = plan_cv(
            base, out, folds=folds, repeats=repeats, seed=seed,
            queries_per_camera=queries_per_camera,
        )  # fmt: skip
        _check_plan(out, plan)
        results: list[FoldResult] = []
        for split in plan.splits:
            fold_dir = out / split.name
            finished = read_fold_result(fold_dir)
            if finished is None:
                fold_dir.mkdir(parents=True, exist_ok=True)
                csv_path = fold_dir / SPLIT_FILE
                atomic_write(csv_path, split.to_csv())
                finished = _train_fold(
                    split, fold_config(plan.config, csv_path.resolve()), fold_dir, fn
                )
                atomic_write(fold_dir / RESULT_FILE, json.dumps(finished.to_json(), indent=1))
                if not keep_state:  # a finished fold is read, never resumed
                    drop_training_state(fold_dir / RUN_DIR)
            else:
                log.info("fold %s: finished earlier (%s)", split.name, fold_dir)
            results.append(finished)
            write_report(plan, results, out)
            if on_fold is not None:
                on_fold(finished)
    return results
