"""The `videoitg` namespace's import graph, as tests/test_imports.py states its rule: every import in a module counts
(at the top, inside a function, under TYPE_CHECKING, relative ones resolved), and so does every string that names a
module of the namespace (an `importlib.import_module` target, a lazy name's module), so no arrow is hidden."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.source import namespace_folders, package_modules

FOLDERS = namespace_folders()  # the `videoitg` namespace: package -> its folder (pyproject.toml's package-dir)


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module of the namespace that `name` (a module, or a name imported from one) lives in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def module_imports(name: str, source: str, modules: dict[str, Path], is_package: bool = False) -> set[str]:
    """The namespace's modules that `name`'s source imports, anywhere in it; `from p import m` of a submodule
    counts as importing p.m, and a string that is a module's whole name (`"videoitg.pipeline.scorer"`, an
    `importlib` target or a lazy name's module; not "videoitg" alone) as importing it."""
    here = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {_owner(a.name, modules) for a in node.names if a.name.split(".")[0] == "videoitg"}
        elif isinstance(node, ast.ImportFrom):
            base = here
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            module = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            if module.split(".")[0] != "videoitg":
                continue
            for a in node.names:
                full = f"{module}.{a.name}"
                out.add(full if full in modules else _owner(module, modules))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value \
                and node.value in modules:  # not "videoitg" alone: the served model's name too
            out.add(node.value)
    out.discard(None)
    out.discard(name)
    return out  # type: ignore[return-value]


def import_graph(folders: dict[str, Path] = FOLDERS) -> dict[str, set[str]]:
    modules = package_modules(folders)
    return {m: module_imports(m, p.read_text(), modules, p.name == "__init__.py") for m, p in modules.items()}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return [*path[path.index(n):], n]
            if n not in state and (found := visit(n)) is not None:
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)) is not None:
            return found
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for n in graph.get(todo.pop(), ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen
