"""Floating-point operations of one grounding request, as a function of the config, T and the instruction length.

Conventions (the ones docs/performance.md uses, so numbers compare):
- a matrix product [M, K] x [K, N] costs 2*M*K*N;
- attention over n tokens costs 4*n*n*d per layer (QK^T and PV, d = heads * head_dim); a causal pass counts half,
  because flash kernels skip the masked blocks;
- normalisations, activations, softmax, RoPE, bilinear resize and biases are not counted (elementwise: memory-bound,
  a fraction of a percent of the arithmetic).

Every count is an exact Python int, so the tests can compare against numbers worked out by hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from videoitg.config import TextConfig, VideoITGConfig, VisionConfig

Path = Literal["ours", "baseline"]


def matmul_flops(m: int, k: int, n: int) -> int:
    return 2 * m * k * n


def siglip_layer_flops(v: VisionConfig) -> tuple[int, int]:
    """(linear, attention) FLOPs of one SigLIP encoder layer on one frame."""
    n, d, i = v.tokens_per_frame, v.hidden_size, v.intermediate_size
    linear = matmul_flops(n, d, 3 * d) + matmul_flops(n, d, d) + matmul_flops(n, d, i) + matmul_flops(n, i, d)
    attention = 4 * n * n * d
    return linear, attention


def siglip_patch_embed_flops(v: VisionConfig) -> int:
    """The stride-p convolution is a [N, C*p*p] x [C*p*p, D] product."""
    return matmul_flops(v.tokens_per_frame, v.num_channels * v.patch_size**2, v.hidden_size)


def siglip_head_flops(v: VisionConfig) -> int:
    """HF `SiglipMultiheadAttentionPoolingHead`: one probe token attends to the N patch tokens, then an MLP.

    Only `SiglipVisionModel` computes it (the original path, which throws it away); our path never runs it.
    """
    n, d, i = v.tokens_per_frame, v.hidden_size, v.intermediate_size
    kv = matmul_flops(n, d, 2 * d)  # keys and values of every patch token
    q_out = 2 * matmul_flops(1, d, d)  # probe query and output projection
    attention = 4 * n * d  # one query row against n keys
    mlp = matmul_flops(1, d, i) + matmul_flops(1, i, d)
    return kv + q_out + attention + mlp


def vision_flops_per_frame(v: VisionConfig, layers: int, include_head: bool = False) -> int:
    """Patch embedding + `layers` encoder layers (+ the pooling head the original computes)."""
    lin, att = siglip_layer_flops(v)
    total = siglip_patch_embed_flops(v) + layers * (lin + att)
    return total + (siglip_head_flops(v) if include_head else 0)


def visual_tokens(cfg: VideoITGConfig, num_frames: int) -> int:
    return num_frames * cfg.tokens_per_side(num_frames) ** 2


def sequence_length(cfg: VideoITGConfig, num_frames: int, instruction_len: int) -> int:
    """LLM tokens of one request: visual tokens first, then the instruction (plain format, no BOS)."""
    return visual_tokens(cfg, num_frames) + instruction_len


def projector_flops(cfg: VideoITGConfig, num_frames: int) -> int:
    """seq_mlp: resize to HW x HW first, then Linear(Cv->H), GELU, Linear(H->H) on the resized tokens."""
    t, h = visual_tokens(cfg, num_frames), cfg.text.hidden_size
    return matmul_flops(t, cfg.mm_hidden_size, h) + matmul_flops(t, h, h)


def llm_linear_flops_per_token(text: TextConfig) -> int:
    h, i = text.hidden_size, text.intermediate_size
    kv = text.num_key_value_heads * text.head_dim
    per_layer = matmul_flops(1, h, h) * 2 + matmul_flops(1, h, kv) * 2 + matmul_flops(1, h, i) * 3
    return text.num_hidden_layers * per_layer


def llm_attention_flops(text: TextConfig, seq_len: int, causal: bool = False) -> int:
    """4*n^2*d per layer with d = query heads * head_dim (GQA shares K/V but not the products)."""
    d = text.num_attention_heads * text.head_dim
    full = text.num_hidden_layers * 4 * seq_len * seq_len * d
    return full // 2 if causal else full


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one request, by part. `vision` includes the patch embedding; `vision_head` is the part of the
    original path that is computed and thrown away (layer 27 is inside `vision` for the baseline)."""

    vision: int
    vision_head: int
    projector: int
    llm_linear: int
    llm_attention: int
    head: int

    @property
    def llm(self) -> int:
        return self.llm_linear + self.llm_attention + self.head

    @property
    def total(self) -> int:
        return self.vision + self.vision_head + self.projector + self.llm

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "llm": self.llm, "total": self.total}


def request_flops(
    cfg: VideoITGConfig,
    num_frames: int,
    instruction_len: int,
    path: Path = "ours",
    cached_video: bool = False,
    batch: int = 1,
) -> FlopCount:
    """FLOPs of `batch` identical requests.

    path="ours": SigLIP through `cfg.vision_layers_used` layers, no pooling head.
    path="baseline": the original `SiglipVisionModel` forward, i.e. every layer plus post-norm and pooling head.
    cached_video=True: the visual features (tower + projector) come from a cache, so only the LLM runs.
    """
    if path not in ("ours", "baseline"):
        raise ValueError(f"path must be 'ours' or 'baseline', got {path!r}")
    if instruction_len < 0:
        raise ValueError(f"instruction_len must be >= 0, got {instruction_len}")
    v = cfg.vision
    layers = cfg.vision_layers_used if path == "ours" else v.num_hidden_layers
    seq = sequence_length(cfg, num_frames, instruction_len)
    if cached_video:
        vision = head_v = proj = 0
    else:
        vision = num_frames * vision_flops_per_frame(v, layers)
        head_v = num_frames * siglip_head_flops(v) if path == "baseline" else 0
        proj = projector_flops(cfg, num_frames)
    # The 1-output head after the per-frame mean pool (the pool itself is additions, not counted).
    head = matmul_flops(num_frames, cfg.text.hidden_size, 1)
    return FlopCount(
        vision=batch * vision,
        vision_head=batch * head_v,
        projector=batch * proj,
        llm_linear=batch * seq * llm_linear_flops_per_token(cfg.text),
        llm_attention=batch * llm_attention_flops(cfg.text, seq, causal=cfg.attention == "causal"),
        head=batch * head,
    )


def flop_split(
    cfg: VideoITGConfig, num_frames: int, instruction_len: int, path: Path = "ours", cached_video: bool = False
) -> dict[str, int]:
    """The request's FLOPs by the unit that does them: GEMMs (every linear layer, the patch embedding, the heads)
    and the attention of each tower, which runs at its own rate (a different kernel and shape), so the floor is
    gemm / gemm_rate + each attention / its rate."""
    f = request_flops(cfg, num_frames, instruction_len, path, cached_video)
    v = cfg.vision
    layers = cfg.vision_layers_used if path == "ours" else v.num_hidden_layers
    vis_att = 0 if cached_video else num_frames * layers * siglip_layer_flops(v)[1]
    return {"gemm": f.total - vis_att - f.llm_attention, "vision_attention": vis_att,
            "llm_attention": f.llm_attention, "total": f.total}
