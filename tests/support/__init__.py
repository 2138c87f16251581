"""Helpers the tests share: clips, tiny checkpoints, training data, batch manifests, served repositories, Ray
sessions and fuzzing. Imported as `tests.support.<name>`; pytest fixtures shared by several modules are in
`tests/conftest.py`."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
DATA = ROOT / "tests" / "data"  # small files the tests read


def require(modules: tuple[str, ...], reason: str) -> None:
    """At module level: skip the module where one of `modules` is not installed, without importing them. A test
    module is imported by every worker's collection; `pytest.importorskip` there costs each worker the import (about
    2 s for ray.data, 1 s for openai), which only the worker that runs the module's tests needs."""
    import importlib.util

    import pytest

    try:
        found = all(importlib.util.find_spec(m) is not None for m in modules)
    except ModuleNotFoundError:  # a parent package is missing
        found = False
    if not found:
        pytest.skip(reason, allow_module_level=True)
