"""The batch Triton backend against the real tritonserver (CPU, python backend, tiny checkpoint): a unit's rows
come back equal to the in-process scores, the server's feature cache is hit for the unit's later rows, and a bad
video fails only its own rows. The Ray plumbing around a backend is covered by test_batch_ray.py; this checks the
client seam without paying for a second Ray start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from tests.support.batch import INSTRUCTIONS, make_clip  # noqa: E402
from tests.support.compare import SCORED, assert_records_close  # noqa: E402
from tests.support.server import served, skip_without_tritonserver  # noqa: E402
from videoitg.batch.backends import BackendSpec  # noqa: E402
from videoitg.batch.manifest import Row  # noqa: E402
from videoitg.serving.repository import RepoSpec  # noqa: E402

pytestmark = pytest.mark.server

skip_without_tritonserver()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from served(RepoSpec(target="cpu"), tmp_path_factory)


def test_triton_backend_unit_equals_in_process_and_isolates_a_bad_video(server, tmp_path):
    from videoitg.batch.triton_backend import TritonBackend
    from videoitg.defaults import default_checkpoint
    from videoitg.pipeline import Scorer

    video = str(make_clip(tmp_path / "v.mp4", seed=3))  # 6 s at 4 fps: the server's default sampling keeps 6
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    rows = [Row(f"r{i}", i + 1, video, q, doc_id=i) for i, q in enumerate(INSTRUCTIONS[:3])]
    rows.append(Row("bad", 9, str(bad), INSTRUCTIONS[0], doc_id=9))
    backend = TritonBackend(BackendSpec(kind="triton", servers=(server.grpc_url,), max_in_flight=2, top_k=3))
    out = backend.score_unit(rows)
    assert [o.ok for o in out] == [True, True, True, False]
    assert out[3].record["stage"] == "server" and out[3].record["reason"]
    # The first request of the unit fills the server's cache; with 2 in flight the second may race it.
    assert sum(o.cache_hit for o in out[:3]) >= 1
    ref = Scorer(default_checkpoint())
    for o, r in zip(out[:3], rows[:3], strict=True):
        want = ref.score(Path(r.video), r.instruction).to_record(doc_id=r.doc_id, video_path=r.video, top_k=3)
        assert o.record["row_id"] == r.row_id
        assert_records_close(o.record, want, fields=(*SCORED, "num_frames", "contexts", "video_path", "doc_id"))
