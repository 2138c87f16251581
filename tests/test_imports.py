"""The package's import rule, stated by folder: no import circle, and every import points down the layer order (or
stays in its folder).

Every module of the `videoitg` namespace counts, with `videoitg.train`, `videoitg.python_backend` and
`videoitg.engine_build` resolved to their folders (`train/`, `python_backend/`, `engine_build/`: pyproject's
package-dir), and every import in a module counts: at the top, inside a function (lazy), under TYPE_CHECKING,
relative ones resolved. The layers, lowest first (a folder may import itself and the layers below it; folders named
together on one line share a rank and do not import each other):

    core       videoitg/*.py: data types, formats and rules with no folder below them (errors, config, sampling,
               outputs, moments, paths, manifest, ...)
    model      model/ (the reference model, its layout, weights and token arithmetic)  |  decode/ (bytes -> frames)
    request    request/ (a request's bounds, options and instruction tokens)  |  eval/ (annotations, metrics, tables)
    contract   contract/ (the wire contract: names, tensors, parameters)  |  engines/ (the runtime seam)
    pipeline   pipeline/ (in-process scoring)  |  answer/ (select, then answer)  |  engine_build/  |  train/
    server     python_backend/ (runs inside tritonserver)  |  serving/ (starts or talks to a server)
    clients    batch/  |  lmms/
    commands   commands/

No exception is listed. The serving package's own checks stay below (the client side apart from the launcher,
/proc read in one module).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.support import ROOT
from tests.support.source import namespace_folders, package_modules

# the `videoitg` namespace: package -> its folder (pyproject.toml's package-dir)
FOLDERS = namespace_folders()
# (rank, layer, module patterns); "x*" is x and every module under it; an exact name wins over a pattern
# folder -> (rank, layer); "" is the package's top level
LAYERS: dict[str, tuple[int, str]] = {
    "": (0, "core"),
    "model": (1, "model"), "decode": (1, "decode"),
    "request": (2, "request"), "eval": (2, "eval"),
    "contract": (3, "contract"), "engines": (3, "engines"),
    "pipeline": (4, "pipeline"), "answer": (4, "answer"), "engine_build": (4, "engine_build"), "train": (4, "train"),
    "python_backend": (5, "python_backend"), "serving": (5, "serving"),
    "batch": (6, "batch"), "lmms": (6, "lmms"),
    "commands": (7, "commands"),
}
SERVING = "videoitg.serving."


# ---- the graph -------------------------------------------------------------------------------------------------
def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module of the namespace that `name` (a module, or a name imported from one) lives in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def module_imports(name: str, source: str, modules: dict[str, Path], is_package: bool = False) -> set[str]:
    """The namespace's modules that `name`'s source imports, anywhere in it; `from p import m` of a submodule
    counts as importing p.m."""
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


def layer_of(module: str) -> tuple[int, str] | None:
    """(rank, layer) of a module by its folder (the name after `videoitg.`, when that is a folder of LAYERS; a
    top-level module is core); None for a module in a folder LAYERS does not name."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS[parts[1]]
    return LAYERS[""] if len(parts) <= 2 else None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import that points up the layer order or across layers of one rank."""
    out = []
    for m in sorted(graph):
        rank, layer = layer_of(m) or (0, "?")
        for n in sorted(graph[m]):
            n_rank, n_layer = layer_of(n) or (0, "?")
            if n_layer != layer and n_rank >= rank:
                out.append(f"{m} ({layer}) imports {n} ({n_layer})")
    return out


# ---- the rule ----------------------------------------------------------------------------------------------------
def test_the_graph_sees_lazy_relative_and_submodule_imports() -> None:
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    modules = dict.fromkeys(["videoitg.serving.ports", "videoitg.serving.shm", "videoitg.serving.front",
                             "videoitg.serving.x", "videoitg.decode", "videoitg.decode.dali",
                             "videoitg.python_backend.common", "videoitg.python_backend.params"], Path())
    src = ("from videoitg.serving import ports, shm\nimport videoitg.serving.front\n"
           "def f():\n    from videoitg.decode import dali, decode_video\n"
           "if X:\n    from videoitg.serving.x import y\n")
    assert module_imports("videoitg.serving.server", src, modules) == {
        "videoitg.serving.ports", "videoitg.serving.shm", "videoitg.serving.front", "videoitg.serving.x",
        "videoitg.decode.dali", "videoitg.decode"}
    assert module_imports("videoitg.python_backend.grounding", "from .common import x\nfrom . import params\n",
                          modules) == {"videoitg.python_backend.common", "videoitg.python_backend.params"}


def test_the_namespace_maps_each_folder() -> None:
    modules = package_modules()
    assert {"videoitg.train.data", "videoitg.python_backend.params", "videoitg.engine_build.build",
            "videoitg.decode.dali", "videoitg.serving.server", "videoitg.cli"} <= modules.keys()
    assert modules["videoitg.train.data"] == ROOT / "train" / "data.py"


def test_no_import_circle_in_the_package() -> None:
    circle = find_circle(import_graph())
    assert circle is None, f"import circle: {' -> '.join(circle or [])}"


def test_every_module_has_a_layer() -> None:
    modules = package_modules()
    unplaced = sorted(m for m, path in modules.items()
                      if layer_of(m) is None or (path.name == "__init__.py" and m != "videoitg"
                                                 and m.split(".")[1] not in LAYERS))
    assert not unplaced, f"place these folders in tests/test_imports.py LAYERS (and docs/architecture.md): {unplaced}"


def test_imports_point_down_the_layer_order() -> None:
    assert layer_violations(import_graph()) == []


def test_the_layer_check_has_teeth() -> None:
    graph = {"videoitg.decode.dali": {"videoitg.engines.runtimes"}, "videoitg.serving.repository":
             {"videoitg.python_backend.params", "videoitg.contract.protocol"}, "videoitg.engines.runtimes": set(),
             "videoitg.python_backend.params": {"videoitg.contract.protocol", "videoitg.pipeline.scorer"}}
    assert layer_violations(graph) == [
        "videoitg.decode.dali (decode) imports videoitg.engines.runtimes (engines)",
        "videoitg.serving.repository (serving) imports videoitg.python_backend.params (python_backend)"]


# ---- the serving package -------------------------------------------------------------------------------------------
def serving_graph() -> dict[str, set[str]]:
    """The serving modules' imports among themselves, by name under `videoitg.serving.`."""
    short = {m[len(SERVING):]: {n[len(SERVING):] for n in deps if n.startswith(SERVING)}
             for m, deps in import_graph().items() if m.startswith(SERVING)}
    return {m.split(".")[0]: set() for m in short} | {m: d for m, d in short.items()}


def test_client_and_routing_stay_apart_from_the_launcher() -> None:
    graph = serving_graph()
    assert {"server", "supervise", "procfs", "client", "routing"} <= graph.keys()
    launcher = {"server", "supervise", "procfs", "ports", "shm", "binaries", "front"}

    def touches(found: set[str]) -> set[str]:
        return {m for m in found if m.split(".")[0] in launcher}

    for side in ("client", "routing"):
        assert not touches(reachable(graph, side)), f"{side} reaches {sorted(touches(reachable(graph, side)))}"


def test_only_procfs_reads_proc() -> None:
    serving = ROOT / "videoitg" / "serving"
    readers = sorted(str(p.relative_to(serving)) for p in serving.rglob("*.py")
                     if re.search(r"""["']/proc\b""", p.read_text()))
    assert readers == ["procfs.py"]
