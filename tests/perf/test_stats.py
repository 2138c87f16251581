"""Where a request's time goes (`videoitg.perf.stats`), from hand-made statistics: each step charged per client
request, the rest of the latency, and a streamed decode's overlap."""

from __future__ import annotations

import pytest

from videoitg.perf import stats


def entry(success: int, queue_ns: int, compute: tuple[int, int, int]) -> dict:
    keys = ("compute_input", "compute_infer", "compute_output")
    return {"inference_stats": {"success": {"count": success}, "queue": {"count": success, "ns": queue_ns},
                                **{k: {"count": success, "ns": ns} for k, ns in zip(keys, compute, strict=True)}}}


def test_each_step_is_charged_per_client_request_and_the_rest_is_other() -> None:
    before = {m: stats.Reading.of(entry(10, 0, (0, 0, 0))) for m in ("videoitg", *stats.STEPS)}
    after = {"videoitg": stats.Reading.of(entry(14, 4_000_000, (0, 8_000_000, 0))),  # 4 requests answered
             "videoitg_decode": stats.Reading.of(entry(14, 8_000_000, (0, 80_000_000, 0))),  # 2 + 20 ms each
             "videoitg_vision": stats.Reading.of(entry(18, 0, (4_000_000, 36_000_000, 0))),  # 2 calls a request
             "videoitg_grounding": stats.Reading.of(entry(14, 0, (0, 20_000_000, 4_000_000)))}
    s = stats.split(before, after, mean_latency_ms=50.0)
    assert s["requests"] == 4
    assert s["steps"]["videoitg_decode"] == {"calls_per_request": 1.0, "queue_ms": 2.0, "compute_ms": 20.0}
    assert s["steps"]["videoitg_vision"] == {"calls_per_request": 2.0, "queue_ms": 0.0, "compute_ms": 10.0}
    assert s["steps"]["videoitg_grounding"]["compute_ms"] == 6.0
    assert s["steps_ms"] == 38.0 and s["other_ms"] == 12.0 and s["overlap_ms"] == 0.0
    # a streamed decode overlapping the vision step: the steps exceed the latency by the overlap, other is 0
    s = stats.split(before, after, mean_latency_ms=30.0)
    assert s["other_ms"] == 0.0 and s["overlap_ms"] == 8.0


def test_a_model_the_server_lacks_is_left_out() -> None:
    class Client:
        def statistics(self, model: str) -> dict:
            if model == "videoitg_decode":
                raise RuntimeError("unknown model")
            return entry(3, 0, (0, 0, 0))

    assert set(stats.read(Client(), ("videoitg", "videoitg_decode", "videoitg_vision"))) == {"videoitg",
                                                                                           "videoitg_vision"}


def test_a_pooled_decode_answers_outside_its_compute_time() -> None:
    gpu = {"model_transaction_policy": {"decoupled": True}, "instance_group": [{"kind": "KIND_GPU", "count": 1}]}
    assert stats.decode_outside_compute(gpu)
    assert not stats.decode_outside_compute({**gpu, "instance_group": [{"kind": "KIND_CPU"}]})
    assert not stats.decode_outside_compute({"instance_group": [{"kind": "KIND_GPU"}]})


def test_a_pooled_decodes_own_wait_and_work_are_its_queue_and_compute() -> None:
    """Its `execute` returns at once: tritonserver holds the hand-off only, the step's counters the rest."""
    before = {m: stats.Reading.of(entry(10, 0, (0, 0, 0))) for m in ("videoitg", *stats.STEPS)}
    after = {"videoitg": stats.Reading.of(entry(14, 0, (0, 4_000_000, 0))),
             "videoitg_decode": stats.Reading.of(entry(14, 400_000, (0, 1_600_000, 0))),  # 0.1 + 0.4 ms each
             "videoitg_vision": stats.Reading.of(entry(14, 0, (0, 40_000_000, 0))),
             "videoitg_grounding": stats.Reading.of(entry(14, 0, (0, 20_000_000, 0)))}
    s = stats.split(before, after, mean_latency_ms=60.0, decode_own_us=(8_000.0, 60_000.0))  # 2 + 15 ms each
    assert s["steps"]["videoitg_decode"] == pytest.approx({"calls_per_request": 1.0, "queue_ms": 2.1,
                                                           "compute_ms": 15.4})
    assert s["decode_own"] and not stats.split(before, after, 60.0)["decode_own"]
    assert stats.split(before, after, 60.0)["steps"]["videoitg_decode"]["compute_ms"] == pytest.approx(0.4)
