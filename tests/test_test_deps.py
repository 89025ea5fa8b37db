"""``.ci/install-test-deps``, run by ``make test``: quiet when the browser is there, installs
it with apt-get as root, and otherwise stops at once with the one command to run.

apt-get and id are stand-in scripts on a PATH of their own: the test checks the script's
decisions, never installs anything."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "install-test-deps"
BASH = shutil.which("bash")


def _tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!{BASH}\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _run(tmp_path: Path, *, uid: int, apt: bool) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _tool(bin_dir, "id", f"echo {uid}")
    browser, driver = tmp_path / "usr" / "chromium", tmp_path / "usr" / "chromedriver"
    if apt:  # "installs" the two programs where the script looks for them, logs its arguments
        _tool(
            bin_dir,
            "apt-get",
            f'echo "$*" >> {tmp_path}/apt.log\n'
            f'if [ "$1" = install ]; then {shutil.which("mkdir")} -p {browser.parent}; '
            f"printf '#!/bin/true\\n' > {browser}; {shutil.which('cp')} {browser} {driver}; "
            f"{shutil.which('chmod')} +x {browser} {driver}; fi",
        )
    env = {"PATH": str(bin_dir), "CHROMIUM": str(browser), "CHROMEDRIVER": str(driver)}
    return subprocess.run([BASH, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def test_makefile_runs_it_before_the_tests_and_ci_through_make():
    make = (ROOT / "Makefile").read_text()
    assert "test: test-deps $(STAMP)" in make and "./.ci/install-test-deps" in make
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "apt-get install" not in ci  # one copy of the install, not two
    assert os.access(SCRIPT, os.X_OK)


def test_present_browser_is_quiet_success(tmp_path):
    for p in (tmp_path / "usr" / "chromium", tmp_path / "usr" / "chromedriver"):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("#!/bin/true\n")
        p.chmod(0o755)
    done = _run(tmp_path, uid=1000, apt=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert not (tmp_path / "apt.log").exists()


def test_missing_browser_as_root_is_installed_with_apt_get(tmp_path):
    done = _run(tmp_path, uid=0, apt=True)
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "apt.log").read_text().splitlines()
    assert calls[0].startswith("update")
    assert calls[1].startswith("install") and calls[1].split()[-2:] == [
        "chromium",
        "chromium-driver",
    ]
    assert os.access(tmp_path / "usr" / "chromedriver", os.X_OK)


def test_missing_browser_without_root_stops_with_the_command(tmp_path):
    done = _run(tmp_path, uid=1000, apt=True)
    assert done.returncode == 1
    assert not (tmp_path / "apt.log").exists()  # nothing tried without root
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        "run: sudo apt-get install -y chromium chromium-driver"
    )


def test_missing_browser_as_root_without_apt_get_stops_too(tmp_path):
    done = _run(tmp_path, uid=0, apt=False)
    assert done.returncode == 1 and "sudo apt-get install -y chromium" in done.stderr


def test_failed_install_is_an_error(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _tool(bin_dir, "apt-get", "exit 100")
    done = _run(tmp_path, uid=0, apt=False)  # keeps the failing apt-get written above
    assert done.returncode == 1 and "could not install chromium chromium-driver" in done.stderr
