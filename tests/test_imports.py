"""The package's import rule, stated by folder: no import circle, and every import points down the layer order (or
stays in its folder).

Every module of the `videoitg` namespace counts, with `videoitg.train`, `videoitg.python_backend` and
`videoitg.engine_build` resolved to their folders (`train/`, `python_backend/`, `engine_build/`: pyproject's
package-dir), and every import in a module counts: at the top, inside a function (lazy), under TYPE_CHECKING,
relative ones resolved, and a string naming a module (an `importlib` target, a lazy name): tests/support/imports.py.
The layers, lowest first (a folder may import itself and the layers below it; folders named together on one line
share a rank and do not import each other):

    core       videoitg/*.py: the shared types and rules (errors, config, sampling, outputs, moments, paths, ...)
    data       model/ (the reference model)  |  decode/ (bytes -> frames)  |  synthetic/ (the synthetic task, the
               sample clip)  |  manifest/ (batch rows and work units)
    request    request/ (a request's bounds, options and instruction tokens)  |  eval/ (annotations, metrics, tables)
    contract   contract/ (the wire contract: names, tensors, parameters)  |  engines/ (the runtime seam)
    pipeline   pipeline/ (in-process scoring)  |  answer/ (select, then answer)  |  engine_build/  |  train/
    server     python_backend/ (runs inside tritonserver)  |  repository/ (the model-repository generator)  |
               client/ (talks to a server)
    front      front/ (the public ports)
    launch     launch/ (starts tritonserver, the front, perf_analyzer)
    clients    batch/  |  lmms/  |  perf/ (measures a running server: perf_analyzer's levels, each step's share)
    commands   commands/ (the command line, its picture)
    entry      the package's two doors: `videoitg/__init__.py` (its lazy names) and `videoitg/__main__.py`

No exception is listed. The launcher's own check stays below (/proc read in one module).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.support import ROOT
from tests.support.imports import find_circle, import_graph, module_imports, reachable
from tests.support.source import package_modules

# folder -> (rank, layer); "" is the package's top level
LAYERS: dict[str, tuple[int, str]] = {
    "": (0, "core"),
    "model": (1, "model"), "decode": (1, "decode"), "synthetic": (1, "synthetic"), "manifest": (1, "manifest"),
    "request": (2, "request"), "eval": (2, "eval"),
    "contract": (3, "contract"), "engines": (3, "engines"),
    "pipeline": (4, "pipeline"), "answer": (4, "answer"), "engine_build": (4, "engine_build"), "train": (4, "train"),
    "python_backend": (5, "python_backend"), "repository": (5, "repository"), "client": (5, "client"),
    "front": (6, "front"),
    "launch": (7, "launch"),
    "batch": (8, "batch"), "lmms": (8, "lmms"), "perf": (8, "perf"),
    "commands": (9, "commands"),
}
ENTRY = {"videoitg": (10, "entry"), "videoitg.__main__": (10, "entry")}  # the package's doors


def layer_of(module: str) -> tuple[int, str] | None:
    """(rank, layer) of a module by its folder (the name after `videoitg.`, when that is a folder of LAYERS; a
    top-level module is core, the package's doors are entry); None for a module in a folder LAYERS does not name."""
    if module in ENTRY:
        return ENTRY[module]
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
    modules = dict.fromkeys(["videoitg.launch.ports", "videoitg.launch.shm", "videoitg.front",
                             "videoitg.launch.x", "videoitg.decode", "videoitg.decode.dali",
                             "videoitg.python_backend.responses", "videoitg.python_backend.params"], Path())
    src = ("from videoitg.launch import ports, shm\nimport videoitg.front\n"
           "def f():\n    from videoitg.decode import dali, decode_video\n"
           "if X:\n    from videoitg.launch.x import y\n")
    assert module_imports("videoitg.launch.server", src, modules) == {
        "videoitg.launch.ports", "videoitg.launch.shm", "videoitg.front", "videoitg.launch.x",
        "videoitg.decode.dali", "videoitg.decode"}
    assert module_imports("videoitg.python_backend.grounding", "from .responses import x\nfrom . import params\n",
                          modules) == {"videoitg.python_backend.responses", "videoitg.python_backend.params"}
    lazy = ('_LAZY = {"Scorer": ("videoitg.decode.dali", "X")}\n'
            'importlib.import_module("videoitg.launch.shm")\nHELP = "see videoitg.front"\n')
    assert module_imports("videoitg", lazy, modules, is_package=True) == {"videoitg.decode.dali", "videoitg.launch.shm"}


def test_the_namespace_maps_each_folder() -> None:
    modules = package_modules()
    assert {"videoitg.train.data", "videoitg.python_backend.params", "videoitg.engine_build.build",
            "videoitg.decode.dali", "videoitg.launch.server", "videoitg.commands.cli"} <= modules.keys()
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
    graph = {"videoitg.decode.dali": {"videoitg.engines.runtimes"}, "videoitg.repository.generator":
             {"videoitg.python_backend.params", "videoitg.contract.protocol"}, "videoitg.engines.runtimes": set(),
             "videoitg.python_backend.params": {"videoitg.contract.protocol", "videoitg.pipeline.scorer"}}
    assert layer_violations(graph) == [
        "videoitg.decode.dali (decode) imports videoitg.engines.runtimes (engines)",
        "videoitg.repository.generator (repository) imports videoitg.python_backend.params (python_backend)"]


# ---- the client and the launcher ----------------------------------------------------------------------------------
def test_the_client_reaches_neither_the_front_nor_the_launcher() -> None:
    graph = import_graph()
    client = [m for m in graph if m.startswith("videoitg.client.")]
    assert {"videoitg.client.kserve", "videoitg.client.routing"} <= set(client)
    for side in client:
        reached = sorted(m for m in reachable(graph, side) if m.startswith(("videoitg.launch", "videoitg.front")))
        assert not reached, f"{side} reaches {reached}"


def test_only_procfs_reads_proc() -> None:
    readers = sorted(str(p.relative_to(ROOT / "videoitg")) for folder in ("launch", "front", "client", "repository")
                     for p in (ROOT / "videoitg" / folder).rglob("*.py")
                     if re.search(r"""["']/proc\b""", p.read_text()))
    assert readers == ["launch/procfs.py"]


# ---- the tests ----------------------------------------------------------------------------------------------------
def test_no_test_module_imports_another() -> None:
    """Shared test code lives in tests/support/; a test module never imports another test module."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names
                      if n.startswith("tests.") and n.rpartition(".")[2].startswith("test_")]
    assert not found, found
