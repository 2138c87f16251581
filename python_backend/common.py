"""Triton glue shared by the python-backend models: parameters, tensors in and out (DLPack, so a GPU tensor stays on
the GPU), per-request error responses (in the format of `errors`) and the models' metrics. torch is imported where a
tensor needs it (on a GPU, or in bfloat16), so the top-level model on a CPU runs without it."""

from __future__ import annotations

import gc
import json
import os
import traceback
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import triton_python_backend_utils as pb_utils

from videoitg.admission import OverloadedError
from videoitg.contract.parameters import ModelParameters
from videoitg.errors import InputError
from videoitg.model.files import digest_cache_damage

from .errors import (
    StepError,
    client_fault,
    drop_traceback,
    error_message,
    rejection_reason,
    rejection_reason_of_message,
)
from .params import model_parameters
from .scheduling import NotCachedError

if TYPE_CHECKING:
    import torch

P = TypeVar("P", bound=ModelParameters)

# The longest a request waits for its steps before it is answered with StepTimeoutError naming the step that did not
# answer: just under the front's bound on an inference (300 s, `videoitg.front.config.FrontConfig.infer_timeout_s`),
# so a client hears which step hung instead of the front's "no answer". A step whose stub dies, is stopped or takes
# no request is ended much sooner by the launcher's watchdog (`videoitg.launch.supervise`; its call then fails with
# StepUnavailableError). Triton 2.51's own BLS `timeout` bounds only the time a request waits in a dynamic batcher's
# queue (where the step's queue policy allows the override), never a step that has taken the request.
STEP_WAIT_S = 290.0
# A BLS request's parameter naming the process that sent it ("<pid>:<start time>", `requester_token`): a decoupled
# step checks before each answer that its requester still lives (`Requester`).
REQUESTER = "videoitg_requester"


class StepUnavailableError(StepError):
    """A step could not answer: its process died (or was killed, stopped or wedged, then killed by the watchdog) or
    it was not loaded. The service's fault, and a passing one: UNAVAILABLE (retry)."""


class StepTimeoutError(StepError):
    """A step did not answer within the request's deadline (`STEP_WAIT_S`). UNAVAILABLE (retry)."""


def step_error(model: str, message: str) -> StepError:
    """The error a step's failed answer is raised as in the model that called it: the step's own error as it wrote
    it (`errors.error_message`: it names the step), or, for a message Triton wrote instead (a stub that died:
    "Stub process 'videoitg_decode_0_0' is not healthy."; a model being reloaded), StepUnavailableError naming the
    step."""
    if message.startswith(f"{model}: "):
        return StepError(message)
    return StepUnavailableError(f"{model}: {StepUnavailableError.__name__}: {message}")


def step_timeout(model: str, waited_s: float) -> StepTimeoutError:
    return StepTimeoutError(f"{model}: {StepTimeoutError.__name__}: no answer from the step within {waited_s:.0f} s "
                            "of the request's arrival")


def _proc_stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (proc(5) field 3 on: state, ppid, ...), None when the
    process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return None


@cache
def requester_token() -> str:
    """This process as a requester: its pid and start time (proc(5) field 22), so a pid used again by another
    process is not taken for it."""
    fields = _proc_stat("self")
    return f"{os.getpid()}:{fields[19] if fields else ''}"


class Requester:
    """Whether the requester of a decoupled request can still take its answers. A step that streams to a BLS
    requester whose stub died must stop: Triton 2.51 does not cancel the request (`is_cancelled` stays False), and a
    send to it blocks the step for ever (the caller's backend waits for the dead stub to take the answer). The
    requester's process is named in the request's `REQUESTER` parameter (its start time too, where its /proc could be
    read); a request without it (a client's own) is checked for cancellation only."""

    def __init__(self, request: Any, sender: Any) -> None:
        self.sender = sender
        try:
            token = str(json.loads(request.parameters() or "{}").get(REQUESTER, ""))
        except (ValueError, AttributeError):
            token = ""
        pid, _, started = token.partition(":")
        self.pid, self.started = (int(pid), started) if pid.isdigit() else (None, "")

    def gone(self) -> str | None:
        """Why no answer may be sent now (None: send it): the requester's process is gone (an answer would block),
        or the request was cancelled."""
        if self.pid is not None:
            fields = _proc_stat(self.pid)
            if fields is None or fields[0] in ("Z", "X") or (self.started and fields[19] != self.started):
                return f"its requester (process {self.pid}) is gone"
        if self.sender.is_cancelled():
            return "it was cancelled"
        return None


def setup(args: dict[str, Any], kind: type[P]) -> P:
    """The model's parameters, read as `kind` (`videoitg.contract.parameters`)."""
    return kind.from_parameters(model_parameters(args["model_config"]))


def finalized(*metrics: Any) -> None:
    """The end of a model's `finalize`: its metric families closed, then every object alive exempted from garbage
    collection (`gc.freeze`). The stub process exits next, and Python's last collection of a heap holding torch is
    most of what unloading a model waits for."""
    for m in metrics:
        m.close()
    gc.freeze()


def abandoned(requester: Requester, sender: Any, model: str) -> bool:
    """Whether a decoupled request's work ends here, unanswered: its requester is gone (nothing is sent: a send
    would block for ever), or it was cancelled (its final answer says so)."""
    why = requester.gone()
    if why is None:
        return False
    pb_utils.Logger.log_warn(f"{model}: a request ended unanswered: {why}")
    if requester.pid is None or why == "it was cancelled":
        response = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{model}: the request was cancelled",
                                                                         pb_utils.TritonError.CANCELLED))
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    return True


def error_code(exc: BaseException) -> Any:
    """The status a failed request gets: INVALID_ARG for the client's input (also when a step named it), NOT_FOUND
    for a video named by a digest this server has not cached (the client then sends the bytes), UNAVAILABLE when
    the server is busy or a step could not answer (retry later, or elsewhere), INTERNAL for anything else."""
    e = pb_utils.TritonError
    if isinstance(exc, NotCachedError):
        return e.NOT_FOUND
    if isinstance(exc, (OverloadedError, StepUnavailableError, StepTimeoutError)):
        return e.UNAVAILABLE
    return e.INVALID_ARG if client_fault(exc) else e.INTERNAL


def error(exc: BaseException, model: str) -> Any:
    """A response that fails this request only. Anything not ours is logged with its traceback; then the error
    keeps no frame (`drop_traceback`: a refused upload is not kept alive until a garbage collection)."""
    if not isinstance(exc, (InputError, StepError, NotCachedError, OverloadedError)):
        pb_utils.Logger.log_error(f"{model}: {''.join(traceback.format_exception(exc))}")
    response = pb_utils.InferenceResponse(error=pb_utils.TritonError(error_message(exc, model), error_code(exc)))
    drop_traceback(exc)
    return response


def respond_each(requests: list[Any], handle: Callable[[Any], Any], model: str) -> list[Any]:
    """One response per request, in order: `handle(request)`, or that request's own error, so one bad request
    never fails its batch-mates."""
    responses = []
    for request in requests:
        try:
            responses.append(handle(request))
        except Exception as e:
            responses.append(error(e, model))
    return responses


def input_numpy(request: Any, name: str) -> np.ndarray | None:
    """A (small) input on the host, None when absent."""
    t = pb_utils.get_input_tensor_by_name(request, name)
    return None if t is None else _host(t)


def request_inputs(request: Any) -> dict[str, np.ndarray]:
    """Every input the request holds, on the host, by name (an optional input it lacks is absent)."""
    return {t.name(): _host(t) for t in request.inputs()}


def _host(t: Any) -> np.ndarray:
    """On a GPU deployment a step's input may arrive in device memory (FORCE_CPU_ONLY_INPUT_TENSORS=no), where
    `as_numpy` cannot read it."""
    return t.as_numpy() if t.is_cpu() else _torch(t).cpu().numpy()


def _torch(t: Any) -> torch.Tensor:
    """A Triton tensor as a torch tensor, zero-copy, on whichever device it is."""
    from torch.utils.dlpack import from_dlpack

    return from_dlpack(t.to_dlpack())


def input_torch(request: Any, name: str) -> torch.Tensor:
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        raise InputError(f"{name} is missing")
    return _torch(t)


def output_torch(name: str, x: torch.Tensor) -> Any:
    """GPU tensors leave by DLPack (no copy, stay on device); CPU tensors through numpy (copied into the
    response's shared memory either way, and the stub then holds no foreign DLPack capsule), but bfloat16, which
    numpy has no type for."""
    import torch
    from torch.utils.dlpack import to_dlpack

    if x.device.type == "cpu" and x.dtype != torch.bfloat16:
        return pb_utils.Tensor(name, np.ascontiguousarray(x.detach().numpy()))
    return pb_utils.Tensor.from_dlpack(name, to_dlpack(x.contiguous()))


def output_numpy(name: str, x: np.ndarray) -> Any:
    return pb_utils.Tensor(name, np.ascontiguousarray(x))


def output_tensor(name: str, x: np.ndarray | torch.Tensor) -> Any:
    """A numpy array (`output_numpy`) or a torch tensor (`output_torch`) as a Triton tensor."""
    return output_numpy(name, x) if isinstance(x, np.ndarray) else output_torch(name, x)


def response_tensor(response: Any, name: str, host: bool = False) -> np.ndarray | torch.Tensor:
    """A step's output, without a copy: where `host` (its type has a numpy type: anything but bfloat16) and it is
    in host memory, a numpy array; else a torch tensor by DLPack (a GPU tensor stays on the GPU)."""
    t = pb_utils.get_output_tensor_by_name(response, name)
    return t.as_numpy() if host and t.is_cpu() else _torch(t)


def bytes_tensor(name: str, values: list[bytes | str], shape: tuple[int, ...] | None = None) -> Any:
    arr = np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=np.object_)
    return pb_utils.Tensor(name, arr.reshape(shape) if shape else arr)


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
            # The load signal (autoscaling): requests this model is serving. Triton's own pending count stays near
            # zero because execute hands each request to a task at once.
            fam("videoitg_requests_in_flight", "requests being served (cold or cache hit)", fam.GAUGE),
            fam("videoitg_cold_videos_in_flight", "videos being decoded and encoded", fam.GAUGE),
        ]
        self.hits, self.misses, self.bytes, self.requests, self.cold = (
            f.Metric({"model": model}) for f in self.families)

    def update(self, hit: bool | None, cold: int, cache_bytes: int) -> None:
        if hit is not None:
            (self.hits if hit else self.misses).increment(1)
        self.cold.set(cold)
        self.bytes.set(cache_bytes)

    def close(self) -> None:
        del self.hits, self.misses, self.bytes, self.requests, self.cold
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
