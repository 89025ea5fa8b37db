"""Fixtures shared across test packages: a tiny model file and synthetic crops (gallery and
service tests), a real HTTP file server on 127.0.0.1 (download tests) and a real Milvus
standalone server on 127.0.0.1 (gallery and service tests, beside Milvus Lite files)."""

from __future__ import annotations

import email.utils
import hashlib
import logging
import lzma
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from abdnet.config import Config, DataConfig, SyntheticConfig, model_config
from abdnet.data import write_synthetic
from abdnet.models import build_model_from_config
from abdnet.models.io import save_model


def pytest_configure(config):
    """absl's log handler (absl-py, imported by openvino) keeps the ``sys.stderr`` of the moment
    it is created, pytest's capture of the test that imported it, and closes that stream when a
    later ``logging.config.dictConfig`` (pymilvus runs one at import) clears the handlers,
    breaking pytest's capture for the rest of the session. Created here and pointed at the
    real stderr, which it never closes.

    pymilvus's own handler (that ``dictConfig``) has the same flaw: created inside a test, it
    writes to that test's closed capture ever after ("--- Logging error ---" in a later test's
    stderr). Imported here, before any test, and pointed at the real stderr too."""
    try:
        import pymilvus  # noqa: F401  (its import configures the "pymilvus" logger)
    except ImportError:
        pass
    else:
        for handler in logging.getLogger("pymilvus").handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sys.__stderr__)
    try:
        import absl.logging
    except ImportError:
        return
    absl.logging.get_absl_handler().python_handler.stream = sys.__stderr__


@pytest.fixture(scope="module", autouse=True)
def _module_temporaries(request, tmp_path_factory):
    """When a test module ends, the folders its module-scoped fixtures made (checkpoints,
    data sets, ~80-240 MB each) are deleted, unless one of its tests failed. Session fixtures
    name theirs ``session-*``; a test's own ``tmp_path`` (``test_*``) follows
    ``tmp_path_retention_policy``."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed != failed:
        return
    for path in set(base.iterdir()) - before:
        if path.is_dir() and not path.name.startswith(("session-", "test_")):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on shared, busy cores two threads spinning for tiny tensors are
    many times slower than one (use with ``pytest.mark.usefixtures``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained ResNet-18 ABD-Net with 32-d embeddings at 64x32 input (random weights)."""
    root = tmp_path_factory.mktemp("session-tiny_model")
    cfg = Config(
        model=model_config(
            "paper", backbone="resnet18", global_dim=16, attentive_dim=16, reduction_dim=16
        ),
        data=DataConfig(height=64, width=32),
    )
    torch.manual_seed(0)
    return save_model(root / "model.safetensors", build_model_from_config(cfg.model, 4), cfg)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A synthetic set in the Market-1501 layout: 8 test identities over 2 cameras."""
    root = tmp_path_factory.mktemp("session-synth") / "syn"
    write_synthetic(root, SyntheticConfig(ids=16, cams=2, per_id=4, height=64, width=32))
    return root


@dataclass
class Served:
    """One file the server answers with."""

    data: bytes
    headers: dict[str, str] = field(default_factory=dict)
    etag: bool = True  # send ETag / Last-Modified and honour conditional requests
    drop_after: int | None = None  # close the connection after this many body bytes
    chunk_delay: float = 0.0  # seconds between 64 KiB chunks (slow server)
    status: int = 200
    version: int = 0  # bumped when the content changes (Last-Modified moves)


class FileServer:
    """A threaded ``http.server`` on 127.0.0.1 serving ``files`` (path -> Served).

    Counts full-body GETs per path in ``bodies`` and every request in ``requests``; honours
    ``If-None-Match`` (ETag = SHA-256 of the content) with 304. ``stop()`` shuts it down so
    that later connections are refused.
    """

    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.bodies: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_HEAD(self) -> None:
                server._answer(self, body=False)

            def do_GET(self) -> None:
                server._answer(self, body=True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.stopped = False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def put(self, path: str, data: bytes, **kw: object) -> Served:
        old = self.files.get(path)
        served = Served(data, **kw)  # type: ignore[arg-type]
        served.version = old.version + 1 if old else 0
        self.files[path] = served
        return served

    def stop(self) -> None:
        if not self.stopped:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.stopped = True

    def _answer(self, h: BaseHTTPRequestHandler, *, body: bool) -> None:
        path = urllib.parse.urlsplit(h.path).path
        with self.lock:
            self.requests[path] += 1
        served = self.files.get(path)
        if served is None:
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.send_header("X-Error-Code", "EntryNotFound")
            h.end_headers()
            return
        etag = '"' + hashlib.sha256(served.data).hexdigest() + '"'
        if served.etag and h.headers.get("If-None-Match") == etag:
            h.send_response(304)
            h.send_header("ETag", etag)
            h.end_headers()
            return
        h.send_response(served.status)
        h.send_header("Content-Length", str(len(served.data)))
        h.send_header("Content-Type", "application/octet-stream")
        if served.etag:
            h.send_header("ETag", etag)
            modified = 1_700_000_000 + 3600 * served.version
            h.send_header("Last-Modified", email.utils.formatdate(modified, usegmt=True))
        for key, value in served.headers.items():
            h.send_header(key, value)
        h.end_headers()
        if not body:
            return
        data = served.data if served.drop_after is None else served.data[: served.drop_after]
        step = 1 << 16
        for start in range(0, len(data), step):
            h.wfile.write(data[start : start + step])
            h.wfile.flush()
            if served.chunk_delay:
                time.sleep(served.chunk_delay)
        if served.drop_after is not None:
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        with self.lock:
            self.bodies[path] += 1


@pytest.fixture
def file_server():
    server = FileServer()
    yield server
    server.stop()


# A small but real training run (1 epoch, evaluated at the end).
SMALL_RUN = Path(__file__).parent / "fixtures" / "small-run.yaml"


@pytest.fixture(scope="session")
def small_config_file() -> Path:
    """The small run's config file, as ``abdnet train --config`` reads it (read-only)."""
    return SMALL_RUN


@pytest.fixture(scope="session")
def copy_run():
    """``copy(src, dest)``: a copy of a run folder whose files are hard links to the
    original's (a 235 MB checkpoint costs no space twice) and whose symlinks stay links. A
    test changes such a copy only by replacing or deleting files (atomic writes do), never by
    writing into one in place, which would change the original too."""

    def copy(src: Path, dest: Path) -> Path:
        shutil.copytree(src, dest, symlinks=True, copy_function=os.link)
        return dest

    return copy


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """The small run trained: checkpoints/last, metrics.jsonl and config.yaml, as
    ``abdnet train`` writes them, less the training state (a finished run, as ``abdnet cv``
    and ``abdnet ablate`` keep it: every test reads its weights, none resumes it)."""
    from abdnet.config import load_config
    from abdnet.engine import drop_training_state, train

    run = tmp_path_factory.mktemp("session-small-run") / "run"
    train(load_config(SMALL_RUN), run, progress=False)
    assert drop_training_state(run) > 0
    return run


# ---------------------------------------------------------------------------------------
# A real Milvus server: the standalone server of the PyPI package `milvus` (2.3: the Milvus
# binary with embedded etcd, local storage and RocksMQ), one per test session.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _milvus_binaries(milvus) -> Path:
    """The package's compressed binaries unpacked once per machine and version (under
    ``$XDG_CACHE_HOME/abdnet-tests``, like a package install), not once per session."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "abdnet-tests"
    target = cache / f"milvus-{milvus.__version__}" / "bin"
    if (target / "milvus").is_file():
        return target
    source = Path(milvus.__file__).parent / "data" / "bin"
    part = target.with_name(f"bin.part-{os.getpid()}")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    for packed in source.glob("*.lzma"):
        out = part / packed.name[: -len(".lzma")]
        with lzma.open(packed) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        out.chmod(0o755)
    try:
        part.rename(target)
    except OSError:  # another session unpacked it first
        shutil.rmtree(part, ignore_errors=True)
    return target


@dataclass
class MilvusServer:
    uri: str
    pid: int
    logs: Path

    def collection(self) -> str:
        """A collection name no other test uses (tests share the server)."""
        return "t_" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """One Milvus standalone server for the session: its gRPC API on a free port of
    127.0.0.1, data under the session's temporary folder; stopped by its pid at the end.
    Its embedded etcd's peer port is 2380 whatever the config says: one session using it at a
    time per machine (a second one fails with "address already in use" in the log)."""
    try:
        import milvus
    except ImportError:
        pytest.fail("the Milvus server tests need the `milvus` package (pip install -e '.[test]')")
    base = tmp_path_factory.mktemp("session-milvus")
    (base / "bin").symlink_to(_milvus_binaries(milvus))
    config = milvus.MilvusServerConfig(data_dir=str(base))
    config.set("proxy_port", _free_port())
    config.set("etcd_port", _free_port())
    config.set("etcd_log_level", "warn")
    config.resolve()  # free ports for the other components; writes configs/milvus.yaml
    health = _free_port()
    env = dict(os.environ, DEPLOY_MODE="STANDALONE", METRICS_PORT=str(health))
    env["MILVUS_RUN_DIR"] = str(base / "run")
    env["LD_LIBRARY_PATH"] = f"{base / 'bin'}:{os.environ.get('LD_LIBRARY_PATH', '')}"
    logs = base / "logs"
    with open(logs / "stdout.log", "wb") as out, open(logs / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            [str(base / "bin" / "milvus"), "run", "standalone"],
            cwd=base,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = MilvusServer(f"http://127.0.0.1:{config.get('proxy_port')}", proc.pid, logs)
    try:
        _wait_for_milvus(proc, health, server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(base / "data", ignore_errors=True)  # etcd's preallocated log files


def _wait_for_milvus(proc: subprocess.Popen, health: int, server: MilvusServer) -> None:
    """Until the health page says OK and the gRPC API answers (a few seconds to a minute)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (server.logs / "stdout.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"Milvus server exited with status {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=5) as r:
                if b"OK" in r.read():
                    break
        except OSError:
            pass
        time.sleep(0.5)
    else:
        pytest.fail(f"Milvus server not healthy after 240 s (logs in {server.logs})")
    from pymilvus import MilvusClient

    while True:
        try:
            MilvusClient(uri=server.uri, timeout=10).list_collections()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@dataclass
class GalleryTarget:
    """Where a test's gallery lives: a Milvus Lite file, or a fresh collection on the session's
    Milvus server with a crop folder of its own. Tests use it the same way for both."""

    kind: str  # "lite" or "server"
    uri: str
    collection: str
    crops: Path | None  # None: the default NAME.crops beside the Lite file

    def open(self, **kw):
        from abdnet.gallery import Gallery

        kw.setdefault("collection", self.collection)
        if self.crops is not None:
            kw.setdefault("crops", self.crops)
        return Gallery.open(self.uri, **kw)

    def args(self) -> list[str]:
        """The CLI's ``--gallery``, ``--collection`` and ``--crops`` options for it."""
        out = ["--gallery", self.uri, "--collection", self.collection]
        return out + (["--crops", str(self.crops)] if self.crops is not None else [])

    def crop_root(self) -> Path:
        return self.crops if self.crops is not None else Path(self.uri).with_suffix(".crops")


@pytest.fixture(scope="session")
def make_gallery_target(request):
    """``make(kind, folder)``: a :class:`GalleryTarget` of ``kind`` ("lite" or "server")
    whose files live in ``folder`` (for module-scoped fixtures parametrized over both)."""

    def make(kind: str, folder: Path) -> GalleryTarget:
        if kind == "lite":
            return GalleryTarget("lite", str(folder / "g.db"), "abdnet_gallery", None)
        server = request.getfixturevalue("milvus_server")
        return GalleryTarget("server", server.uri, server.collection(), folder / "crops")

    return make


@pytest.fixture(params=["lite", "server"])
def gallery_target(request, tmp_path, make_gallery_target) -> GalleryTarget:
    """Each test that takes it runs twice: on a Milvus Lite file and on the Milvus server."""
    return make_gallery_target(request.param, tmp_path)


# ---------------------------------------------------------------------------------------
# Tracked footage for the tests of what follows tracking (the gallery, the service).


@pytest.fixture(scope="session")
def calibrated_run(trained_run, copy_run, tmp_path_factory) -> Path:
    """The small run with its threshold kept (FAR 1e-2), as ``abdnet track`` needs it (a
    hard-linked copy: only ``threshold.json`` is new)."""
    from abdnet.cli.calibrate import keep_run_threshold

    run = copy_run(trained_run, tmp_path_factory.mktemp("session-calibrated-run") / "run")
    assert keep_run_threshold(run, far=1e-2, show=False) is not None
    return run


# Saturated colours, one per person: even the small run tells them apart, so the identities
# of the footage below come out right and what follows them can be checked against its
# ground truth.
_COLOURS = [(250, 20, 20), (20, 20, 250), (20, 220, 20), (250, 250, 250)]


@pytest.fixture(scope="session")
def coloured_footage(tmp_path_factory) -> list[Path]:
    """Two cameras (``cam1``, ``cam2``; 100 frames of 160x100 at 25 fps) with four people
    dressed in one colour each; three pass both cameras, one only ``cam2``. Ground truth in
    ``camN/gt/gt.txt``."""
    import numpy as np

    from abdnet.tracking.footage import FootageConfig, write_footage

    def look(pid: int, cam: int, k: int) -> np.ndarray:
        person = np.empty((128, 48, 3), np.uint8)
        person[:20] = (230, 190, 160)  # a head
        person[20:] = _COLOURS[pid - 1]
        return person

    cfg = FootageConfig(
        people=4, frames=100, width=160, height=100, seed=1, one_camera=0.3, return_share=0.0
    )
    return write_footage(tmp_path_factory.mktemp("session-footage") / "root", cfg, appearance=look)
