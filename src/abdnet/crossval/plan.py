"""What a cross-validation is made of: the plan (config, data, folds) and one fold's result."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abdnet.config import Config, config_to_dict, replace_checked
from abdnet.crossval.folds import FoldSplit, IdentityPool, assign_folds, fold_split, pool_identities
from abdnet.data import build_dataset, write_synthetic
from abdnet.evaluation import RankResult

__all__ = ["FoldResult", "CVPlan", "METRICS", "plan_cv"]

log = logging.getLogger(__name__)

METRICS = RankResult.METRIC_NAMES  # the FoldResult fields of the metrics


@dataclass(frozen=True)
class FoldResult:
    """The test numbers of one trained fold (fractions in [0, 1]) and its split's counts."""

    repeat: int
    fold: int
    mAP: float
    rank1: float
    rank5: float
    rank10: float
    mINP: float
    counts: dict[str, int]  # FoldSplit.counts(): test ids, queries, gallery, ...
    train_seconds: float
    run_dir: str
    test_pids: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return f"r{self.repeat}-f{self.fold}"

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["test_pids"] = list(self.test_pids)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FoldResult:
        d = dict(d)
        d["test_pids"] = tuple(d.get("test_pids", ()))
        return cls(**d)


@dataclass(frozen=True)
class CVPlan:
    """Everything that decides the folds; saved as ``plan.json`` and checked on resume."""

    config: Config
    data_root: str
    folds: int
    repeats: int
    seed: int
    queries_per_camera: int
    splits: tuple[FoldSplit, ...] = field(default=())
    pool: IdentityPool | None = None

    def key(self) -> dict[str, Any]:
        """What must agree for a folder to be resumed (repeats may grow)."""
        return {
            "config": config_to_dict(self.config),
            "data_root": self.data_root,
            "folds": self.folds,
            "seed": self.seed,
            "queries_per_camera": self.queries_per_camera,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            **self.key(),
            "repeats": self.repeats,
            "assignment": [[s.repeat, s.fold, list(s.test_pids)] for s in self.splits],
        }


def _materialize(base: Config, out: Path) -> Config:
    """The synthetic set rendered in memory has no files a fold CSV could list: write it
    to ``DIR/data`` once and read it from there."""
    if base.data.name != "synthetic" or base.data.root:
        return base
    root = out / "data"
    if not root.is_dir():
        write_synthetic(root, base.data.synthetic)
    data = replace_checked(base.data, "data", root=str(root.resolve()))
    return dataclasses.replace(base, data=data)


def plan_cv(
    base: Config,
    out_dir: str | Path,
    *,
    folds: int,
    repeats: int = 1,
    seed: int | None = None,
    queries_per_camera: int = 2,
) -> CVPlan:
    """The folds of ``base``'s data set (train, query and gallery pooled by identity):
    ``repeats`` shuffles by ``(seed, repeat)``, each dealt into ``folds`` groups."""
    if repeats < 1:
        raise ValueError(f"--repeats: expected a positive number, got {repeats}")
    if folds < 2:
        raise ValueError(f"--folds: expected at least 2 folds, got {folds}")
    out = Path(out_dir)
    base = _materialize(base, out)
    seed = base.train.seed if seed is None else seed
    pool = pool_identities(build_dataset(base.data))
    single = [p for p in pool.pids if len(pool.cameras(p)) < 2]
    if single:
        log.warning(
            "%d of %d identities are seen by one camera only: they train, and as test ids "
            "they are gallery-only (no cross-camera query)",
            len(single),
            len(pool.pids),
        )
    splits = [
        fold_split(pool, ids, repeat=r, fold=k, queries_per_camera=queries_per_camera)
        for r in range(repeats)
        for k, ids in enumerate(assign_folds(pool.pids, folds, seed=seed, repeat=r))
    ]
    return CVPlan(
        config=base,
        data_root=base.data.root,
        folds=folds,
        repeats=repeats,
        seed=seed,
        queries_per_camera=queries_per_camera,
        splits=tuple(splits),
        pool=pool,
    )
