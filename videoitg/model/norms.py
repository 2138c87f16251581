"""One-pass LayerNorm with the residual add, for SigLIP's 1,152 channels on a GPU (on the hot path).

inductor generates SigLIP's norms at 1,152 channels as looped reductions, which read each row twice (its
persistent, one-pass form stops at 1,024); `add_layer_norm` reads the residual stream and the sublayer's output
once and writes the new stream and its normalized copy once: an OpenAI Triton kernel, one program per row, the row
in registers (the next power of two of its width, masked). The sum is rounded to the stream's dtype before it is
normalized, as the unfused path normalizes the stored stream; mean and variance are fp32 sums over the row.

It runs where the caller asks for it (SigLIP's layer passes `HOT_PATH.one_pass_norms`), the tensors are on a GPU and
the kernel was loaded (`load_kernels`, which `compile_layers` calls for a GPU model before compiling: a user-defined
Triton kernel inside a compiled layer is traced by torch.compile as one call); everywhere else the same function runs
as torch ops. On by default: on an H200 (2026-11-28) the cold request at T = 512 took 0.979x the time it takes with
inductor's norms, faster in every interleaved round; the GPU check keeps timing both (`hot` against `hot_two_pass`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KERNEL = None  # the Triton kernel, once `load_kernels` found Triton


def load_kernels() -> bool:
    """Define the Triton kernel (Triton imported here, not at import: only a GPU model needs it); False where Triton
    is not installed. With TRITON_INTERPRET=1 set before the first call, Triton's interpreter runs it on CPU
    tensors (the tests)."""
    global KERNEL
    if KERNEL is not None:
        return True
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return False

    @triton.jit
    def add_layer_norm_kernel(x_ptr, d_ptr, h_ptr, y_ptr, w_ptr, b_ptr, n_cols, eps, HAS_DELTA: tl.constexpr,
                              BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64) * n_cols
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_ptr + row + cols, mask=mask, other=0.0)
        if HAS_DELTA:
            x = (x.to(tl.float32) + tl.load(d_ptr + row + cols, mask=mask, other=0.0).to(tl.float32)).to(x.dtype)
            tl.store(h_ptr + row + cols, x, mask=mask)
        x = x.to(tl.float32)
        mean = tl.sum(x, axis=0) / n_cols
        xc = tl.where(mask, x - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=0) / n_cols + eps)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + row + cols, (xc * rstd * w + b).to(y_ptr.dtype.element_ty), mask=mask)

    KERNEL = add_layer_norm_kernel
    return True


def triton_add_layer_norm(x: torch.Tensor, delta: torch.Tensor | None, norm: nn.LayerNorm) -> tuple[torch.Tensor,
                                                                                                      torch.Tensor]:
    """(x + delta, LayerNorm(x + delta)) by the Triton kernel, one program per row (`load_kernels` first)."""
    n = norm.weight.shape[0]  # a parameter's size: a plain int inside a compiled layer with dynamic shapes
    x2 = x.reshape(-1, n)
    d2 = x2 if delta is None else delta.reshape(-1, n)
    h = x2 if delta is None else torch.empty_like(x2)
    y = torch.empty_like(x2)
    block = max(16, 1 << (n - 1).bit_length())
    KERNEL[(x2.shape[0],)](x2, d2, h, y, norm.weight, norm.bias, n, norm.eps, HAS_DELTA=delta is not None,
                           BLOCK=block, num_warps=min(max(block // 256, 1), 8))
    return h.view(x.shape), y.view(x.shape)


def add_layer_norm(x: torch.Tensor, delta: torch.Tensor | None, norm: nn.LayerNorm,
                   one_pass: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, LayerNorm(h)) with h = x + delta (x itself when delta is None): the residual stream and what the next
    sublayer reads; by the Triton kernel when `one_pass` and it can run."""
    if one_pass and x.is_cuda and KERNEL is not None:
        return triton_add_layer_norm(x.contiguous(), None if delta is None else delta.contiguous(), norm)
    h = x if delta is None else x + delta
    return h, F.layer_norm(h, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
