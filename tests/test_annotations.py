"""Every function of the package annotates its parameters (the `videoitg` namespace, as tests/test_imports.py reads
it): a reader and a type checker see what each takes without reading its body."""

from __future__ import annotations

import ast

from tests.support.source import package_modules


def unannotated(source: str) -> list[str]:
    """'function(parameter)' for each parameter without an annotation (self and cls excepted)."""
    out = []
    for f in ast.walk(ast.parse(source)):
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = f.args
            for p in [*a.posonlyargs, *a.args, *filter(None, [a.vararg]), *a.kwonlyargs, *filter(None, [a.kwarg])]:
                if p.arg not in ("self", "cls") and p.annotation is None:
                    out.append(f"{f.name}({p.arg})")
    return out


def test_the_check_sees_every_kind_of_parameter() -> None:
    assert unannotated("def f(a, /, b: int, *c, d, **e): pass\nclass K:\n    def m(self, x): pass") == [
        "f(a)", "f(c)", "f(d)", "f(e)", "m(x)"]


def test_every_parameter_is_annotated() -> None:
    missing = {name: found for name, path in package_modules().items() if (found := unannotated(path.read_text()))}
    assert not missing, missing
