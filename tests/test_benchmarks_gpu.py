"""benchmarks/gpu_throughput.py end to end on CPU at tiny shapes (the GPU run uses the same code)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from abdnet.data import SYNTHETIC_MARKER, open_dataset

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_throughput.py"
RATES = ("loader_img_s", "step_img_s", "train_img_s", "extract_img_s")


def test_gpu_throughput_runs_on_cpu_and_reports_every_phase(tmp_path):
    data, prof = tmp_path / "data", tmp_path / "prof"
    cmd = [
        sys.executable, str(BENCH), "--device", "cpu", "--height", "64", "--width", "32",
        "--backbone", "resnet18", "--ids", "8", "--per-id", "4", "--steps", "2", "--warmup", "1",
        "--batch", "8", "--workers", "1", "--precision", "fp32", "--data", str(data),
        "--profile", str(prof),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout
    r = json.loads(lines[0])

    for key in RATES:
        assert math.isfinite(r[key]) and r[key] > 0, (key, r[key])
    assert math.isclose(r["train_over_step"], r["train_img_s"] / r["step_img_s"])
    assert (r["device"], r["gpu"], r["precision"], r["compile"]) == ("cpu", None, "fp32", False)
    assert (r["workers"], r["batch"], r["input"], r["backbone"]) == (1, 8, "64x32", "resnet18")
    assert r["decoded_image_cache"] is False and r["channels_last"] is True
    assert r["torch"] and r["cpu"] and r["market1501_70_epochs_min"] is None
    assert r["target_train_img_s"] == 1300

    # the set was written as JPEG files where --data says, and the counts are its own
    assert (data / SYNTHETIC_MARKER).is_file() and r["data_written_s"] is not None
    ds = open_dataset("synthetic", root=data)
    assert all(Path(rec.path).suffix == ".jpg" and Path(rec.path).is_file() for rec in ds.train)
    assert (r["train_images"], r["train_ids"]) == (len(ds.train), 8) == (8 * 4, 8)
    assert r["extract_images"] == len(ds.query) + len(ds.gallery)

    trace = json.loads((prof / "trace.json").read_text())
    assert trace["traceEvents"]
    assert "aten::" in (prof / "top_ops.txt").read_text()


def test_a_written_set_is_reused(tmp_path):
    from abdnet.config import SyntheticConfig
    from abdnet.data import write_synthetic

    root = write_synthetic(tmp_path / "set", SyntheticConfig(ids=4, per_id=2, height=32, width=16))
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    sys.path.insert(0, str(BENCH.parent))  # the script imports a sibling benchmark
    try:
        spec = importlib.util.spec_from_file_location("gpu_throughput", BENCH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH.parent))
    args = argparse.Namespace(data=str(root), ids=99, cams=2, per_id=1, height=64, width=32)
    assert module.prepare_data(args, tmp_path) == (root, False, 0.0)
    assert before == {p: p.stat().st_mtime_ns for p in root.rglob("*")}
