"""Helpers the tests share: clips, tiny checkpoints, training data, batch manifests, served repositories, Ray
sessions and fuzzing. Imported as `tests.support.<name>`; pytest fixtures shared by several modules are in
`tests/conftest.py`."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
DATA = ROOT / "tests" / "data"  # small files the tests read
