"""No module shadowed by a parameter or a local (issue 12): inside a function of shard/, cluster/, ipc/ or sim/,
no name that the function binds (a parameter, an assignment, a loop or ``with`` target) is the name of a module
its file imports at module level, so the module stays reachable wherever the file can see it.
"""

from __future__ import annotations

import ast
import importlib
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shard", "cluster", "ipc", "sim")


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _bound_in(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> dict[str, int]:
    """Names the function binds (parameters and stores, nested scopes included), each with a line."""
    args = function.args
    params = args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]
    bound = {a.arg: a.lineno for a in params}
    if not isinstance(function, ast.Lambda):
        for node in ast.walk(function):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.setdefault(node.id, node.lineno)
    return bound


def shadowed_modules(path: Path, root: Path = ROOT) -> list[str]:
    """'file:line: ...' for each binding in a function of `path` that shadows a module imported at module level."""
    module = importlib.import_module(_module_name(path, root))
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    imported = set()
    for node in tree.body:  # module-level imports only: a function's own import is its own business
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported |= {(a.asname or a.name).split(".")[0] for a in node.names}
    modules = {n for n in imported if isinstance(getattr(module, n, None), types.ModuleType)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for name, line in _bound_in(node).items():
                if name in modules:
                    found.append(f"{path.relative_to(root)}:{line}: {name!r} shadows the module imported as {name!r}")
    return found


def test_no_module_is_shadowed_by_a_parameter_or_a_local():
    found = [hit for pkg in PACKAGES for path in sorted((ROOT / pkg).rglob("*.py"))
             if path.name != "__main__.py" for hit in shadowed_modules(path)]
    assert not found, "\n".join(sorted(set(found)))


def test_the_scan_finds_a_shadowing_parameter_and_local(tmp_path, monkeypatch):
    """The check itself: a parameter or a local named like a module the file imports is reported."""
    pkg = tmp_path / "shadowpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "m.py").write_text("import time\nfrom os import path\nfrom os import sep\n\n\n"
                              "def f(time):\n    path = sep = 1\n    return time, path, sep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert shadowed_modules(pkg / "m.py", tmp_path) == [
        "shadowpkg/m.py:6: 'time' shadows the module imported as 'time'",
        "shadowpkg/m.py:7: 'path' shadows the module imported as 'path'"]  # sep is a str, not a module
