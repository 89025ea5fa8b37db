"""Every backend in one process, in any order: OpenVINO (TBB threads), ONNX Runtime (its own
thread pool), PyTorch (GNU OpenMP), faiss and scikit-learn (a second copy of GNU OpenMP), Milvus
Lite, and an evaluation whose DataLoader forks worker processes. Each sequence runs in a fresh
interpreter, so that a crash there fails this test instead of killing the test session.

The whole suite in one pytest process used to die here: each OpenVINO Core's CPU plugin
installs an alternate signal stack of its own on the thread that builds it and unmaps it when
released, and Cores released in the order they were made (or on another thread) left the main
thread's alternate stack unmapped; the next Python signal handler (PyTorch's SIGCHLD handler,
once a DataLoader with workers ran, when a child process exits) got a kernel SIGSEGV with no
traceback. ``test_released_embedders_leave_signal_delivery_working`` runs that sequence."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("openvino")
pytestmark = [pytest.mark.openvino, pytest.mark.slow]

SRC = Path(__file__).resolve().parents[2] / "src"

# One step per name; the child runs the steps in the order given on its command line.
CHILD = textwrap.dedent(
    """
    import faulthandler, json, os, sys
    faulthandler.enable()
    from pathlib import Path
    import numpy as np
    import torch
    from abdnet.cli.main import main
    from abdnet.retrieval import FeatureExtractor

    checkpoint, data, work = sys.argv[1:4]
    x = torch.randn(6, 3, 64, 32, generator=torch.Generator().manual_seed(0))
    ref = None
    for step in sys.argv[4:]:
        if step in ("openvino", "onnx", "auto"):  # starts that runtime's threads
            f = FeatureExtractor(checkpoint, device="cpu", backend=step, batch_size=4)(x)
            ref = f if ref is None else ref
            assert float((f * ref).sum(1).min()) > 0.999, step
        elif step == "eval":  # torch's OpenMP threads; DataLoader workers forked (data.workers
            # -1: one per spare core)
            assert main(["eval", "--checkpoint", checkpoint, "--data", data, "--device", "cpu",
                         "--json", "--no-progress"]) == 0
        elif step == "faiss":
            from abdnet.retrieval import build_index
            a = np.random.default_rng(0).standard_normal((3000, 32)).astype(np.float32)
            a /= np.linalg.norm(a, axis=1, keepdims=True)
            assert build_index(a, "flat").search(a[:64], 3).indices[:, 0].tolist() == list(range(64))
        elif step == "tsne":  # scikit-learn's own copy of GNU OpenMP (Barnes-Hut)
            from sklearn.manifold import TSNE
            a = np.random.default_rng(1).standard_normal((1200, 8))
            assert TSNE(n_components=2, method="barnes_hut", max_iter=250,
                        random_state=0).fit_transform(a).shape == (1200, 2)
        elif step == "gallery":  # Milvus Lite (its own process) through pymilvus' gRPC threads
            from abdnet.gallery import Gallery, describe_extractor
            fx = FeatureExtractor(checkpoint, device="cpu")
            g = Gallery.open(Path(work) / f"g{len(os.listdir(work))}.db",
                             model=describe_extractor(fx), create=True)
            g.close()
        else:
            raise SystemExit(f"unknown step {step}")
        print("done", step, flush=True)
    """
)

ORDERS = {
    "backends-first": ["openvino", "onnx", "auto", "eval", "faiss", "tsne", "gallery", "eval"],
    "backends-last": ["faiss", "tsne", "gallery", "eval", "onnx", "openvino", "auto", "eval"],
}


@pytest.mark.parametrize("order", list(ORDERS))
def test_every_backend_in_one_process(order, tiny_checkpoint, synth_root, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(SRC), ABDNET_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tiny_checkpoint), str(synth_root), str(tmp_path)]
        + ORDERS[order],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    done = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("done ")]
    assert proc.returncode == 0, f"exit {proc.returncode} after {done}:\n{proc.stderr[-3000:]}"
    assert done == ORDERS[order]
    assert "Fatal Python error" not in proc.stderr


# Two OpenVINO embedders made, then released in the order they were made and on another
# thread; faulthandler on (as pytest has it), a Python SIGCHLD handler (as PyTorch's DataLoader
# installs), then child processes: each exit runs that handler on the alternate signal stack.
RELEASE = textwrap.dedent(
    """
    import ctypes, faulthandler, gc, signal, subprocess, sys, threading
    faulthandler.enable()
    import torch
    from abdnet.export import OpenVinoEmbedder

    class Stack(ctypes.Structure):
        _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

    def alternate_stack_mapped():
        st = Stack()
        assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(st)) == 0
        if not st.sp:
            return True  # none installed: signals run on the thread's own stack
        with open("/proc/self/maps") as maps:
            spans = [line.split()[0].split("-") for line in maps]
        return any(int(lo, 16) <= st.sp < int(hi, 16) for lo, hi in spans)

    x = torch.randn(2, 3, 64, 32)
    first, second = OpenVinoEmbedder(sys.argv[1]), OpenVinoEmbedder(sys.argv[1])
    first(x), second(x)
    del first
    gc.collect()
    held = [second]
    del second
    t = threading.Thread(target=held.clear)
    t.start(), t.join()
    gc.collect()
    print("alternate stack mapped", alternate_stack_mapped(), flush=True)
    signal.signal(signal.SIGCHLD, lambda *a: None)
    for _ in range(3):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    print("children reaped", flush=True)
    """
)


def test_released_embedders_leave_signal_delivery_working(tiny_checkpoint, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", RELEASE, str(tiny_checkpoint)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    # before the fix: "alternate stack mapped False", then exit -11 (SIGSEGV) and no traceback
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert proc.stdout.splitlines() == ["alternate stack mapped True", "children reaped"]
