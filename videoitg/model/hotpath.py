"""The hot path's building blocks: the GELU epilogue, per-layer compilation, and the switches
`benchmarks/gpu/gpu_check.py` flips to measure what each change buys (docs/performance.md, "The hot path"). In 16 bits
the projections are one GEMM each (HF's modules): one GEMM for q/k/v and one for gate/up measured 1.000x of them on an
H100 (benchmarks/RESULTS.md); FP8 fuses them, to quantize each input once (`videoitg.model.fp8`).

Compilation. `compile_layers` compiles one SigLIP layer and one Qwen2 layer (torch.compile, inductor): every layer
of a tower runs the one graph (its weights are the graph's inputs), so compile time does not grow with depth, and
shapes are dynamic, so a new frame count or sequence length does not compile again. Inside a compiled layer the
norms, the residual adds, RoPE and SwiGLU fuse into a few kernels; the GEMMs and attention stay cuBLAS and SDPA.
What compile cannot fuse, SigLIP's bias + tanh-GELU into its fc1 GEMM, runs as cuBLASLt's GELU epilogue on a GPU
(`gelu_linear`).

SigLIP's MLP width. On a GPU its 4,304 columns are widened with zeros to 4,352 at load (`VideoITG.pad_mlps`): fc1's
output columns and fc2's reduction then fill whole GEMM tiles (4,304 is no multiple of 64, 128 or 256). The function
is the same; the arithmetic grows by 1.1 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from videoitg.model.fp8 import to_fp8
from videoitg.model.norms import load_kernels


@dataclass
class HotPath:
    """Each change of the hot path and whether it runs: the GPU check flips each to time the path with and without it
    (compilation is timed with `torch.compiler.set_stance("force_eager")` instead)."""

    gqa_without_copies: bool = True  # SDPA reads each K/V head for its query group (enable_gqa), no repeat
    gelu_epilogue: bool = True  # on a GPU, SigLIP's fc1 bias + GELU in the GEMM's epilogue (cuBLASLt)
    one_pass_norms: bool = True  # on a GPU, SigLIP's norms and residual adds as one-pass Triton kernels (norms.py):
    # 0.979x the cold request at T = 512 on an H200, every round faster (benchmarks/RESULTS.md, 2026-11-28)


HOT_PATH = HotPath()
MLP_MULTIPLE = 256  # SigLIP's MLP width on a GPU: 4,304 -> 4,352


def gelu_linear(linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """tanh-GELU(linear(x)). On a GPU, a 16-bit nn.Linear's bias and GELU run in cuBLASLt's GEMM epilogue
    (`torch._addmm_activation`, whose GELU there is the tanh approximation SigLIP uses): compile cannot fuse
    them into the GEMM, and the [tokens, 4304] intermediate is then written once instead of three times."""
    if HOT_PATH.gelu_epilogue and x.is_cuda and isinstance(linear, nn.Linear) and linear.bias is not None:
        y = torch._addmm_activation(linear.bias, x.reshape(-1, x.shape[-1]), linear.weight.t(), use_gelu=True)
        return y.view(*x.shape[:-1], -1)
    return F.gelu(linear(x), approximate="tanh")


# ---- compilation ---------------------------------------------------------------------------------------------
def compile_layers(model: nn.Module, backend: str = "inductor", options: dict | None = None,
                   layers: list[nn.Module] | None = None) -> None:
    """torch.compile every layer in place (regional compilation: one graph per layer type, compiled on the first
    call, dynamic shapes), or `layers` only (the GPU check's twin of a tower). `backend`: inductor; the CPU
    rehearsals of the tests and the GPU check trace with a backend that generates no code. `options`: inductor's
    (the GPU check times a candidate's). A GPU model's Triton kernels are loaded first (`norms.load_kernels`)."""
    if next(model.parameters()).is_cuda:
        load_kernels()
    for layer in model.transformer_layers() if layers is None else layers:
        layer.compile(backend=backend, dynamic=True, options=options)


def prepare_inference(model: nn.Module, precision: str | None = None) -> nn.Module:
    """The inference hot path, in place, for a loaded eval model: the language model's linear layers in FP8 when
    `precision` is "fp8" (`videoitg.model.fp8`), the vision tower in bfloat16 when it is "vision-bf16"; on a GPU,
    SigLIP's MLPs widened to whole GEMM tiles and each layer compiled. Every entry point that runs the torch model
    (the Scorer, the torch runtime of the serving steps) calls it once after loading."""
    if precision == "fp8":
        to_fp8(model)
    elif precision == "vision-bf16":
        if model.model.vision_tower is not None:
            model.model.vision_tower.to(torch.bfloat16)
    elif precision is not None:
        raise ValueError(f"unknown precision {precision!r}; the model runs in its dtype (None), fp8 or vision-bf16")
    if next(model.parameters()).is_cuda:
        model.pad_mlps(MLP_MULTIPLE)
        compile_layers(model)
    return model
