"""The hot path's building blocks: fused projections, the GELU epilogue, per-layer compilation, and the switches
`benchmarks/gpu_check.py` turns each of them off by to measure what it buys (docs/performance.md, "The hot path").

Fused projections. SigLIP's and Qwen2's q/k/v and Qwen2's gate/up run as one GEMM each. The checkpoint keeps HF's
names and shapes: `hf_state_dict` gives a model's tensors under them (each fused weight as its parts, views of it,
not copies: what `save_checkpoint` writes and `load_checkpoint` checks the file headers against), and a fused module
loads HF's parts into its fused weight (`fuse_on_load`; `load_checkpoint` joins them a module at a time,
`fuse_parts`, so a load never holds the whole model twice). The module's own `state_dict()` keeps its fused names,
which torch's distributed checkpointing (FSDP training) resolves as attributes.

Compilation. `compile_layers` compiles one SigLIP layer and one Qwen2 layer (torch.compile, inductor): every layer
of a tower runs the one graph (its weights are the graph's inputs), so compile time does not grow with depth, and
shapes are dynamic, so a new frame count or sequence length does not compile again. Inside a compiled layer the
norms, the residual adds, RoPE and SwiGLU fuse into a few kernels; the GEMMs and attention stay cuBLAS and SDPA.
What compile cannot fuse, SigLIP's bias + tanh-GELU into its fc1 GEMM, runs as cuBLASLt's GELU epilogue on a GPU
(`gelu_linear`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from videoitg.model.fp8 import to_fp8


@dataclass
class HotPath:
    """Each change of the hot path, on unless the GPU check turns it off to time the path without it (compilation is
    timed with `torch.compiler.set_stance("force_eager")` instead)."""

    fused_projections: bool = True  # one GEMM for q/k/v (and gate/up) instead of one per part
    gqa_without_copies: bool = True  # SDPA reads each K/V head for its query group (enable_gqa), no repeat
    gelu_epilogue: bool = True  # on a GPU, SigLIP's fc1 bias + GELU in the GEMM's epilogue (cuBLASLt)


HOT_PATH = HotPath()


# ---- fused projections ---------------------------------------------------------------------------------------
FUSED = (("qkv", ("q_proj", "k_proj", "v_proj")), ("gate_up", ("gate_proj", "up_proj")))


class FusedLinear(nn.Linear):
    """An nn.Linear whose output rows are several projections of `part_sizes` rows, each initialised as its own
    nn.Linear would be, in their order: one seed gives the weights the separate layers had."""

    def __init__(self, in_features: int, part_sizes: list[int], bias: bool):
        self.part_sizes = list(part_sizes)
        super().__init__(in_features, sum(part_sizes), bias=bias)

    def reset_parameters(self) -> None:
        biases = self.bias.split(self.part_sizes) if self.bias is not None else [None] * len(self.part_sizes)
        for w, b in zip(self.weight.split(self.part_sizes), biases, strict=True):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # nn.Linear's own init, on the part's rows
            if b is not None:
                nn.init.uniform_(b, -1 / math.sqrt(self.in_features), 1 / math.sqrt(self.in_features))


def _join(state: dict, prefix: str, fused: str, parts: tuple[str, ...]) -> None:
    for kind in ("weight", "bias"):
        keys = [f"{prefix}{name}.{kind}" for name in parts]
        if all(k in state for k in keys):
            state[f"{prefix}{fused}.{kind}"] = torch.cat([state.pop(k) for k in keys])


def fuse_on_load(module: nn.Module, fused: str, parts: tuple[str, ...]) -> None:
    """Let `module.<fused>` (an nn.Linear whose output rows are `parts` in order, as wide as `module.part_sizes`
    says) load HF's separate `module.<part>` tensors."""
    module.register_load_state_dict_pre_hook(lambda mod, state, prefix, *_: _join(state, prefix, fused, parts))


def hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """`model.state_dict()` under the checkpoint's (HF's) names: each fused weight split into its parts, as views."""
    state = model.state_dict()
    for name, module in model.named_modules():
        for fused, parts in FUSED:
            for kind in ("weight", "bias"):
                key = f"{name}.{fused}.{kind}"
                if key in state:
                    for part, t in zip(parts, state.pop(key).split(module.part_sizes), strict=True):
                        state[f"{name}.{part}.{kind}"] = t
    return state


def fuse_parts(state: dict[str, torch.Tensor]) -> None:
    """Join, in place, every group of HF part tensors of a checkpoint's state dict into its fused tensor (what the
    modules' load hooks do, here one module at a time, so each part is freed as soon as it is joined)."""
    for fused, parts in FUSED:
        suffix = f"{parts[0]}.weight"
        for prefix in [k[: -len(suffix)] for k in state if k.endswith("." + suffix)]:
            _join(state, prefix, fused, parts)


def project(linear: nn.Module, x: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, ...]:
    """`x` through a fused projection, split into its parts: one GEMM, or one per part when the GPU check times the
    path without fused projections (a 16-bit nn.Linear only)."""
    if HOT_PATH.fused_projections or not isinstance(linear, nn.Linear):
        return linear(x).split(sizes, dim=-1)
    biases = linear.bias.split(sizes) if linear.bias is not None else [None] * len(sizes)
    return tuple(F.linear(x, w, b) for w, b in zip(linear.weight.split(sizes), biases, strict=True))


def gelu_linear(linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """tanh-GELU(linear(x)). On a GPU, a 16-bit nn.Linear's bias and GELU run in cuBLASLt's GEMM epilogue
    (`torch._addmm_activation`, whose GELU there is the tanh approximation SigLIP uses): compile cannot fuse
    them into the GEMM, and the [tokens, 4304] intermediate is then written once instead of three times."""
    if HOT_PATH.gelu_epilogue and x.is_cuda and isinstance(linear, nn.Linear) and linear.bias is not None:
        y = torch._addmm_activation(linear.bias, x.reshape(-1, x.shape[-1]), linear.weight.t(), use_gelu=True)
        return y.view(*x.shape[:-1], -1)
    return F.gelu(linear(x), approximate="tanh")


# ---- compilation ---------------------------------------------------------------------------------------------
def compile_layers(model: nn.Module, backend: str = "inductor") -> None:
    """torch.compile every layer in place (regional compilation: one graph per layer type, compiled on the first
    call, dynamic shapes). `backend`: inductor; the CPU rehearsals of the tests and the GPU check trace with a
    backend that generates no code."""
    for layer in model.transformer_layers():
        layer.compile(backend=backend, dynamic=True)


def prepare_inference(model: nn.Module, precision: str | None = None) -> nn.Module:
    """The inference hot path, in place, for a loaded eval model: the towers' linear layers in FP8 when `precision`
    is "fp8" (`videoitg.model.fp8`); on a GPU, each layer compiled. Every entry point that runs the torch model
    (the Scorer, the torch runtime of the serving steps) calls it once after loading."""
    if precision == "fp8":
        to_fp8(model)
    elif precision is not None:
        raise ValueError(f"unknown precision {precision!r}; the towers run in the model's dtype (None) or fp8")
    if next(model.parameters()).is_cuda:
        compile_layers(model)
    return model

