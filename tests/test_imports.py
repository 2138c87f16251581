"""The serving package's import graph: no circle, the client side apart from the launcher, /proc read in one module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.support import ROOT

PACKAGE = ROOT / "videoitg" / "serving"
PREFIX = "videoitg.serving."


def serving_imports(source: str) -> set[str]:
    """The `videoitg.serving` modules a module's source imports, anywhere in it (TYPE_CHECKING blocks included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name[len(PREFIX):].split(".")[0] for a in node.names if a.name.startswith(PREFIX)}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PREFIX.rstrip("."):
                out |= {a.name for a in node.names}
            elif node.module.startswith(PREFIX):
                out.add(node.module[len(PREFIX):].split(".")[0])
    return out


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of `package` and what it imports of it; a subpackage is one node, importing what its files do."""
    graph = {p.stem: serving_imports(p.read_text()) - {p.stem} for p in package.glob("*.py") if p.stem != "__init__"}
    for sub in package.glob("*/__init__.py"):
        files = sub.parent.rglob("*.py")
        graph[sub.parent.name] = set().union(*(serving_imports(p.read_text()) for p in files)) - {sub.parent.name}
    return graph


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


def test_find_circle_finds_one_and_only_one() -> None:
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    src = ("from videoitg.serving import ports, shm\nimport videoitg.serving.front\n"
           "if X:\n    from videoitg.serving.x import y\n")
    assert serving_imports(src) == {"ports", "shm", "front", "x"}


def test_serving_modules_import_each_other_in_one_direction() -> None:
    graph = import_graph()
    assert {"server", "supervise", "procfs", "front", "client", "routing"} <= graph.keys()
    assert find_circle(graph) is None, f"import circle: {' -> '.join(find_circle(graph) or [])}"


def test_client_and_routing_stay_apart_from_the_launcher() -> None:
    graph = import_graph()
    launcher = {"server", "supervise", "procfs", "ports", "shm", "binaries", "front"}
    for side in ("client", "routing"):
        assert not reachable(graph, side) & launcher, f"{side} reaches {sorted(reachable(graph, side) & launcher)}"


def test_only_procfs_reads_proc() -> None:
    readers = sorted(p.name for p in PACKAGE.rglob("*.py") if re.search(r"""["']/proc\b""", p.read_text()))
    assert readers == ["procfs.py"]
