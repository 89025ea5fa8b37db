"""Feature files (``.npz``) written by ``abdnet extract`` and read by ``abdnet index``.

Arrays: ``features`` float32 (N, D); ``paths`` (N,) unicode, sorted as given; ``pids`` and
``camids`` int64 (N,) when every file name carried them; ``meta`` a JSON string describing the
extraction (model source, backend, flip, normalize).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from abdnet.files import atomic_file, remove_stale_temporaries

__all__ = ["FeatureSet", "save_features", "load_features"]


@dataclass
class FeatureSet:
    features: np.ndarray  # (N, D) float32
    paths: list[str]
    pids: np.ndarray | None = None  # (N,) int64
    camids: np.ndarray | None = None  # (N,) int64, 0-based
    meta: dict[str, Any] = field(default_factory=dict)


def save_features(path: str | Path, fs: FeatureSet) -> Path:
    """Write ``fs`` to ``path`` atomically (:func:`abdnet.files.atomic_file`); temporaries
    that killed writers left for ``path`` are removed first. Overwrites: callers check first
    (:func:`abdnet.files.check_output`)."""
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
    remove_stale_temporaries(out.parent, out.name)
    with atomic_file(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return out


def load_features(path: str | Path) -> FeatureSet:
    """Read a feature file; errors name the file and the missing / malformed array.

    Arrays are read with ``allow_pickle=False``: a file holding Python objects is refused.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"feature file not found: {p}")
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{p}: not a feature .npz file: {exc}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{p}: not a feature .npz file (a single .npy array)")
    with z:
        if "features" not in z.files:
            raise ValueError(f"{p}: no 'features' array (found: {', '.join(z.files) or 'none'})")
        arrays = {name: _array(z, name, p) for name in z.files}
    features = arrays["features"]
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
        raise ValueError(
            f"{p}: 'features' must be an (N, D) numeric array, got shape {features.shape} "
            f"dtype {features.dtype}"
        )
    n = features.shape[0]
    paths = [str(s) for s in arrays["paths"]] if "paths" in arrays else [str(i) for i in range(n)]
    if len(paths) != n:
        raise ValueError(f"{p}: {n} feature rows but {len(paths)} paths")
    labels = {}
    for key in ("pids", "camids"):
        if key in arrays:
            arr = arrays[key]
            if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(
                    f"{p}: '{key}' must be {n} integers, got shape {arr.shape} dtype {arr.dtype}"
                )
            labels[key] = arr.astype(np.int64)
    meta: dict[str, Any] = {}
    if "meta" in arrays:
        try:
            meta = json.loads(str(arrays["meta"]))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: 'meta' is not JSON: {exc}") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{p}: 'meta' must be a JSON object, got {type(meta).__name__}")
    return FeatureSet(
        features.astype(np.float32), paths, labels.get("pids"), labels.get("camids"), meta
    )


def _array(z: np.lib.npyio.NpzFile, name: str, p: Path) -> np.ndarray:
    try:
        return z[name]
    except ValueError as exc:  # e.g. an object array with allow_pickle=False
        raise ValueError(f"{p}: array '{name}' cannot be read safely: {exc}") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{p}: array '{name}' is damaged: {exc}") from None
