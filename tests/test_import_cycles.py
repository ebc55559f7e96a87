"""No import cycles in the project's own packages (issue 12), found by a static walk of their sources.

Every import statement counts, wherever it stands: at module level, inside a function, and under
``if TYPE_CHECKING:``, since a type-only import still ties the two modules' designs together. A relative
import is resolved against the importing module; ``from pkg import name`` is an edge to ``pkg.name`` when that
is a module of the project, else to ``pkg`` (its ``__init__``); ``import a.b`` is an edge to ``a.b``.
Imports of anything outside shard/, cluster/, ipc/ and sim/ are ignored.
"""

from __future__ import annotations

import ast
import itertools
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shard", "cluster", "ipc", "sim")

Graph = dict[str, dict[str, str]]
"""module -> {imported module: "file:line" of the first import statement making the edge}."""


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    return {_module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def _deepest_module(dotted: str, modules: dict[str, Path]) -> str | None:
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


def imports_of(name: str, path: Path, modules: dict[str, Path], root: Path = ROOT) -> dict[str, str]:
    """The project modules that `name` (at `path`) imports, each with where the first such import is."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    edges: dict[str, str] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        targets: list[str | None] = []
        if isinstance(node, ast.Import):
            targets = [_deepest_module(alias.name, modules) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # "from . import x" is relative to this module's package, ".." to its parent
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else _deepest_module(base, modules) if base else None)
        for target in targets:
            if target is not None:
                edges.setdefault(target, f"{path.relative_to(root)}:{node.lineno}")
    return edges


def import_graph(root: Path = ROOT) -> Graph:
    modules = project_modules(root)
    return {name: imports_of(name, path, modules, root) for name, path in modules.items()}


def _strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one node, or with a self-loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _shortest_cycle(graph: Graph, start: str, within: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one strongly connected component."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph.get(v, ())):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*path[::-1], start]
            if w in within and w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"{start} is on no cycle")  # pragma: no cover - it is in a component


def cycles(graph: Graph) -> list[str]:
    """The shortest cycle through each module that is on one, as 'a -> b (file:line where a imports b) -> a'."""
    out = []
    for component in _strongly_connected(graph):
        seen = set()
        for module in component:
            path = _shortest_cycle(graph, module, set(component))[:-1]
            first = path.index(min(path))
            path = path[first:] + path[:first] + [min(path)]  # one spelling per cycle, from its smallest name
            if tuple(path) in seen:
                continue
            seen.add(tuple(path))
            hops = [path[0]] + [f"{b} ({graph[a][b]})" for a, b in itertools.pairwise(path)]
            out.append(" -> ".join(hops))
    return out


def package_graph(graph: Graph, package: str) -> Graph:
    inside = {m for m in graph if m == package or m.startswith(package + ".")}
    return {m: {t: w for t, w in graph[m].items() if t in inside} for m in inside}


def cross_package_graph(graph: Graph) -> Graph:
    """Packages as nodes: P -> Q when a module of P imports a module of Q (P != Q)."""
    out: Graph = {pkg: {} for pkg in PACKAGES}
    for module, targets in graph.items():
        source = module.split(".")[0]
        for target, where in targets.items():
            if target.split(".")[0] != source:
                out[source].setdefault(target.split(".")[0], f"{module} imports {target} at {where}")
    return out


def _assert_acyclic(graph: Graph, what: str) -> None:
    found = cycles(graph)
    if found:
        pytest.fail(f"import cycles in {what}:\n  " + "\n  ".join(found), pytrace=False)


@pytest.mark.parametrize("package", [
    "shard",
    "cluster",
    "ipc",
    "sim",
])
def test_no_import_cycle_inside_package(package):
    _assert_acyclic(package_graph(import_graph(), package), f"{package}/")


def test_no_import_cycle_between_packages():
    _assert_acyclic(cross_package_graph(import_graph()), "the package graph (shard, cluster, ipc, sim)")


def test_the_walk_sees_every_kind_of_import(tmp_path):
    """The walk itself: relative, function-level, TYPE_CHECKING and package imports make edges; a cycle is named."""
    pkg = tmp_path / "sim"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import A\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\nA = 1\n")
    (pkg / "b.py").write_text("import sim.sub\n\n\ndef f():\n    from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("helper = 1\n")
    (pkg / "sub" / "c.py").write_text("import os\nfrom .. import a\nfrom sim.sub import helper\n")
    for other in PACKAGES[:-1]:
        (tmp_path / other).mkdir()
    graph = import_graph(tmp_path)
    assert {m: set(t) for m, t in graph.items()} == {
        "sim": {"sim.a"}, "sim.a": {"sim.b"}, "sim.b": {"sim.sub", "sim.sub.c"}, "sim.sub": set(),
        "sim.sub.c": {"sim.a", "sim.sub"}}
    assert cycles(graph) == ["sim.a -> sim.b (sim/a.py:3) -> sim.sub.c (sim/b.py:5) -> sim.a (sim/sub/c.py:2)"]
    assert cycles(package_graph(graph, "sim")) == cycles(graph)
    assert cycles(cross_package_graph(graph)) == []


def test_the_sans_io_shard_core_reaches_no_metrics_library():
    """shard.protocol counts in plain fields: nothing it imports, directly or not, is shard.metrics (Prometheus)
    or the asyncio driver."""
    graph = import_graph()
    seen, todo = set(), ["shard.protocol"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(t for t in graph[module] if t != "shard")  # the package __init__ re-exports the driver
    assert not seen & {"shard.metrics", "shard.shard"}, sorted(seen)
