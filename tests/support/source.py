"""Reading the project's own source: its modules (the `videoitg` namespace laid over its folders by pyproject's
package-dir), and what a name in the code refers to, for the tests that check every call into a library against
that library's API."""

from __future__ import annotations

import ast
from pathlib import Path

import tomllib

from tests.support import ROOT


def namespace_folders() -> dict[str, Path]:
    """The `videoitg` namespace: package -> its folder (pyproject.toml's package-dir)."""
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {package: ROOT / folder for package, folder in package_dir.items()}


def package_modules(folders: dict[str, Path] | None = None) -> dict[str, Path]:
    """Every module of the namespace -> its file (a package is its __init__.py)."""
    folders = folders or namespace_folders()
    nested = {name.rpartition(".")[2] for name in folders if name != "videoitg"}
    out: dict[str, Path] = {}
    for package, folder in folders.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if package == "videoitg" and parts[0] in nested:  # a folder of that name inside videoitg/ is not ours
                continue
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


def dotted(node: ast.AST, calls: bool = False) -> str | None:
    """`a.b.c` for a name or an attribute chain; with `calls`, a call in the chain reads `f()`
    (`trt.Runtime(logger).deserialize_cuda_engine` -> `trt.Runtime().deserialize_cuda_engine`). None otherwise."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value, calls)
        return f"{base}.{node.attr}" if base else None
    if calls and isinstance(node, ast.Call):
        base = dotted(node.func, calls)
        return f"{base}()" if base else None
    return None
