"""Micro-benchmarks of changes proposed for the core model, measured without editing it.

Each returns the time of the current formulation, of the proposed one, and how far apart their outputs are, so
a change is argued with a number from the same device, never a guess.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.perf.timing import median, time_calls
from videoitg.config import VideoITGConfig


def _rand(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype, g: torch.Generator,
          scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(shape, device=device, generator=g) * scale).to(dtype)


def _compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    d = (a.float() - b.float()).abs()
    return {"max_abs_diff": float(d.max()), "rel_l2": float(d.norm() / a.float().norm().clamp(min=1e-30))}


def siglip_mlp_gelu_epilogue(
    cfg: VideoITGConfig, chunk_frames: int, device: torch.device, dtype: torch.dtype, iters: int = 5
) -> dict[str, Any]:
    """SigLIP MLP on one chunk: fc1 -> tanh-GELU -> fc2 (three kernels; the GELU is a full read+write of the
    [chunk*729, 4304] activation) vs `torch._addmm_activation(use_gelu=True)`, which puts bias+GELU into the GEMM
    epilogue (cuBLASLt; its GELU is the tanh form on CUDA, the erf form on CPU, hence the diff column)."""
    v = cfg.vision
    g = torch.Generator(device=device).manual_seed(0)
    x = _rand((chunk_frames * v.tokens_per_frame, v.hidden_size), device, dtype, g)
    w1 = _rand((v.intermediate_size, v.hidden_size), device, dtype, g, 0.02)
    b1 = _rand((v.intermediate_size,), device, dtype, g, 0.02)
    w2 = _rand((v.hidden_size, v.intermediate_size), device, dtype, g, 0.02)
    b2 = _rand((v.hidden_size,), device, dtype, g, 0.02)

    def eager() -> torch.Tensor:
        return F.linear(F.gelu(F.linear(x, w1, b1), approximate="tanh"), w2, b2)

    def fused() -> torch.Tensor:
        return F.linear(torch._addmm_activation(b1, x, w1.t(), use_gelu=True), w2, b2)

    return {"tokens": x.shape[0], "eager_s": median(time_calls(eager, device, 1, iters)),
            "fused_s": median(time_calls(fused, device, 1, iters)), **_compare(eager(), fused())}

