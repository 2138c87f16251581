"""The front's package: its modules import each other one way (the checks at the bottom, the ports above, the
process on top), none is over 500 lines, and importing it patches no library class."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.support import ROOT

FRONT = ROOT / "videoitg" / "front"
PREFIX = "videoitg.front."
# Bottom to top: each module may import only those before it.
ORDER = ("policy", "grpc_policy", "bounds", "config", "process", "tritonserver", "lost", "tls", "connections", "http",
         "answer", "grpc_frames", "grpc_calls", "grpc", "webpage", "main", "__main__")


def front_imports(path: str) -> set[str]:
    """The front's modules a module imports, anywhere in it."""
    out: set[str] = set()
    for node in ast.walk(ast.parse((FRONT / f"{path}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PREFIX.rstrip("."):
                out |= {a.name for a in node.names}
            elif node.module.startswith(PREFIX):
                out.add(node.module[len(PREFIX):])
        elif isinstance(node, ast.Import):
            out |= {a.name[len(PREFIX):] for a in node.names if a.name.startswith(PREFIX)}
    return out


def test_every_module_is_placed_and_imports_only_those_below_it() -> None:
    assert {p.stem for p in FRONT.glob("*.py")} == {*ORDER, "__init__"}
    for i, name in enumerate(ORDER):
        above = front_imports(name) - set(ORDER[:i])
        assert not above, f"{name} imports {sorted(above)}, above it or not in the package"
    assert front_imports("__init__") == set()


def test_no_module_is_over_500_lines() -> None:
    long = {p.name: n for p in FRONT.glob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_importing_the_front_patches_no_library_class() -> None:
    pytest.importorskip("h2", reason="the serve extra is not installed")
    check = ("import hyperframe.frame as f; before = f.DataFrame._body_repr; import videoitg.front.main; "
             "assert f.DataFrame._body_repr is before")
    subprocess.run([sys.executable, "-c", check], check=True, cwd=ROOT, timeout=120)
