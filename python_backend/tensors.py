"""Tensors in and out of the python-backend models: inputs on the host, outputs from numpy or torch (DLPack, so a
GPU tensor stays on the GPU). torch is imported where a tensor needs it (on a GPU, or in bfloat16), so the top-level
model on a CPU runs without it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import triton_python_backend_utils as pb_utils

from videoitg.errors import InputError

if TYPE_CHECKING:
    import torch


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
