"""Run folders as careless users treat them: two trainings into one folder (real processes),
corrupt training images, outputs that cannot be written. Nothing of the first run is lost,
every failure is one line naming its culprit, and no half-created run folder is left."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from abdnet.cli.main import main
from abdnet.config import load_config
from abdnet.data import write_synthetic


@pytest.fixture(scope="module")
def cfg_file(small_config_file) -> Path:
    return small_config_file


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "abdnet.cli.main", *args]


# A training that stops inside its first epoch until told to go on.
_HELD_TRAIN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from abdnet.engine import trainer as T
    real_epoch = T._train_epoch
    def held_epoch(*a, **k):
        Path(sys.argv[1]).write_text("inside")
        deadline = time.monotonic() + 300
        while not Path(sys.argv[2]).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return real_epoch(*a, **k)
    T._train_epoch = held_epoch
    from abdnet.cli.main import main
    sys.exit(main(sys.argv[3:]))
    """
)


def test_second_training_into_one_folder_is_refused_first_untouched(cfg_file, tmp_path):
    run = tmp_path / "run"
    inside, go_on = tmp_path / "inside", tmp_path / "go-on"
    first = subprocess.Popen(
        [sys.executable, "-c", _HELD_TRAIN, str(inside), str(go_on), "train", "--config",
         str(cfg_file), "--out", str(run), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not inside.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert inside.exists(), first.communicate()[1][-3000:]
    # the first run has written its config and is training; a second one with another lr
    # (the README's --set example: a YAML 1.2 float) and even with --force is refused
    for extra in ([], ["--force"]):
        second = subprocess.run(
            _cli("train", "--config", str(cfg_file), "--out", str(run), "--set",
                 "optim.lr=1e-4", "--no-progress", *extra),
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        lines = [ln for ln in second.stderr.splitlines() if " INFO " not in ln]
        assert lines == [
            f"abdnet train: error: run folder {run}: in use by another abdnet process (lock "
            f"{tmp_path / '.run.lock'}); wait for it to finish or use another folder"
        ]
    go_on.write_text("go")
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    assert load_config(run / "config.yaml").optim.lr == 3e-4  # the first run's, untouched
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]
    assert json.loads(out)["epochs"] == 1
    assert (run / "checkpoints" / "last" / "model.safetensors").is_file()


def test_readme_set_example_is_accepted():
    # `abdnet train --config configs/tiny.yaml --set optim.lr=1e-4`: parsed as a float and
    # not blamed on the file
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs" / "tiny.yaml", ["optim.lr=1e-4"])
    assert cfg.optim.lr == 1e-4


@pytest.fixture(scope="module")
def disk_set(tmp_path_factory, small_config_file) -> Path:
    root = tmp_path_factory.mktemp("data") / "syn"
    write_synthetic(root, load_config(small_config_file).data.synthetic)
    return root


def test_corrupt_training_image_named_and_no_run_folder(cfg_file, disk_set, tmp_path, capsys):
    data = tmp_path / "syn"
    import shutil

    shutil.copytree(disk_set, data)
    train = sorted((data / "bounding_box_train").iterdir())
    cut = train[3]
    cut.write_bytes(cut.read_bytes()[:300])
    empty = train[5]
    empty.write_bytes(b"")
    run = tmp_path / "run"
    args = ["train", "--config", str(cfg_file), "--data", str(data), "--out", str(run)]
    assert main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("abdnet train: error: ") and err.count("\n") == 1
    assert str(cut) in err and str(empty) in err and "data.skip_bad: true" in err
    assert not run.exists()  # nothing half-created
    # skipping them trains and lists them in the run folder
    assert main([*args, "--set", "data.skip_bad=true", "--no-progress"]) == 0
    listed = (run / "skipped_images.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == sorted([str(cut), str(empty)])
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["skip_bad"] is True


def test_unwritable_out_is_one_line_before_any_work(cfg_file, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["train", "--config", str(cfg_file), "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("abdnet train: error: ") and err.count("\n") == 1
    assert f"cannot write there: {blocker} is a file" in err
    assert main(["synth", "--out", str(blocker / "syn"), "--ids", "4"]) == 2
    assert f"cannot write there: {blocker} is a file" in capsys.readouterr().err
    assert not list(tmp_path.glob(".*"))  # no lock file or temporary left anywhere


def test_train_out_holding_someones_files(cfg_file, tmp_path, capsys):
    # a folder with another run's config.yaml is refused, naming it; a scheduler's log is not
    # a run and is kept
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("mine: true\n")
    assert main(["train", "--config", str(cfg_file), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"--out {run}: already holds config.yaml" in err and "--force" in err
    assert (run / "config.yaml").read_text() == "mine: true\n"
