"""The python-backend models' metrics on Triton's /metrics: each model's requests by outcome (`RequestCounters`),
the top-level model's cache and load (`BlsMetrics`), one-metric families (`OneMetric`: a step's runtime, damaged
cache entries), the pooled decode step's own time (`DecodeTimes`), and a model's end (`finalized`: its metrics
closed before the stub exits)."""

from __future__ import annotations

import gc
from typing import Any

import triton_python_backend_utils as pb_utils

from videoitg.model.files import digest_cache_damage

from .errors import rejection_reason, rejection_reason_of_message
from .scheduling import NotCachedError


class RequestCounters:
    """`videoitg_requests{model, outcome}`: Triton 2.51's python backend reports a request as a success even when
    its response carries an error, so `nv_inference_request_failure` misses per-request errors; these count them.
    Outcomes: success; rejected, with `reason` the error class (`errors.rejection_reason`): the client's input was
    at fault (a hostile reference, a non-video upload); failure: a fault of the service, what an alert fires on;
    and (top-level model) not_cached: a digest-first request for a video this server has not cached, the
    protocol's expected first answer (the client sends the bytes next), not a failure.
    The families must outlive their metrics, so both are kept here."""

    OUTCOMES = ("success", "failure", "not_cached")

    def __init__(self, model: str) -> None:
        fam = pb_utils.MetricFamily
        self.model = model
        self.family = fam("videoitg_requests", "requests answered, by outcome", fam.COUNTER)
        self.metrics = {o: self.family.Metric({"model": model, "outcome": o}) for o in self.OUTCOMES}
        self.rejected: dict[str, Any] = {}  # reason -> its metric, made at its first use

    def close(self) -> None:
        """Metrics before their family: the stub crashes at exit if a family dies first."""
        self.metrics.clear()
        self.rejected.clear()
        del self.family

    def reject(self, reason: str, n: int = 1) -> None:
        if reason not in self.rejected:
            self.rejected[reason] = self.family.Metric({"model": self.model, "outcome": "rejected", "reason": reason})
        self.rejected[reason].increment(n)

    def record(self, exc: BaseException | None) -> None:
        """One answered request: None on success, else the error it was answered with. Once closed (the model
        unloading, a request still answered by a thread of its own), nothing is counted."""
        if not self.metrics:
            return
        if exc is not None and not isinstance(exc, NotCachedError) and (reason := rejection_reason(exc)):
            self.reject(reason)
            return
        outcome = "success" if exc is None else "not_cached" if isinstance(exc, NotCachedError) else "failure"
        self.metrics[outcome].increment(1)

    def count(self, responses: list[Any]) -> list[Any]:
        if not self.metrics:  # closed: see `record`
            return responses
        ok = 0
        for r in responses:
            if not r.has_error():
                ok += 1
            elif reason := rejection_reason_of_message(r.error().message()):
                self.reject(reason)
            else:
                self.metrics["failure"].increment(1)
        if ok:
            self.metrics["success"].increment(ok)
        return responses


class BlsMetrics:
    """The top-level model's metrics on Triton's /metrics, next to nv_inference_request_success/failure. The
    families must outlive their metrics, so both are kept here and released in that order."""

    def __init__(self, model: str) -> None:
        fam = pb_utils.MetricFamily
        self.families = [
            fam("videoitg_feature_cache_hits", "visual-feature cache hits", fam.COUNTER),
            fam("videoitg_feature_cache_misses", "visual-feature cache misses", fam.COUNTER),
            fam("videoitg_feature_cache_bytes", "bytes held by the visual-feature cache", fam.GAUGE),
            fam("videoitg_feature_cache_entries", "videos held by the visual-feature cache", fam.GAUGE),
            # The load signal (autoscaling): requests this model is serving. Triton's own pending count stays near
            # zero because execute hands each request to a task at once.
            fam("videoitg_requests_in_flight", "requests being served (cold or cache hit)", fam.GAUGE),
            fam("videoitg_cold_videos_in_flight", "videos being decoded and encoded", fam.GAUGE),
            fam("videoitg_requests_waiting", "requests waiting in the line for a slot (up to 5 s)", fam.GAUGE),
        ]
        self.hits, self.misses, self.bytes, self.entries, self.requests, self.cold, self.waiting = (
            f.Metric({"model": model}) for f in self.families)

    def update(self, hit: bool | None, cold: int, cache_bytes: int, cache_entries: int) -> None:
        if hit is not None:
            (self.hits if hit else self.misses).increment(1)
        self.cold.set(cold)
        self.bytes.set(cache_bytes)
        self.entries.set(cache_entries)

    def close(self) -> None:
        del self.hits, self.misses, self.bytes, self.entries, self.requests, self.cold, self.waiting
        del self.families


class OneMetric:
    """One labelled metric of a family of its own on Triton's /metrics (`kind`: "COUNTER" or "GAUGE"), the family
    kept so it outlives the metric."""

    def __init__(self, name: str, description: str, kind: str, labels: dict[str, str]) -> None:
        fam = pb_utils.MetricFamily
        self.family = fam(name, description, getattr(fam, kind))
        self.metric = self.family.Metric(labels)

    def close(self) -> None:
        """The metric before its family: the stub crashes at exit if a family dies first."""
        del self.metric
        del self.family


class DecodeTimes:
    """`videoitg_decode_wait_us` and `videoitg_decode_work_us` {model}: microseconds the pooled (NVDEC) decode
    step's videos waited for a thread of their own, and took there (to their last answer), summed. Its `execute`
    returns at once, so tritonserver's statistics of the step hold only the hand-off (`videoitg.perf.stats.split`)."""

    def __init__(self, model: str) -> None:
        self.wait = OneMetric("videoitg_decode_wait_us", "microseconds the pooled decode step's videos waited for "
                              "a thread", "COUNTER", {"model": model})
        self.work = OneMetric("videoitg_decode_work_us", "microseconds the pooled decode step's videos took on their "
                              "thread", "COUNTER", {"model": model})

    def add(self, wait_s: float, work_s: float) -> None:
        self.wait.metric.increment(wait_s * 1e6)
        self.work.metric.increment(work_s * 1e6)

    def close(self) -> None:
        self.wait.close()
        self.work.close()


def step_runtime_metric(model: str, runtime: str) -> OneMetric:
    """`videoitg_step_runtime{model=..., runtime=...} 1`: which runtime answers a step."""
    m = OneMetric("videoitg_step_runtime", "the runtime a step runs on (1 for the one in use)", "GAUGE",
                  {"model": model, "runtime": runtime})
    m.metric.set(1)
    return m


def damage_metric(model: str) -> OneMetric:
    """`videoitg_cache_entries_damaged{model, cache="file_digests"}`: entries of the checkpoint digest cache
    ($VIDEOITG_HOME/file-digests.json) this model's process found damaged while it loaded (each ignored, its file
    hashed again and the entry rewritten: `videoitg.model.files.cached_weight_hash`). Made once the model's
    checkpoint identity is taken."""
    m = OneMetric("videoitg_cache_entries_damaged", "damaged cache entries found, ignored and rewritten", "COUNTER",
                  {"model": model, "cache": "file_digests"})
    m.metric.increment(digest_cache_damage())
    return m


def finalized(*metrics: Any) -> None:
    """The end of a model's `finalize`: its metric families closed, then every object alive exempted from garbage
    collection (`gc.freeze`). The stub process exits next, and Python's last collection of a heap holding torch is
    most of what unloading a model waits for."""
    for m in metrics:
        m.close()
    gc.freeze()
