"""The house's sizes a newcomer relies on: docs a reader finishes (every page at most 25 KB, docs/ at most 250 KB of
Markdown), no python_backend file over 250 lines, at most 16 modules at the package root, and the launcher's classes
at most about 300 lines each."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE_BYTES, DOCS_BYTES = 25_000, 250_000
BACKEND_LINES, ROOT_MODULES, LAUNCH_CLASS_LINES = 250, 16, 320


def test_docs_are_pages_a_reader_finishes() -> None:
    pages = {p.relative_to(ROOT): p.stat().st_size for p in (ROOT / "docs").rglob("*.md")}
    assert not {p: n for p, n in pages.items() if n > PAGE_BYTES}
    assert sum(pages.values()) <= DOCS_BYTES, sum(pages.values())


def test_no_python_backend_file_over_its_bound() -> None:
    long = {p.name: n for p in (ROOT / "python_backend").glob("*.py")
            if (n := len(p.read_text().splitlines())) > BACKEND_LINES}
    assert not long


def test_the_package_root_holds_few_modules() -> None:
    modules = [p.name for p in (ROOT / "videoitg").glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(modules) <= ROOT_MODULES, sorted(modules)


def test_the_launchers_classes_are_split_along_their_concerns() -> None:
    long = {}
    for path in (ROOT / "videoitg" / "launch").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and (n := (node.end_lineno or 0) - node.lineno + 1) > LAUNCH_CLASS_LINES:
                long[f"{path.name}:{node.name}"] = n
    assert not long
