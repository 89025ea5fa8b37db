"""The command line's logging and warnings set-up (``abdnet.cli.logs``): a gallery command
shows neither milvus-lite's ``pkg_resources`` deprecation warning nor Milvus Lite's or faiss's
routine INFO records, while other warnings still show."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from abdnet.config import SyntheticConfig
from abdnet.data import write_synthetic

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": ""}


def _python(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=ENV, timeout=300, **kw
    )


def test_gallery_command_shows_no_pkg_resources_warning(tmp_path, tiny_checkpoint):
    pytest.importorskip("milvus_lite")
    bare = _python("-c", "import milvus_lite")
    if "pkg_resources" not in bare.stderr:
        pytest.skip("this milvus-lite no longer warns about pkg_resources")
    root = tmp_path / "syn"
    write_synthetic(root, SyntheticConfig(ids=4, cams=2, per_id=2, height=64, width=32))
    done = _python(
        "-m", "abdnet.cli.main", "gallery", "add", "--gallery", str(tmp_path / "g.db"),
        "--checkpoint", str(tiny_checkpoint), "--images", str(root / "query"), "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "added" in done.stdout
    assert "pkg_resources" not in done.stderr and "Warning" not in done.stderr, done.stderr
    loggers = {line.split()[2] for line in done.stderr.splitlines() if " INFO " in line}
    assert loggers and all(name.startswith("abdnet.") for name in loggers), loggers


def test_other_warnings_still_show():
    code = (
        "from abdnet.cli.logs import configure_logging\n"
        "configure_logging(verbose=False)\n"
        "import warnings\n"
        "warnings.warn('pkg_resources is deprecated as an API (not from milvus_lite)')\n"
        "warnings.warn('something else', DeprecationWarning)\n"
    )
    done = _python("-W", "default", "-c", code)
    assert "UserWarning: pkg_resources is deprecated" in done.stderr
    assert "DeprecationWarning: something else" in done.stderr
