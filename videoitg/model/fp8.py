"""FP8 for the language model's linear layers (`--precision fp8`): float8 e4m3 operands, fp32 sums, bf16 out.

What runs in FP8. `to_fp8` converts the Qwen2 decoder layers `fp8_layers` names: every one but the first and the
last (`KEEP_16BIT`). The vision tower, the projector, attention, the norms, the embeddings, those two decoder layers
and the head stay 16-bit (the model is loaded in bf16), as established FP8 stacks keep a VLM's vision tower and
head: `layer_sensitivity` measures each decoder layer's share of FP8's error (the GPU check runs it at the released
shapes) to say which layers stay 16-bit. Projections that read one input share one quantization of it and one
GEMM: q/k/v and gate/up (the modules name them in `FP8_FUSED`).

Scales (`SCHEMES`), each block's largest magnitude mapped to 448 (e4m3's largest), the cast saturating (a clamp to
+-448, then the round-to-nearest-even cast):
- "rowwise": activations one scale per row (token), weights one per output channel; on a GPU one `torch._scaled_mm`
  with row-wise scales (compute capability 8.9+; scale_a [M, 1], scale_b [1, N]), the bias in its epilogue, and
  Hopper's fast accumulation while `Float8Linear.fast_accum` is set (the GPU check measures it off too).
- "block": activations one scale per 1x128 block of a row, weights one per 128x128 block (DeepSeek-V3's recipe);
  on a GPU `torch._scaled_mm` with block-wise scales (Hopper and cuBLASLt 12.9+: scale_a [M, K/128] with strides
  (1, M), so M is padded to a multiple of 4; scale_b the [N/128, K/128] block scales transposed), the sums promoted
  to fp32 per 128-wide block of K (no fast accumulation), the bias added to the bf16 product after it.
(Both read in torch's aten/src/ATen/native/cuda/ScaledBlas.cpp on its main branch, `_scaled_mm_out_cuda`'s scale
checks; block scales need torch 2.9 or later; the image's torch 2.11 was not read line by line: the GPU check
records an error where a scheme does not run.)

On a CPU, `scaled_mm` emulates the GPU's product: the same quantized operands and scales (one torch function
quantizes on both devices, so the operands are bit-equal), dequantized and summed in fp32, rounded to bf16 where
the GPU rounds (with the bias before for "rowwise", after for "block"); only the order of the fp32 sums differs, and
the GPU's fast accumulation, which the CPU does not have.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448.0
BLOCK = 128
SCHEMES = ("rowwise", "block")
KEEP_16BIT = 1  # decoder layers kept 16-bit at each end of the stack


def quantize(x: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (e4m3 [M, K], fp32 scale [ceil(M / rows), ceil(K / cols)]) with x ~= q * scale block by block:
    each rows x cols block's largest magnitude maps to 448 (a block of zeros gets a tiny scale and stays zero); the
    last block of a ragged edge is the part that exists."""
    M, K = x.shape
    pm, pk = -M % rows, -K % cols
    xf = x.float()
    if pm or pk:  # zeros change no block's largest magnitude
        xf = F.pad(xf, (0, pk, 0, pm))
    blocks = xf.view((M + pm) // rows, rows, (K + pk) // cols, cols)
    amax = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12)  # [Mb, Kb]
    q = (blocks * (E4M3_MAX / amax)[:, None, :, None]).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3).view(M + pm, K + pk)
    return (q[:M, :K].contiguous() if pm or pk else q), amax / E4M3_MAX


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (e4m3 [M, K], fp32 scale [M, 1]): one scale per row."""
    return quantize(x, 1, x.shape[1])


def dequantize(q: torch.Tensor, scale: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """`quantize`'s inverse in fp32: each value times its block's scale."""
    M, K = q.shape
    full = scale.repeat_interleave(rows, 0)[:M].repeat_interleave(cols, 1)[:, :K]
    return q.float() * full


def scaled_mm(qa: torch.Tensor, sa: torch.Tensor, qw: torch.Tensor, sw: torch.Tensor, bias: torch.Tensor | None,
              scheme: str, fast_accum: bool) -> torch.Tensor:
    """bf16 [M, N] = (qa * sa) (qw * sw)^T + bias: activations qa [M, K] e4m3 with `scheme`'s scales sa (rowwise
    [M, 1], block [M, K/128]), weights qw [N, K] e4m3 with sw (rowwise [1, N], block [N/128, K/128])."""
    if qa.is_cuda:
        if scheme == "rowwise":
            return torch._scaled_mm(qa, qw.t(), scale_a=sa, scale_b=sw, bias=bias, out_dtype=torch.bfloat16,
                                    use_fast_accum=fast_accum)
        M = qa.shape[0]
        pad = -M % 4  # scale_a's columns (stride M) must start 16-byte aligned
        if pad:
            qa = torch.cat([qa, torch.zeros(pad, qa.shape[1], dtype=qa.dtype, device=qa.device)])
            sa = torch.cat([sa, torch.ones(pad, sa.shape[1], dtype=sa.dtype, device=sa.device)])
        y = torch._scaled_mm(qa, qw.t(), scale_a=sa.t().contiguous().t(), scale_b=sw.t(), out_dtype=torch.bfloat16,
                             use_fast_accum=False)[:M]
        return y if bias is None else y + bias
    if scheme == "rowwise":  # e4m3 x e4m3 products are exact in fp32; the sums in fp32; scaled, biased, rounded once
        y = (qa.float() @ qw.float().t()) * sa * sw
        return (y if bias is None else y + bias.float()).to(torch.bfloat16)
    y = (dequantize(qa, sa, 1, BLOCK) @ dequantize(qw, sw, BLOCK, BLOCK).t()).to(torch.bfloat16)
    return y if bias is None else y + bias


class Float8Linear(nn.Module):
    """y = x W^T + b with W in e4m3 (quantized once, `scheme`'s weight scales) and x quantized at each call; bf16 out.
    One module may hold several linear layers that read the same input (`from_linears`): their weights stacked,
    the input quantized once, one GEMM; `split` gives each layer's part of the output.

    `fast_accum`: on a GPU, Hopper's fast FP8 accumulation for the "rowwise" scheme (the sums kept in the tensor
    cores' own accumulator, not promoted to fp32 along K); the GPU check measures its rate and its logits off."""

    fast_accum = True

    def __init__(self, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None, scheme: str,
                 splits: list[int]) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.scheme, self.splits = scheme, splits
        self.register_buffer("weight", weight)  # [N, K] e4m3, row-major: its .t() is the column-major B
        self.register_buffer("weight_scale", weight_scale)  # rowwise [1, N], block [N/128, K/128]; fp32
        self.register_buffer("bias", bias)  # [N] bf16 or None

    @classmethod
    def from_linears(cls, linears: list[nn.Linear], scheme: str = "rowwise") -> Float8Linear:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown FP8 scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
        w = torch.cat([x.weight.detach() for x in linears])
        if w.is_cuda and (w.shape[0] % 16 or w.shape[1] % 16):
            raise ValueError(f"FP8 on a GPU needs linear layers whose sizes are multiples of 16, got {tuple(w.shape)}")
        biases = [x.bias for x in linears]
        if any(b is None for b in biases) and not all(b is None for b in biases):
            raise ValueError("fused FP8 layers need a bias on every part or on none")
        bias = None if biases[0] is None else torch.cat([b.detach() for b in biases]).to(torch.bfloat16)
        if scheme == "rowwise":
            q, s = quantize_rows(w)
            s = s.t().contiguous()  # [1, N]
        else:
            q, s = quantize(w, BLOCK, BLOCK)
        return cls(q, s, bias, scheme, [x.out_features for x in linears])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        q, s = quantize_rows(x2) if self.scheme == "rowwise" else quantize(x2, 1, BLOCK)
        y = scaled_mm(q, s, self.weight, self.weight_scale, self.bias, self.scheme, self.fast_accum)
        return y.view(*x.shape[:-1], self.out_features)

    def split(self, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return y.split(self.splits, dim=-1)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.splits}, bias={self.bias is not None}, "
                f"scheme={self.scheme}")


def check_fp8_device(device: torch.device) -> None:
    """Refuse a GPU without FP8 tensor cores (compute capability below 8.9): `_scaled_mm` does not run there."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        name = torch.cuda.get_device_name(device)
        raise ValueError(f"--precision fp8 needs a GPU with FP8 tensor cores (compute capability 8.9 or newer: "
                         f"Ada, Hopper); {name} has {torch.cuda.get_device_capability(device)}")


def fp8_layer_indices(num_layers: int) -> range:
    """Which of `num_layers` decoder layers `--precision fp8` converts: all but KEEP_16BIT at each end."""
    return range(KEEP_16BIT, max(KEEP_16BIT, num_layers - KEEP_16BIT))


def fp8_layers(model: nn.Module) -> list[nn.Module]:
    """The layers `--precision fp8` converts (`fp8_layer_indices`)."""
    layers = list(model.model.layers)
    return [layers[i] for i in fp8_layer_indices(len(layers))]


def convert_layer(layer: nn.Module, scheme: str = "rowwise") -> nn.Module:
    """Each nn.Linear inside `layer` as a Float8Linear, in place; a module's projections named together in its
    `FP8_FUSED` ({fused name: (projection names)}) become one, the originals removed."""
    for parent in list(layer.modules()):
        for fused, names in getattr(parent, "FP8_FUSED", {}).items():
            parts = [getattr(parent, n, None) for n in names]
            if all(isinstance(p, nn.Linear) for p in parts):
                setattr(parent, fused, Float8Linear.from_linears(parts, scheme))
                for n in names:
                    delattr(parent, n)
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Float8Linear.from_linears([child], scheme))
    return layer


def to_fp8(model: nn.Module, layers: list[nn.Module] | None = None, scheme: str = "rowwise") -> nn.Module:
    """`fp8_layers(model)` (or `layers`: the GPU check converts others to measure them) in FP8, in place; the model
    must be in bf16 (what stays 16-bit runs in it). The 16-bit weights are dropped as each layer is converted."""
    w = next(model.parameters())
    if w.dtype != torch.bfloat16:
        raise ValueError(f"FP8 runs its 16-bit parts in bfloat16; the model was loaded as {w.dtype}")
    check_fp8_device(w.device)
    for layer in fp8_layers(model) if layers is None else layers:
        convert_layer(layer, scheme)
    return model


def error_over_spread(want: torch.Tensor, got: torch.Tensor) -> float:
    """std(got - want) / std(want) over the frames: FP8's error against the spread of the logits it must keep
    apart (a shift common to every frame changes no ranking and counts nothing)."""
    want, got = want.double().flatten(), got.double().flatten()
    return float((got - want).std() / want.std())


def layer_sensitivity(model: nn.Module, run: Callable[[], torch.Tensor], want: torch.Tensor,
                      scheme: str = "rowwise") -> list[float]:
    """For each decoder layer alone in FP8 (a converted copy swapped in, the 16-bit layer back after), the
    error/spread of `run()`'s logits against `want` (fp32's): which layers FP8 hurts most."""
    layers = model.model.layers
    out = []
    for i, layer in enumerate(list(layers)):
        layers[i] = convert_layer(copy.deepcopy(layer), scheme)
        try:
            out.append(error_over_spread(want, run()))
        finally:
            layers[i] = layer
    return out
