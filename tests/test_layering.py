"""The import graph of abdnet: layers point down, and no module imports itself back.

Every ``import`` counts, including those inside functions and under ``TYPE_CHECKING``. An
import names a module (``abdnet.engine.trainer``) or a package's ``__init__`` (``from
abdnet.models import X`` with X not a submodule).
"""

from __future__ import annotations

import ast
from pathlib import Path

import abdnet

SRC = Path(abdnet.__file__).parent

# Lower index = lower layer (docs/DESIGN.md). A module may import its own layer or below.
LAYERS: list[set[str]] = [
    {"config", "layout", "files", "hub", "tricks"},
    {"data", "models", "losses", "evaluation"},
    {"engine"},
    {"export"},
    {"retrieval"},
    {"gallery"},
    {"tracking"},
    {"service", "viz", "ablation", "crossval"},
    {"cli"},
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if _is_package(name, modules) else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("abdnet"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("abdnet"):
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
            if subs and len(subs) == len(node.names):
                out.update(subs)
            else:
                out.add(target)
                out.update(subs)
    return {m for m in out if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) < 2:
        return None  # abdnet/__init__.py
    for i, layer in enumerate(LAYERS):
        if parts[1] in layer:
            return i
    raise AssertionError(f"{name}: its package {parts[1]!r} has no layer in LAYERS")


def test_every_package_has_a_layer():
    for name in _modules():
        _layer(name)


def test_imports_point_down_the_layers():
    bad = []
    for src, targets in _graph().items():
        ls = _layer(src)
        for dst in targets:
            ld = _layer(dst)
            if ls is not None and ld is not None and ld > ls:
                bad.append(f"{src} -> {dst}")
    assert not bad, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(bad))


def test_evaluation_imports_nothing_else_of_abdnet():
    for src, targets in _graph().items():
        if src.startswith("abdnet.evaluation"):
            assert all(t.startswith("abdnet.evaluation") for t in targets), (src, targets)


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    # a self-check of the parser on a made-up module
    modules = {"abdnet.x": SRC / "x.py", "abdnet.x.y": SRC / "x" / "y.py", "abdnet.z": SRC}
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from abdnet.z import thing\n    from . import y\n")
    assert _imports("abdnet.x.m", p, modules) == {"abdnet.z", "abdnet.x.y"}
