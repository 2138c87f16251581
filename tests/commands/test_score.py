"""`videoitg score --server`: the record and the printout equal the in-process ones."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from tests.support.compare import SCORED, assert_records_close
from tests.support.server import (
    skip_without_tritonserver,
)
from videoitg.commands.cli import main

pytestmark = pytest.mark.server

skip_without_tritonserver()


def test_score_command_through_the_server(server, scorer, sample, tmp_path, capsys) -> None:
    """`videoitg score --server` writes the same results.jsonl record as the in-process path, and the plot."""

    path, data, instruction = sample
    out, png = tmp_path / "r.jsonl", tmp_path / "t.png"
    assert main(["score", str(path), "-i", instruction, "--server", server.grpc_url, "--protocol", "grpc",
                 "--top-k", "5", "--doc-id", "3", "--output", str(out), "--plot", str(png)]) == 0
    assert "top-5 in chronological order" in capsys.readouterr().out
    rec = json.loads(out.read_text())
    ref = scorer.score(data, instruction)
    want = ref.to_record("3", str(path), picked=ref.top_k_positions(5))
    assert_records_close(rec, want, fields=SCORED)
    assert png.read_bytes()[:4] == b"\x89PNG"
