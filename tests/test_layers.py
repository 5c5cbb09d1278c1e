"""The import graph: no circle anywhere (in the package and in bench/), and the layers of
../shared/design/ARCHITECTURE.md — ``archive`` and ``lake`` never import each other, ``cube`` and ``dicom``
import neither of them.

Imports inside functions count too: a circle broken only by a deferred import is still a circle to a reader.
The graph is read from the source with :mod:`ast` (nothing is imported), so the test is the same on every machine.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "cubepacs"
BENCH = ROOT / "bench"


def _modules(folder: Path, package: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in folder.rglob("*.py"):
        parts = path.relative_to(folder).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join((package, *parts)) if package else ".".join(parts)] = path
    return out


def import_graph(folder: Path, package: str) -> dict[str, set[str]]:
    """Module → the modules of the same tree it imports (at any depth of its code)."""
    mods = _modules(folder, package)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                for alias in node.names:
                    full = f"{module}.{alias.name}"
                    deps.add(full if full in mods else module)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(("folder", "package"), [(SRC, "cubepacs"), (BENCH, "")], ids=["src", "bench"])
def test_no_import_circles(folder: Path, package: str) -> None:
    assert cycles(import_graph(folder, package)) == []


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("cubepacs.archive", ("cubepacs.lake", "cubepacs.research")),
    ("cubepacs.lake", ("cubepacs.archive",)),
    ("cubepacs.cube", ("cubepacs.archive", "cubepacs.lake", "cubepacs.research")),
    ("cubepacs.dicom", ("cubepacs.archive", "cubepacs.lake", "cubepacs.research", "cubepacs.cube")),
])
def test_layers(layer: str, forbidden: tuple[str, ...]) -> None:
    graph = import_graph(SRC, "cubepacs")
    wrong = sorted(f"{m} imports {d}" for m, deps in graph.items() if m == layer or m.startswith(layer + ".")
                   for d in deps if d.startswith(forbidden))
    assert wrong == []
