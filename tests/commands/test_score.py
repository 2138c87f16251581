"""`videoitg score`, in-process and `--server`: the record and the printout equal the in-process ones; the
adaptive selection flags."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from tests.support.compare import SCORED, assert_picks_close, assert_records_close
from tests.support.server import (
    skip_without_tritonserver,
)
from videoitg.commands.cli import main
from videoitg.request.options import RequestOptions, select

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


@pytest.mark.parametrize("where", ["in-process", "server"])
def test_score_picks_adaptively_with_min_score_and_coverage(where, server, scorer, sample, tmp_path, capsys) -> None:
    """`--min-score` and `--coverage` pick fewer than the top-K where the scores say so, in-process and through the
    server alike: the record's `top_k` and the printout are `select`'s frames (the sample's scores: eight frames over
    0.98, the rest under 0.005)."""
    path, data, instruction = sample
    ref = scorer.score(data, instruction)
    remote = ["--server", server.grpc_url] if where == "server" else []
    for flags, options in ((["--min-score", "0.5"], RequestOptions(min_score=0.5)),
                           (["--coverage", "0.2", "--top-k", "12"], RequestOptions(coverage=0.2, top_k=12))):
        out = tmp_path / f"{where}-{flags[0]}.jsonl"
        assert main(["score", str(path), "-i", instruction, *flags, "--output", str(out), *remote]) == 0
        picked = select(ref, options)
        assert f"top-{len(picked)} in chronological order" in capsys.readouterr().out
        assert_picks_close(json.loads(out.read_text())["top_k"], [ref.frame_indices[i] for i in picked], ref.logits,
                           "released")
    assert main(["score", str(path), "-i", instruction, "--coverage", "1.5"]) == 2
    assert "--coverage must be a number from 0 to 1, got 1.5" in capsys.readouterr().err
