"""The ``abdnet`` entry point itself: the top-level help lists every command without loading
PyTorch, ``--version`` is the installed package's, a named command gets its full parser."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from abdnet.cli.main import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "numpy", "faiss", "pymilvus", "onnxruntime", "matplotlib")


def _loaded_after(argv: list[str]) -> tuple[str, list[str]]:
    """stdout of ``main(argv)`` in a fresh interpreter and the heavy modules it imported."""
    code = (
        "import contextlib, io, sys\n"
        "from abdnet.cli.main import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(out.getvalue())\n"
        f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    text, _, loaded = done.stdout.rpartition("LOADED ")
    return text, eval(loaded)  # a list literal printed above


@pytest.mark.parametrize("argv", [["--help"], [], ["--version"], ["-v"]])
def test_top_level_loads_no_heavy_module(argv):
    text, loaded = _loaded_after(argv)
    assert loaded == []
    if argv == ["--help"]:
        for name, module in COMMANDS.items():
            help_line = importlib.import_module(f"abdnet.cli.{module}").HELP
            assert name in text and help_line.split()[0] in text, name


def test_a_named_command_gets_its_full_parser_and_loads_what_it_needs():
    # ablate reads its variant names from abdnet.ablation (which imports torch): the
    # sub-command's help still lists them, the top level above never reads them
    text, loaded = _loaded_after(["ablate", "--help"])
    assert "--seeds" in text and "abdnet" in text and "torch" in loaded
    from abdnet.ablation import VARIANTS

    assert all(v in text.replace("\n", " ") for v in VARIANTS)


def test_version_is_the_package_metadata_and_pyproject(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    printed = capsys.readouterr().out.strip()
    pyproject = (ROOT / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"$', pyproject, re.M).group(1)
    assert printed == f"abdnet {importlib.metadata.version('abdnet')}" == f"abdnet {declared}"
    import abdnet

    assert abdnet.__version__ == declared


def test_unknown_command_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["nosuchcommand"])
    assert exc.value.code == 2
    assert "invalid choice: 'nosuchcommand'" in capsys.readouterr().err
