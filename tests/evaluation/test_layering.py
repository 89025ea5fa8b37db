"""abdnet.evaluation imports nothing else of abdnet (DESIGN.md layering)."""

from __future__ import annotations

import ast
from pathlib import Path

import abdnet.evaluation


def test_evaluation_imports_only_itself():
    root = Path(abdnet.evaluation.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name == "abdnet" or name.startswith("abdnet."):
                    assert name.startswith("abdnet.evaluation"), f"{path.name} imports {name}"
