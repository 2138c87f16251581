"""The batch Triton scorer against the real tritonserver (CPU, python backend, tiny checkpoint): a unit's rows
come back equal to the in-process scores, the server's feature cache is hit for the unit's later rows, and a bad
video fails only its own rows. The Ray plumbing around a scorer is covered by tests/batch/test_runner_ray.py; this
checks the client seam without paying for a second Ray start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from tests.support.batch import INSTRUCTIONS, make_clip
from tests.support.compare import SCORED, assert_records_close
from videoitg.batch.scorers import ScorerSpec
from videoitg.batch.servers import TritonScorer
from videoitg.manifest.rows import Row
from videoitg.request.options import RequestOptions

pytestmark = pytest.mark.server


def test_triton_scorer_unit_equals_in_process_and_isolates_a_bad_video(cpu_server, scorer, tmp_path):
    video = str(make_clip(tmp_path / "v.mp4", seed=3))  # 6 s at 4 fps: the server's default sampling keeps 6
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    rows = [Row(f"r{i}", i + 1, video, q, doc_id=i) for i, q in enumerate(INSTRUCTIONS[:3])]
    rows.append(Row("bad", 9, str(bad), INSTRUCTIONS[0], doc_id=9))
    triton = TritonScorer(ScorerSpec(kind="triton", servers=(cpu_server.grpc_url,), max_in_flight=2,
                                     options=RequestOptions(top_k=3)))
    out = triton.score_unit(rows)
    assert [o.ok for o in out] == [True, True, True, False]
    assert out[3].record["stage"] == "server" and out[3].record["reason"]
    # The first request of the unit fills the server's cache; with 2 in flight the second may race it.
    assert sum(o.cache_hit for o in out[:3]) >= 1
    for o, r in zip(out[:3], rows[:3], strict=True):
        ref = scorer.score(Path(r.video), r.instruction)
        want = ref.to_record(doc_id=r.doc_id, video_path=r.video, picked=ref.top_k_positions(3))
        assert o.record["row_id"] == r.row_id
        assert_records_close(o.record, want, fields=(*SCORED, "num_frames", "contexts", "video_path", "doc_id"))
