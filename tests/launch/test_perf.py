"""`videoitg perf` (`videoitg.launch.perf`): perf_analyzer with real videos, no library path or input file set
by hand."""

from __future__ import annotations

import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from tests.support.server import (
    skip_without_tritonserver,
)
from videoitg.commands.cli import main

pytestmark = pytest.mark.server

skip_without_tritonserver()


def test_perf_command_runs_perf_analyzer_with_real_videos(server, sample, tmp_path, capsys) -> None:
    """`videoitg perf`: no library path or input file set by hand; perf_analyzer reports a measured row."""
    path, _, instruction = sample
    rc = main(["perf", str(path), "--server", server.grpc_url, "-i", instruction, "--concurrency", "1:1",
               "--measurement-interval", "1000", "--stability", "100", "--max-trials", "40", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    row = [ln.split() for ln in out.splitlines() if ln.strip().startswith("1 ")][-1]
    assert float(row[1]) > 0  # inferences per second
    assert (tmp_path / "input.json").is_file() and (tmp_path / "perf.csv").is_file()
