"""Optional FP8 GEMMs: an `nn.Linear` replacement that runs `torch._scaled_mm` on float8_e4m3fn operands.

Weights are quantised once (one scale per output channel); activations are quantised on the fly (one scale per
token by default), so a long request's outlier tokens do not flatten everyone else's precision. Everything stays on
the device: the scales are tensors, never Python floats, so a forward has no host sync.

`torch._scaled_mm` needs K and N to be multiples of 16 (M is free); Linears that do not fit (e.g. the 1-output
scoring head) are left in bf16. On Hopper the product runs on the FP8 tensor cores; the CPU build of torch also
implements the op, which is what the tests use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

Granularity = Literal["row", "tensor"]
FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
_EPS = 1e-12


def quantize(x: torch.Tensor, granularity: Granularity, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """x -> (x_fp8, scale) with x ~= x_fp8 * scale; `scale` is float32, shaped for `_scaled_mm` broadcasting.

    The multiply happens in x's dtype (bf16: half the bytes of an fp32 pass); the clamp keeps a product that
    rounded up past 448 from turning into NaN (the cast does not saturate).
    """
    if granularity == "row":
        amax = x.abs().amax(dim=dim, keepdim=True)
    elif granularity == "tensor":
        amax = x.abs().amax()
    else:
        raise ValueError(f"granularity must be 'row' or 'tensor', got {granularity!r}")
    inv = (FP8_MAX / amax.float().clamp(min=_EPS)).to(x.dtype)
    xq = (x * inv).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return xq, inv.float().reciprocal()


_compiled_quantize: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None


def quantize_fn(compiled: bool) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """Eager `quantize` runs ~5 passes over the activation (abs, amax, mul, clamp, cast); compiled, they fuse into
    a reduction and one quantising pass. At real sizes that is the difference between FP8 paying off or not: the
    vision tower alone quantises ~1e11 activation elements per 512-frame request."""
    global _compiled_quantize
    if not compiled:
        return quantize
    if _compiled_quantize is None:
        _compiled_quantize = torch.compile(quantize, dynamic=True)
    return _compiled_quantize


class Fp8Linear(nn.Module):
    """y = x @ W^T + b computed as an FP8 GEMM with float32 scales and a `out_dtype` result."""

    def __init__(
        self,
        weight_fp8: torch.Tensor,
        weight_scale: torch.Tensor,
        bias: torch.Tensor | None,
        out_dtype: torch.dtype,
        granularity: Granularity = "row",
        fast_accum: bool = False,
        compiled_quant: bool = False,
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = weight_fp8.shape
        self.register_buffer("weight_fp8", weight_fp8)
        # [1, N] for row-wise (one scale per output channel), [] for tensor-wise.
        self.register_buffer("weight_scale", weight_scale)
        self.register_buffer("bias", bias)
        self.out_dtype = out_dtype
        self.granularity: Granularity = granularity
        self.fast_accum = fast_accum
        self._quantize = quantize_fn(compiled_quant)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, granularity: Granularity = "row", fast_accum: bool = False, compiled_quant: bool = False
    ) -> Fp8Linear:
        n, k = linear.weight.shape
        if not fits_fp8(linear):
            raise ValueError(f"Linear({k}->{n}): _scaled_mm needs in/out features divisible by 16")
        w = linear.weight.detach()
        wq, ws = quantize(w, granularity, dim=1)  # row of W = output channel
        scale = ws.reshape(1, n) if granularity == "row" else ws
        bias = None if linear.bias is None else linear.bias.detach().to(w.dtype)
        return cls(wq, scale, bias, w.dtype, granularity, fast_accum, compiled_quant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.dtype != self.out_dtype:
            x2 = x2.to(self.out_dtype)
        xq, xs = self._quantize(x2, self.granularity, dim=1)
        y = torch._scaled_mm(
            xq, self.weight_fp8.t(), scale_a=xs, scale_b=self.weight_scale, bias=self.bias,
            out_dtype=self.out_dtype, use_fast_accum=self.fast_accum,
        )
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, {self.granularity}-wise, fast_accum={self.fast_accum}"


def fits_fp8(linear: nn.Linear) -> bool:
    return linear.in_features % 16 == 0 and linear.out_features % 16 == 0


def default_fp8_filter(name: str, linear: nn.Linear) -> bool:
    """The transformer blocks of both towers (99.9% of a request's FLOPs). Embeddings, norms, the head and the
    projector stay bf16: the core model reads the projector's `.weight` for its dtype, and its GEMMs are <0.1%."""
    return f".{name}".find(".layers.") >= 0


def convert_linears_to_fp8(
    module: nn.Module,
    include: Callable[[str, nn.Linear], bool] = default_fp8_filter,
    granularity: Granularity = "row",
    fast_accum: bool = False,
    compiled_quant: bool = False,
) -> list[str]:
    """Replace, in place, every `nn.Linear` that `include` selects and `_scaled_mm` can take. Returns their names.

    The bf16 weights are dropped as each module is replaced, so weight memory roughly halves.
    """
    targets = [
        (name, mod) for name, mod in module.named_modules()
        if isinstance(mod, nn.Linear) and fits_fp8(mod) and include(name, mod)
    ]
    for name, lin in targets:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        with torch.no_grad():
            setattr(parent, child, Fp8Linear.from_linear(lin, granularity, fast_accum, compiled_quant))
    return [name for name, _ in targets]
