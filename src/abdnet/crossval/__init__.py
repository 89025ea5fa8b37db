"""Cross-validation by identity: K folds of a data set's people, each trained and tested.

``folds`` pools a data set by identity and deals the ids into folds with a deterministic
cross-camera query/gallery per fold; ``runner`` trains each fold through
:func:`abdnet.engine.train` (resumable) and ``report`` writes ``cv.json`` / ``cv.md`` /
``cv.png``.
"""

from abdnet.crossval.folds import FoldSplit, IdentityPool, assign_folds, fold_split, pool_identities
from abdnet.crossval.plan import METRICS, CVPlan, FoldResult, plan_cv
from abdnet.crossval.report import MetricStats, summarize_folds, write_report
from abdnet.crossval.runner import fold_config, read_fold_result, run_cv

__all__ = [
    "FoldSplit",
    "IdentityPool",
    "assign_folds",
    "fold_split",
    "pool_identities",
    "MetricStats",
    "summarize_folds",
    "write_report",
    "METRICS",
    "CVPlan",
    "FoldResult",
    "fold_config",
    "plan_cv",
    "read_fold_result",
    "run_cv",
]
