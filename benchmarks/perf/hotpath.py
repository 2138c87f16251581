"""The hot-path switches of the core model, applied to a loaded model in one place so the GPU benchmark can time
each one alone and together, and keep only what helps.

    HotPath(fuse=True, native_gqa=True, attention=("cudnn", "flash")).apply(model)

- fuse: q/k/v and gate/up in one GEMM each (`videoitg.model.fusion`; the state dict keeps the HF names);
- native_gqa: SDPA reads Qwen2's 4 KV heads itself (`enable_gqa`) instead of 7 copies made by repeat_interleave;
- attention: the SDPA kernels allowed, in priority order (e.g. ("cudnn", "flash")); the math kernel is never in a
  list the benchmark sets, so a shape no fast kernel takes fails loudly instead of running 10x slower;
- fp8: FP8 GEMMs (`benchmarks.perf.fp8`), after fusion so q/k/v quantise their input once;
- compile: `torch.compile` of every layer (fuses the elementwise work: norms, RoPE, GELU, SiLU*mul, residuals).

Every switch computes the same function: tests/test_hotpath.py checks each against the default model at fp32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn
from torch.nn.attention import SDPBackend

from videoitg.model.qwen2 import MLP, Attention
from videoitg.model.vision import SiglipAttention

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


@dataclass(frozen=True)
class HotPath:
    fuse: bool = False
    native_gqa: bool = False
    attention: tuple[str, ...] = ()  # () = PyTorch's own choice
    fp8: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        unknown = [a for a in self.attention if a not in BACKENDS]
        if unknown:
            raise ValueError(f"unknown SDPA backend(s) {unknown}; choose from {sorted(BACKENDS)}")

    @property
    def label(self) -> str:
        parts = [name for name in ("fuse", "native_gqa", "fp8", "compile") if getattr(self, name)]
        if self.attention:
            parts.append("sdpa=" + "+".join(self.attention))
        return ",".join(parts) or "default"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}

    def apply(self, model: nn.Module) -> nn.Module:
        """In place; returns the model. Fusion and FP8 cannot be undone: build a fresh model to go back."""
        if self.fuse:
            fuse_projections(model)
        if self.fp8:
            from benchmarks.perf.fp8 import convert_linears_to_fp8

            p = next(model.parameters())
            convert_linears_to_fp8(model, compiled_quant=p.device.type == "cuda")
        set_attention(model, self.native_gqa, self.attention)
        if self.compile:
            compile_layers(model)
        return model


def fuse_projections(model: nn.Module) -> int:
    """Fuse every attention's q/k/v and every Qwen2 MLP's gate/up that is not fused yet. Returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, (Attention, SiglipAttention)) and m.qkv_sizes is None:
            m.fuse()
            n += 1
        elif isinstance(m, MLP) and not m.fused:
            m.fuse()
            n += 1
    return n


def set_attention(model: nn.Module, native_gqa: bool, backends: tuple[str, ...]) -> None:
    """Set the GQA mode of every Qwen2 attention and the allowed SDPA kernels of every attention (both towers)."""
    kernels = [BACKENDS[b] for b in backends] or None
    for m in model.modules():
        if isinstance(m, Attention):
            m.native_gqa = native_gqa
        if isinstance(m, (Attention, SiglipAttention)):
            m.sdpa_backends = kernels


def compile_layers(model: nn.Module) -> int:
    """torch.compile every vision and decoder layer in place (names unchanged). Returns how many.

    dynamic=None: the first shape compiles static, a second length marks it dynamic, so 4 frame counts cost two
    compiles of the decoder layer, not four."""
    layers = list(model.model.vision_tower.vision_tower.vision_model.encoder.layers) + list(model.model.layers)
    for layer in layers:
        layer.compile(dynamic=None)
    return len(layers)

