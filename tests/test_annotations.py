"""Every function of the package annotates its parameters (the `videoitg` namespace, as tests/test_imports.py reads
it): a reader and a type checker see what each takes without reading its body."""

from __future__ import annotations

import ast

from tests.support.source import dotted, package_modules


def unannotated(source: str) -> list[str]:
    """'function(parameter)' for each parameter without an annotation (self and cls excepted). A Triton kernel
    (`@triton.jit`) is Triton's language, not Python's: its pointers and scalars are typed by what each launch
    passes, an annotation there names a Triton type (`tl.constexpr`), so it is left to Triton."""
    out = []
    for f in ast.walk(ast.parse(source)):
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and "triton.jit" not in map(dotted, f.decorator_list):
            a = f.args
            for p in [*a.posonlyargs, *a.args, *filter(None, [a.vararg]), *a.kwonlyargs, *filter(None, [a.kwarg])]:
                if p.arg not in ("self", "cls") and p.annotation is None:
                    out.append(f"{f.name}({p.arg})")
    return out


def test_the_check_sees_every_kind_of_parameter() -> None:
    assert unannotated("def f(a, /, b: int, *c, d, **e): pass\nclass K:\n    def m(self, x): pass") == [
        "f(a)", "f(c)", "f(d)", "f(e)", "m(x)"]
    assert unannotated("@triton.jit\ndef k(x_ptr, n, BLOCK: tl.constexpr): pass\n@jit\ndef g(x): pass") == ["g(x)"]


def test_every_parameter_is_annotated() -> None:
    missing = {name: found for name, path in package_modules().items() if (found := unannotated(path.read_text()))}
    assert not missing, missing
