"""The codebase keeps its own rules: imports point down the layers of docs/architecture.md,
no import circle, and no control characters in Python sources."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pitsolve"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in mods:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _layers() -> list[list[str]]:
    """The layer table of docs/architecture.md, top layer first."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- layers.*?```text\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md lost its layer table"
    return [line.split() for line in block.group(1).strip().splitlines()]


def _layer_of(module: str, layers: list[list[str]]) -> int:
    """The index (0 = top) of the layer whose entry is the longest prefix of ``module``."""
    best, index = -1, None
    for i, layer in enumerate(layers):
        for entry in layer:
            full = "pitsolve" if entry == "pitsolve" else f"pitsolve.{entry}"
            if (module == full or module.startswith(full + ".")) and len(full) > best:
                best, index = len(full), i
    assert index is not None, f"{module} is in no layer of docs/architecture.md"
    return index


MODULES = _modules()
GRAPH = {name: _imports(name, path, MODULES) for name, path in MODULES.items()}


def test_the_walker_sees_the_imports():
    """A guard on the test itself: known edges are found (relative, nested, in functions)."""
    assert "pitsolve.kernels.krylov" in GRAPH["pitsolve.backends.base"]
    assert "pitsolve.models.base" in GRAPH["pitsolve.models.plrnn.shplrnn"]
    assert "pitsolve.models" in GRAPH["pitsolve.training.checkpoint"]  # inside a function


def test_every_import_points_down_the_layers():
    layers = _layers()
    up = [f"{a} (layer {layers[_layer_of(a, layers)]}) imports {b} "
          f"(layer {layers[_layer_of(b, layers)]})"
          for a, targets in GRAPH.items() for b in targets
          if _layer_of(b, layers) < _layer_of(a, layers)]
    assert not up, "imports pointing up the layers:\n" + "\n".join(sorted(up))


def test_no_import_circle():
    circles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == "open":
                circles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [])
    assert not circles, "import circles:\n" + "\n".join(circles)


SOURCES = sorted(p for d in ("pitsolve", "tests", "benchmarks", "examples", "docs")
                 for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_control_characters_in_sources(path):
    """A docstring written ``"\\tilde"`` instead of ``r"\\tilde"`` holds a tab and ``ilde``:
    no Python source may contain a control character other than newline."""
    text = path.read_text(encoding="utf-8")
    bad = [(i + 1, repr(c)) for i, line in enumerate(text.splitlines())
           for c in line if ord(c) < 32 or ord(c) == 127]
    assert not bad, f"control characters at (line, character): {bad[:5]}"
