"""FP8 linear layers for both towers (`--precision fp8`): float8 e4m3 operands, fp32 sums, bf16 out.

`to_fp8` turns each linear layer of the SigLIP encoder layers and the Qwen2 decoder layers into a `Float8Linear`:
its weight quantized once, with one scale per output channel; its input quantized at each call, with one scale
per row (token); the product summed in fp32 and written in bf16 with the bias. On a GPU that is one
`torch._scaled_mm` with row-wise scales (compute capability 8.9 or 9.0+; both operands e4m3, A row-major and B
column-major, K and N multiples of 16, scale_a [M, 1] and scale_b [1, N] fp32, a bf16 bias for a bf16 output:
the checks of `_scaled_mm_out_cuda` in torch's aten/src/ATen/native/cuda/ScaledBlas.cpp). Attention, the norms,
the embeddings, the projector and the head stay 16-bit: the model is loaded in bf16.

On a CPU the same `quantize_rows` rounds to e4m3 (one torch function on both devices: clamp to +-448, then the
round-to-nearest-even cast), and the float8 values' product is summed in fp32 instead of by `_scaled_mm`: the
numbers a GPU computes, up to the order of the fp32 sums (and the GPU's fast FP8 accumulation, `use_fast_accum`).
"""

from __future__ import annotations

import torch
from torch import nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448.0


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (e4m3 [M, K], fp32 scale [M, 1]) with x ~= q * scale row by row: each row's largest magnitude
    maps to 448 (an all-zero row gets a tiny scale and stays zero)."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12)
    q = (x.float() * (E4M3_MAX / amax)).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return q, amax / E4M3_MAX


class Float8Linear(nn.Module):
    """y = x W^T + b with W in e4m3 (per-output-channel scales) and x quantized per row at each call; bf16 out.

    `fast_accum`: on a GPU, Hopper's fast FP8 accumulation (the sums kept in the tensor cores' own accumulator, not
    promoted to fp32 along K); the GPU check measures its rate and its logits with it off."""

    fast_accum = True

    def __init__(self, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)  # [N, K] e4m3, row-major: its .t() is the column-major B
        self.register_buffer("weight_scale", weight_scale)  # [1, N] fp32
        self.register_buffer("bias", bias)  # [N] bf16 or None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Float8Linear:
        w = linear.weight.detach()
        if w.is_cuda and (w.shape[0] % 16 or w.shape[1] % 16):
            raise ValueError(f"FP8 on a GPU needs linear layers whose sizes are multiples of 16, got {tuple(w.shape)}")
        q, scale = quantize_rows(w)
        bias = linear.bias.detach().to(torch.bfloat16) if linear.bias is not None else None
        return cls(q, scale.t().contiguous(), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, scale = quantize_rows(x.reshape(-1, self.in_features))
        if q.is_cuda:
            y = torch._scaled_mm(q, self.weight.t(), scale_a=scale, scale_b=self.weight_scale, bias=self.bias,
                                 out_dtype=torch.bfloat16, use_fast_accum=self.fast_accum)
        else:  # the same operands, summed in fp32 here
            y = (q.float() @ self.weight.float().t()) * scale * self.weight_scale
            y = (y if self.bias is None else y + self.bias.float()).to(torch.bfloat16)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def check_fp8_device(device: torch.device) -> None:
    """Refuse a GPU without FP8 tensor cores (compute capability below 8.9): `_scaled_mm` does not run there."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        name = torch.cuda.get_device_name(device)
        raise ValueError(f"--precision fp8 needs a GPU with FP8 tensor cores (compute capability 8.9 or newer: "
                         f"Ada, Hopper); {name} has {torch.cuda.get_device_capability(device)}")


def to_fp8(model: nn.Module, layers: list[nn.Module] | None = None) -> nn.Module:
    """Every nn.Linear inside the model's SigLIP and Qwen2 layers (or inside `layers`, some of them: the GPU check
    converts one tower at a time to see where FP8's difference comes from) as a Float8Linear, in place; the model
    must be in bf16 (what stays 16-bit runs in it). The 16-bit weights are dropped as each layer is converted."""
    w = next(model.parameters())
    if w.dtype != torch.bfloat16:
        raise ValueError(f"FP8 runs its 16-bit parts in bfloat16; the model was loaded as {w.dtype}")
    check_fp8_device(w.device)
    for layer in model.transformer_layers() if layers is None else layers:
        for parent in list(layer.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, Float8Linear.from_linear(child))
    return model
