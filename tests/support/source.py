"""Reading the project's own source: what a name in the code refers to, for the tests that check every call into a
library against that library's API."""

from __future__ import annotations

import ast


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
