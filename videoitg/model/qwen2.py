"""Qwen2 decoder stack with a switchable attention pattern.

Variant C (the released model) runs every layer with full bidirectional attention: the visual tokens, which come
first, see the instruction that follows them. Variant B runs it causally. Checkpoint names follow HF `Qwen2Model`
so released weights load without renaming. Attention is PyTorch SDPA (flash / cuDNN / memory-efficient kernels
on GPU, nothing to install; `benchmarks/gpu/gpu_check.py` records which one each call runs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videoitg.config import TextConfig
from videoitg.model.hotpath import HOT_PATH


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 (as HF does) so bf16 activations do not lose the variance.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """positions [L] -> cos, sin [L, head_dim] (HF layout: the two halves repeat the same frequencies)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x [B, heads, L, hd]; rotate_half convention of HF Qwen2
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    """Each KV head serves its group of query heads inside SDPA (`enable_gqa`), never copied per query head.
    In FP8 (`videoitg.model.fp8`) q, k and v are one layer, `qkv`: one quantization of x, one GEMM."""

    FP8_FUSED = {"qkv": ("q_proj", "k_proj", "v_proj")}

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.hd, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.hd, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.hd, bias=True)
        self.o_proj = nn.Linear(self.n_heads * self.hd, cfg.hidden_size, bias=False)
        self.qkv: nn.Module | None = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn_mask: torch.Tensor | None,
                causal: bool) -> torch.Tensor:
        B, L, _ = x.shape
        qkv = (self.q_proj(x), self.k_proj(x), self.v_proj(x)) if self.qkv is None else self.qkv.split(self.qkv(x))
        q, k, v = (p.view(B, L, -1, self.hd).transpose(1, 2) for p in qkv)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        gqa = self.n_kv != self.n_heads
        if gqa and not HOT_PATH.gqa_without_copies:  # the GPU check's A/B: each KV head copied per query head
            k, v = k.repeat_interleave(self.n_heads // self.n_kv, 1), v.repeat_interleave(self.n_heads // self.n_kv, 1)
            gqa = False
        # With no padding attn_mask is None, so SDPA may pick its flash / cuDNN kernel.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal and attn_mask is None,
                                           enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, L, -1))


class MLP(nn.Module):
    """SwiGLU. In FP8 gate and up are one layer, `gate_up`: one quantization of x, one GEMM."""

    FP8_FUSED = {"gate_up": ("gate_proj", "up_proj")}

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.gate_up: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up is None:
            gate, up = self.gate_proj(x), self.up_proj(x)
        else:
            gate, up = self.gate_up.split(self.gate_up(x))
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn_mask: torch.Tensor | None,
                causal: bool) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attn_mask, causal)
        return x + self.mlp(self.post_attention_layernorm(x))


def attention_mask(valid: torch.Tensor | None, causal: bool) -> torch.Tensor | None:
    """valid [B, L] bool (False = padding) -> SDPA bool mask [B, 1, L, L] (True = may attend), or None.

    Padded keys are hidden from every query; padded queries still see the valid keys, so no row is empty
    (an all-False row would give NaN).
    """
    if valid is None:  # callers pass None when nothing is padded (no host sync here, export-friendly)
        return None
    B, L = valid.shape
    mask = valid[:, None, None, :].expand(B, 1, L, L)
    if causal:
        mask = mask & torch.ones(L, L, dtype=torch.bool, device=valid.device).tril()
        mask = mask | torch.eye(L, dtype=torch.bool, device=valid.device)  # keep padded rows non-empty
    return mask


def run_decoder(
    layers: nn.ModuleList,
    norm: RMSNorm,
    cfg: TextConfig,
    inputs_embeds: torch.Tensor,
    valid: torch.Tensor | None = None,
    causal: bool = False,
    checkpoint_layers: bool = False,
) -> torch.Tensor:
    """[B, L, H] embeddings -> [B, L, H] last hidden state after the final RMSNorm. Positions are 0..L-1."""
    B, L, _ = inputs_embeds.shape
    cos, sin = rope_cos_sin(torch.arange(L, device=inputs_embeds.device), cfg.head_dim, cfg.rope_theta,
                            inputs_embeds.dtype)
    mask = attention_mask(valid, causal)
    x = inputs_embeds
    for layer in layers:
        if checkpoint_layers and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, causal, use_reentrant=False)
        else:
            x = layer(x, cos, sin, mask, causal)
    return norm(x)
