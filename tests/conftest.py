"""Fixtures shared by several test modules. Helpers (clips, tiny checkpoints, served repositories, ...) are plain
functions in `tests/support/`."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def scorer():  # type: ignore[no-untyped-def]
    """The in-process scorer on the embedded default checkpoint, with the servers' default sampling: what a served
    answer is compared with."""
    from videoitg.defaults import default_checkpoint
    from videoitg.pipeline import Scorer

    return Scorer(default_checkpoint())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh VIDEOITG_HOME (generated checkpoints and sample videos go there)."""
    monkeypatch.setenv("VIDEOITG_HOME", str(tmp_path / "home"))
    return tmp_path
