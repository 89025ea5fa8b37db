"""Feature files (``.npz``) written by ``abdnet extract`` and read by ``abdnet index``.

Arrays: ``features`` float32 (N, D); ``paths`` (N,) unicode, sorted as given; ``pids`` and
``camids`` int64 (N,) when every file name carried them; ``meta`` a JSON string describing the
extraction (model source, backend, flip, normalize).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FeatureSet", "save_features", "load_features"]


@dataclass
class FeatureSet:
    features: np.ndarray  # (N, D) float32
    paths: list[str]
    pids: np.ndarray | None = None  # (N,) int64
    camids: np.ndarray | None = None  # (N,) int64, 0-based
    meta: dict[str, Any] = field(default_factory=dict)


def save_features(path: str | Path, fs: FeatureSet) -> Path:
    """Write ``fs`` to ``path`` (a temporary file renamed into place)."""
    out = Path(path)
    n = fs.features.shape[0]
    if len(fs.paths) != n:
        raise ValueError(f"{out}: {n} feature rows but {len(fs.paths)} paths")
    arrays: dict[str, np.ndarray] = {
        "features": np.ascontiguousarray(fs.features, dtype=np.float32),
        "paths": np.asarray(fs.paths, dtype=str) if n else np.zeros(0, dtype="<U1"),
        "meta": np.asarray(json.dumps(fs.meta)),
    }
    if fs.pids is not None and fs.camids is not None:
        arrays["pids"] = np.asarray(fs.pids, dtype=np.int64)
        arrays["camids"] = np.asarray(fs.camids, dtype=np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def load_features(path: str | Path) -> FeatureSet:
    """Read a feature file; errors name the file and the missing / malformed array."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"feature file not found: {p}")
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{p}: not a feature .npz file: {exc}") from None
    with z:
        if "features" not in z.files:
            raise ValueError(f"{p}: no 'features' array (found: {', '.join(z.files) or 'none'})")
        features = z["features"]
        if features.ndim != 2:
            raise ValueError(f"{p}: 'features' must be (N, D), got shape {features.shape}")
        n = features.shape[0]
        paths = [str(s) for s in z["paths"]] if "paths" in z.files else [str(i) for i in range(n)]
        if len(paths) != n:
            raise ValueError(f"{p}: {n} feature rows but {len(paths)} paths")
        pids = z["pids"].astype(np.int64) if "pids" in z.files else None
        camids = z["camids"].astype(np.int64) if "camids" in z.files else None
        meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
    return FeatureSet(features.astype(np.float32), paths, pids, camids, meta)
