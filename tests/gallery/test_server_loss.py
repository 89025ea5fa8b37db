"""A Milvus server that goes away: a Milvus Lite server process, SIGKILLed between two
``gallery add`` runs and in the middle of a bulk add. The error is one line naming the URI,
and the same command, once the server is back, completes the add without duplicates."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from abdnet.cli.main import main
from abdnet.gallery import Gallery, describe_extractor, enrol_files
from abdnet.retrieval import FeatureExtractor, collect_images

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


class LiteServer:
    """Milvus Lite's gRPC server mode over one database file, on a fixed port."""

    def __init__(self, db: Path, port: int) -> None:
        import milvus_lite

        lib = Path(milvus_lite.__file__).parent / "lib"
        env = dict(os.environ, LD_LIBRARY_PATH=str(lib))
        cmd = [str(lib / "milvus"), str(db), f"127.0.0.1:{port}", "ERROR"]
        self.proc = subprocess.Popen(cmd, cwd=db.parent, env=env)
        for _ in range(600):  # until it listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            assert self.proc.poll() is None, "the Milvus Lite server exited"
            time.sleep(0.1)
        raise AssertionError("the Milvus Lite server did not listen")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _crop_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_server_killed_between_calls(tmp_path, tiny_checkpoint, synth_root, capsys):
    port = _port()
    uri = f"http://127.0.0.1:{port}"
    crops = tmp_path / "crops"
    g = ["--gallery", uri, "--crops", str(crops)]
    images = collect_images([synth_root / "query"])[:6]
    add = ["gallery", "add", *g, "--checkpoint", str(tiny_checkpoint), "--no-progress"]
    server = LiteServer(tmp_path / "lite.db", port)
    try:
        assert main([*add, "--images", *images[:3]]) == 0
        capsys.readouterr()
        server.kill()
        assert main([*add, "--images", *images]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and uri in err[0], err
        server = LiteServer(tmp_path / "lite.db", port)
        assert main([*add, "--images", *images]) == 0
        assert "added 3, already enrolled 3" in capsys.readouterr().out
        with Gallery.open(uri, crops=crops) as gal:
            assert gal.count() == 6
            assert len({e.sha256 for e in gal.page(offset=0, limit=100).items}) == 6
    finally:
        server.kill()
    assert len(_crop_files(crops)) == 6  # no temporaries, nothing twice


def test_server_killed_during_a_bulk_add(tmp_path, tiny_checkpoint, synth_root):
    port = _port()
    uri = f"http://127.0.0.1:{port}"
    crops = tmp_path / "crops"
    paths = collect_images([synth_root / "bounding_box_test"])[:24]
    extractor = FeatureExtractor(tiny_checkpoint, device="cpu")
    model = describe_extractor(extractor)
    server = LiteServer(tmp_path / "lite.db", port)
    try:
        with Gallery.open(uri, model=model, create=True, crops=crops, timeout=20) as gal:

            def kill_after_first_batch(n: int) -> None:
                server.kill()

            with pytest.raises(Exception) as caught:  # noqa: PT011 - its message is checked
                enrol_files(
                    gal,
                    extractor,
                    paths,
                    batch_size=8,
                    commit_every=8,
                    progress=kill_after_first_batch,
                )
        message = str(caught.value)
        assert uri in message and "\n" not in message.strip(), repr(message)
        server = LiteServer(tmp_path / "lite.db", port)
        with Gallery.open(uri, model=model, crops=crops) as gal:
            kept = gal.count()
            assert 8 <= kept < len(paths)  # the acknowledged first batch is there
            report = enrol_files(gal, extractor, paths, batch_size=8)
            assert (report.added, report.skipped) == (len(paths) - kept, kept)
            assert gal.count() == len(paths)
            assert len({e.sha256 for e in gal.page(offset=0, limit=100).items}) == len(paths)
    finally:
        server.kill()
    assert not [p for p in _crop_files(crops) if p.name.startswith(".")]
