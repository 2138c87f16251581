"""Fixtures shared by several test modules. Helpers (clips, tiny checkpoints, served repositories, ...) are plain
functions in `tests/support/`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.model import one_torch_thread
from tests.support.server import served, skip_without_tritonserver
from videoitg.defaults import default_checkpoint
from videoitg.pipeline import Scorer
from videoitg.serving.repository import RepoSpec
from videoitg.serving.server import TritonServer


@pytest.fixture(scope="session")
def scorer():
    """The in-process scorer on the embedded default checkpoint, with the servers' default sampling: what a served
    answer is compared with."""
    # torch-heavy: imported when a test asks for the scorer, not by every collection
    return Scorer(default_checkpoint())


@pytest.fixture(scope="session")
def cpu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """One real tritonserver on the default CPU bls repository (embedded checkpoint, feature cache on) for every
    module that only sends it ordinary requests. A user never stops or reconfigures it, reads its counters as
    deltas, and sends videos no other user sends when it needs a cold cache."""
    skip_without_tritonserver()
    yield from served(RepoSpec(target="cpu"), tmp_path_factory)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test (`one_torch_thread`)."""
    with one_torch_thread():
        yield


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh VIDEOITG_HOME (generated checkpoints and sample videos go there)."""
    monkeypatch.setenv("VIDEOITG_HOME", str(tmp_path / "home"))
    return tmp_path
