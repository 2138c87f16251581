"""Helpers shared by the python-backend models: parameters, tensors in and out (DLPack, so a GPU tensor stays on
the GPU), and per-request error responses."""

from __future__ import annotations

import json
import traceback
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack, to_dlpack

from videoitg.errors import InputError, VideoITGError
from videoitg.serving.steps import StepAssets, model_parameters


def setup(args: dict[str, Any]) -> tuple[dict[str, str], StepAssets]:
    """The model's parameters, and where its checkpoint, tower and engines are (relative to the repository)."""
    params = model_parameters(json.loads(args["model_config"]))
    return params, StepAssets.from_parameters(params, args.get("model_repository"))


def error(exc: BaseException | str, model: str) -> Any:
    """A response that fails this request only. Our typed errors are the client's fault (INVALID_ARG, message as
    is); anything else is logged with its traceback and reported as an internal error."""
    if isinstance(exc, str):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(exc))
    if isinstance(exc, VideoITGError):
        msg = f"{model}: {type(exc).__name__}: {exc}"
        code = getattr(pb_utils.TritonError, "INVALID_ARG", None) if isinstance(exc, InputError) else None
    else:
        pb_utils.Logger.log_error(f"{model}: {''.join(traceback.format_exception(exc))}")
        msg = f"{model}: internal error: {type(exc).__name__}: {exc}"
        code = getattr(pb_utils.TritonError, "INTERNAL", None)
    err = pb_utils.TritonError(msg, code) if code is not None else pb_utils.TritonError(msg)
    return pb_utils.InferenceResponse(error=err)


def respond_each(requests: list[Any], handle: Any, model: str) -> list[Any]:
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
    """A (small) input on the host, None when absent. On a GPU deployment a step's input may arrive in device
    memory (FORCE_CPU_ONLY_INPUT_TENSORS=no), where `as_numpy` cannot read it."""
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        return None
    return t.as_numpy() if t.is_cpu() else from_dlpack(t.to_dlpack()).cpu().numpy()


def input_torch(request: Any, name: str) -> torch.Tensor:
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        raise InputError(f"{name} is missing")
    return from_dlpack(t.to_dlpack())  # zero-copy, on whichever device the tensor is


def output_torch(name: str, x: torch.Tensor) -> Any:
    """GPU tensors leave by DLPack (no copy, stay on device); CPU tensors through numpy (copied into the
    response's shared memory either way, and the stub then holds no foreign DLPack capsule), but bfloat16, which
    numpy has no type for."""
    if x.device.type == "cpu" and x.dtype != torch.bfloat16:
        return pb_utils.Tensor(name, np.ascontiguousarray(x.detach().numpy()))
    return pb_utils.Tensor.from_dlpack(name, to_dlpack(x.contiguous()))


def output_numpy(name: str, x: np.ndarray) -> Any:
    return pb_utils.Tensor(name, np.ascontiguousarray(x))


def response_tensor(response: Any, name: str) -> torch.Tensor:
    t = pb_utils.get_output_tensor_by_name(response, name)
    return from_dlpack(t.to_dlpack())


def bytes_tensor(name: str, values: list[bytes | str], shape: tuple[int, ...] | None = None) -> Any:
    arr = np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=np.object_)
    return pb_utils.Tensor(name, arr.reshape(shape) if shape else arr)


class RequestCounters:
    """`videoitg_requests{model, outcome}`: Triton 2.51's python backend reports a request as a success even when
    its response carries an error, so `nv_inference_request_failure` misses per-request errors; these count them.
    The families must outlive their metrics, so both are kept here."""

    def __init__(self, model: str):
        fam = pb_utils.MetricFamily
        self.family = fam("videoitg_requests", "requests answered, by outcome", fam.COUNTER)
        self.success = self.family.Metric({"model": model, "outcome": "success"})
        self.failure = self.family.Metric({"model": model, "outcome": "failure"})

    def close(self) -> None:
        """Metrics before their family: the stub crashes at exit if a family dies first."""
        del self.success, self.failure
        del self.family

    def count(self, responses: list) -> list:
        bad = sum(1 for r in responses if r.has_error())
        if bad:
            self.failure.increment(bad)
        if len(responses) - bad:
            self.success.increment(len(responses) - bad)
        return responses


class StepRuntimeMetric:
    """`videoitg_step_runtime{model=..., runtime=...} 1` on Triton's /metrics: which runtime answers a step."""

    def __init__(self, model: str, runtime: str):
        fam = pb_utils.MetricFamily
        self.family = fam("videoitg_step_runtime", "the runtime a step runs on (1 for the one in use)", fam.GAUGE)
        self.metric = self.family.Metric({"model": model, "runtime": runtime})
        self.metric.set(1)

    def close(self) -> None:
        """Metrics before their family: the stub crashes at exit if a family dies first."""
        del self.metric
        del self.family


def input_error_names() -> set[str]:
    """Class names of every InputError subclass (decode's included): a step error naming one is the client's."""
    try:
        import videoitg.decode  # noqa: F401 - registers the decoder's error classes
    except ImportError:
        pass
    names, todo = set(), [InputError]
    while todo:
        c = todo.pop()
        names.add(c.__name__)
        todo.extend(c.__subclasses__())
    return names
