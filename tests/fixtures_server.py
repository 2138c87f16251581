"""Shared by the tests that start the real tritonserver: skip a module where none is installed, and one started
server per module on a fresh repository."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from videoitg.serving import binaries
from videoitg.serving.repository import RepoSpec, build_repository
from videoitg.serving.server import ServerOptions, TritonServer


def skip_without_tritonserver() -> None:
    """At module level: skip the whole module where no tritonserver is found."""
    try:
        binaries.find_tritonserver()
    except binaries.ServingSetupError as e:  # pragma: no cover - the serve extra is part of [all]
        pytest.skip(f"no tritonserver: {e}", allow_module_level=True)


def served(spec: RepoSpec, tmp_path_factory: pytest.TempPathFactory,
           options: ServerOptions | None = None) -> Iterator[TritonServer]:
    """For a fixture (`yield from served(...)`): a started server on a new repository of `spec`, which must stop
    cleanly (exit code 0) when the fixture ends."""
    repo = build_repository(spec, tmp_path_factory.mktemp("repo"))
    srv = TritonServer(repo, options or ServerOptions(), log_path=tmp_path_factory.mktemp("log") / "tritonserver.log")
    srv.start(timeout_s=240)
    yield srv
    code = srv.stop()
    assert code == 0, f"tritonserver did not exit cleanly ({code}):\n{srv.log_tail()}"
