"""Where a request's time goes, per step, from tritonserver's own per-model statistics (KServe's statistics
extension: `/v2/models/<model>/stats`), read before and after a measurement and differenced.

Each step's queue and compute time (compute: input + inference + output) is divided by the top-level model's
requests in the same span, so a step is charged what it cost per client request however many calls it took. The
client's mean latency less the steps' sum is `other`: the top-level model's own work (digest, cache, selection),
the front and the network. A decode step that streams its frames while the vision step already runs (a decoupled
step) overlaps the vision step: the steps' sum may then exceed the latency, by at most the overlap (`overlap_ms`),
and `other` is 0.

A pooled NVDEC decode answers from its own threads after its `execute` returned: tritonserver's statistics of such
a step hold only the hand-off. The step counts its videos' wait for a thread and their decode itself
(`DECODE_TIMES` on the metrics port), and the split adds them to its queue and compute; where they cannot be
read, the decode is in `other` and the split says so (`decode_outside_compute`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from videoitg.contract.protocol import DECODE, GROUNDING, TOP, VISION

STEPS = (DECODE, VISION, GROUNDING)  # the BLS repository's steps, in a request's order
COMPUTE = ("compute_input", "compute_infer", "compute_output")
DECODE_TIMES = ("videoitg_decode_wait_us", "videoitg_decode_work_us")  # the pooled decode step's own, summed


@dataclass(frozen=True)
class Reading:
    """One model's counters at one moment: requests answered, nanoseconds queued and computing."""

    requests: int
    queue_ns: int
    compute_ns: int

    @classmethod
    def of(cls, stats: dict[str, Any]) -> Reading:
        s = stats.get("inference_stats") or {}

        def ns(key: str) -> int:
            return int((s.get(key) or {}).get("ns", 0))

        return cls(int((s.get("success") or {}).get("count", 0)), ns("queue"), sum(ns(k) for k in COMPUTE))

    def __sub__(self, other: Reading) -> Reading:
        return Reading(self.requests - other.requests, self.queue_ns - other.queue_ns,
                       self.compute_ns - other.compute_ns)


def read(client: Any, models: tuple[str, ...]) -> dict[str, Reading]:
    """Each model's counters now (`client`: a `VideoITGClient`); a model the server does not have is left out (an
    ensemble's steps differ)."""
    out = {}
    for m in models:
        try:
            out[m] = Reading.of(client.statistics(m))
        except Exception:  # not served here
            continue
    return out


def split(before: dict[str, Reading], after: dict[str, Reading], mean_latency_ms: float,
          top: str = TOP, decode_own_us: tuple[float, float] | None = None) -> dict[str, Any]:
    """Per client request between two readings: each step's queue and compute ms, `other_ms` (the latency the steps
    do not account for), `overlap_ms` (steps' sum beyond the latency: a streamed decode overlapping the vision
    step), and the number of requests the top-level model answered in between. `decode_own_us`: the pooled
    decode step's own wait and work in between (`DECODE_TIMES`), added to its queue and compute."""
    n = (after[top] - before[top]).requests if top in after and top in before else 0
    steps: dict[str, dict[str, float]] = {}
    for m in STEPS:
        if m in before and m in after:
            d = after[m] - before[m]
            own = decode_own_us if m == DECODE and decode_own_us is not None else (0.0, 0.0)
            steps[m] = {"calls_per_request": d.requests / n if n else 0.0,
                        "queue_ms": (d.queue_ns / 1e6 + own[0] / 1e3) / n if n else 0.0,
                        "compute_ms": (d.compute_ns / 1e6 + own[1] / 1e3) / n if n else 0.0}
    total = sum(s["queue_ms"] + s["compute_ms"] for s in steps.values())
    return {"requests": n, "steps": steps, "steps_ms": total, "other_ms": max(0.0, mean_latency_ms - total),
            "overlap_ms": max(0.0, total - mean_latency_ms), "latency_ms": mean_latency_ms,
            "decode_own": decode_own_us is not None}


def decode_outside_compute(decode_config: dict[str, Any]) -> bool:
    """Whether the decode step answers from threads of its own after `execute` returns (decoupled, on a GPU
    instance: the NVDEC decode pool), so tritonserver's compute time of it is only the hand-off."""
    decoupled = bool((decode_config.get("model_transaction_policy") or {}).get("decoupled"))
    gpu = any(g.get("kind") == "KIND_GPU" for g in decode_config.get("instance_group") or [])
    return decoupled and gpu
