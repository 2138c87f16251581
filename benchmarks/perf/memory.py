"""Device memory of one grounding request: weights, activations of our path vs the original path, peak estimates.

A model of what an eager PyTorch forward under `torch.no_grad()` keeps alive, phase by phase, not a measurement.
The GPU benchmark prints it next to `torch.cuda.max_memory_allocated()` so the two can be compared. It ignores the
caching allocator's fragmentation and the library workspaces (cuBLAS, a few hundred MB at most).

Phases of a cold request, each peaking at (what is retained across it) + (the largest transient inside it):
- vision, one chunk of C frames at a time. Attention block: residual, q, k, v, attention output, o_proj output
  (6 x C*N*D) [+ the C*heads*N^2 score matrix when SDPA falls back to the math kernel]. MLP block: residual, norm
  output, fc2 output (3 x C*N*D) + fc1 output and its GELU (2 x C*N*I).
  The original path also keeps every hidden state of the chunk: (layers + 1) x C*N*D.
- concatenating the chunk outputs: the chunks and the result, 2 x T*N*Cv.
- projector: encoder features T*N*Cv, resized T*hw^2*Cv, then the larger of the channels-first copy the resize
  reads (T*N*Cv) and the fc1 + GELU + fc2 outputs (3 x T*hw^2*H).
- LLM over L tokens: residual, q, k, v (GQA expanded), RoPE'd q and k, attention output, o_proj output (8 x L*H);
  MLP: residual, norm output (2 x L*H) + SiLU(gate), up, their product (3 x L*I). The original path also keeps
  `num_hidden_layers + 1` hidden states of L*H.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from benchmarks.perf.flops import sequence_length, visual_tokens
from videoitg.config import TextConfig, VideoITGConfig, VisionConfig

Path = Literal["ours", "baseline"]
AttentionKernel = Literal["flash", "math"]

GB = 1e9


# ---- parameter counts ------------------------------------------------------------------------------------------
def siglip_layer_params(v: VisionConfig) -> int:
    d, i = v.hidden_size, v.intermediate_size
    attn = 4 * (d * d + d)
    mlp = d * i + i + i * d + d
    norms = 2 * 2 * d
    return attn + mlp + norms


def siglip_head_params(v: VisionConfig) -> int:
    """post_layernorm + MAP head (probe, nn.MultiheadAttention, layernorm, MLP)."""
    d, i = v.hidden_size, v.intermediate_size
    return 2 * d + d + 4 * (d * d + d) + 2 * d + (d * i + i + i * d + d)


def vision_params(v: VisionConfig, layers: int, include_head: bool = False) -> int:
    embed = v.num_channels * v.patch_size**2 * v.hidden_size + v.hidden_size + v.tokens_per_frame * v.hidden_size
    return embed + layers * siglip_layer_params(v) + (siglip_head_params(v) if include_head else 0)


def projector_params(cfg: VideoITGConfig) -> int:
    cv, h = cfg.mm_hidden_size, cfg.text.hidden_size
    return cv * h + h + h * h + h


def llm_params(text: TextConfig, include_embeddings: bool = True) -> int:
    h, i = text.hidden_size, text.intermediate_size
    kv = text.num_key_value_heads * text.head_dim
    attn = (h * h + h) + 2 * (h * kv + kv) + h * h  # q/k/v carry a bias in Qwen2, o_proj does not
    per_layer = attn + 3 * h * i + 2 * h
    embed = text.vocab_size * h if include_embeddings else 0
    return embed + text.num_hidden_layers * per_layer + h + (h + 1)  # final norm + out_proj head


def weight_bytes(cfg: VideoITGConfig, path: Path = "ours", dtype_bytes: int = 2) -> dict[str, int]:
    """Weights resident on the device. Our path loads only the vision layers it runs."""
    v = cfg.vision
    layers = cfg.vision_layers_used if path == "ours" else v.num_hidden_layers
    return {
        "vision": dtype_bytes * vision_params(v, layers, include_head=path == "baseline"),
        "projector": dtype_bytes * projector_params(cfg),
        "llm": dtype_bytes * llm_params(cfg.text),
    }


# ---- activations -----------------------------------------------------------------------------------------------
def vision_chunk_transient(v: VisionConfig, chunk: int, dtype_bytes: int, kernel: AttentionKernel = "flash") -> int:
    """Largest set of live tensors inside one encoder layer over `chunk` frames (see the module docstring)."""
    n, d, i = v.tokens_per_frame, v.hidden_size, v.intermediate_size
    attn = 6 * chunk * n * d
    if kernel == "math":
        attn += 2 * chunk * v.num_attention_heads * n * n  # scores and their softmax
    mlp = 3 * chunk * n * d + 2 * chunk * n * i
    return dtype_bytes * max(attn, mlp)


def llm_layer_transient(
    text: TextConfig, seq_len: int, batch: int, dtype_bytes: int, kernel: AttentionKernel = "flash"
) -> int:
    h, i = text.hidden_size, text.intermediate_size
    attn = 8 * seq_len * h
    if kernel == "math":
        attn += 2 * text.num_attention_heads * seq_len * seq_len
    mlp = 2 * seq_len * h + 3 * seq_len * i
    return batch * dtype_bytes * max(attn, mlp)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes. `phases` = retained + transient of each phase, on top of the weights; `peak` = weights + max phase."""

    weights: dict[str, int]
    phases: dict[str, int]
    retained: dict[str, int] = field(default_factory=dict)

    @property
    def weight_total(self) -> int:
        return sum(self.weights.values())

    @property
    def activation_peak(self) -> int:
        return max(self.phases.values(), default=0)

    @property
    def peak(self) -> int:
        return self.weight_total + self.activation_peak

    def as_dict(self) -> dict[str, object]:
        return {
            "weights": dict(self.weights), "phases": dict(self.phases), "retained": dict(self.retained),
            "weight_total": self.weight_total, "activation_peak": self.activation_peak, "peak": self.peak,
        }


def request_memory(
    cfg: VideoITGConfig,
    num_frames: int,
    instruction_len: int,
    path: Path = "ours",
    chunk: int = 384,
    dtype_bytes: int = 2,
    kernel: AttentionKernel = "flash",
    batch: int = 1,
    cached_video: bool = False,
) -> MemoryEstimate:
    """Peak device memory of `batch` requests run together (padded LLM batch; vision one request after another).

    chunk: frames per vision-tower call (the original uses 384). For the baseline, `kernel` applies to both towers.
    cached_video: the projected visual features are already on the device (only the LLM runs).
    """
    if path not in ("ours", "baseline"):
        raise ValueError(f"path must be 'ours' or 'baseline', got {path!r}")
    if chunk < 1 or num_frames < 1 or batch < 1:
        raise ValueError("chunk, num_frames and batch must be >= 1")
    v, t, b = cfg.vision, cfg.text, dtype_bytes
    n, cv, h = v.tokens_per_frame, v.hidden_size, t.hidden_size
    c = min(chunk, num_frames)
    vis_tok = visual_tokens(cfg, num_frames)
    seq = sequence_length(cfg, num_frames, instruction_len)

    retained: dict[str, int] = {
        "pixels": b * num_frames * v.num_channels * v.image_size**2,
        "encoder_features": b * num_frames * n * cv,
        "visual_embeddings": batch * b * vis_tok * h,
    }
    if path == "baseline":
        retained["vision_hidden_states_chunk"] = b * (v.num_hidden_layers + 1) * c * n * cv
        retained["llm_hidden_states"] = batch * b * (t.num_hidden_layers + 1) * seq * h
    phases: dict[str, int] = {}
    if not cached_video:
        # One request's tower at a time: earlier requests of the batch hold only their projected embeddings.
        held = retained["pixels"] + retained["encoder_features"] + (batch - 1) * b * vis_tok * h
        phases["vision"] = held + vision_chunk_transient(v, c, b, kernel) + retained.get(
            "vision_hidden_states_chunk", 0
        )
        # torch.cat of the per-chunk outputs: the chunks and their concatenation are alive together
        phases["vision_concat"] = held + retained["encoder_features"]
        side = cfg.tokens_per_side(num_frames)
        resized = b * num_frames * side * side * cv
        # the resize reads a channels-first copy of the features; the MLP then holds fc1, GELU and fc2 outputs
        phases["projector"] = held + resized + max(retained["encoder_features"], 3 * b * vis_tok * h)
    # LLM: the visual embeddings (the cacheable part) stay alive; inputs_embeds is a concatenated copy.
    llm_held = retained["visual_embeddings"] + batch * b * seq * h
    if batch > 1:
        llm_held += batch * b * seq * seq  # additive padding mask [B, 1, L, L] in the model dtype
    phases["llm"] = llm_held + llm_layer_transient(t, seq, batch, b, kernel) + retained.get("llm_hidden_states", 0)
    return MemoryEstimate(weights=weight_bytes(cfg, path, b), phases=phases, retained=retained)


def max_chunk_for_budget(
    cfg: VideoITGConfig, num_frames: int, instruction_len: int, budget_bytes: float, dtype_bytes: int = 2
) -> int:
    """Largest vision chunk (frames) whose modelled peak stays within `budget_bytes` on our path (0 if none does)."""
    lo, hi = 0, num_frames
    while lo < hi:
        mid = (lo + hi + 1) // 2
        est = request_memory(cfg, num_frames, instruction_len, "ours", chunk=mid, dtype_bytes=dtype_bytes)
        if est.peak <= budget_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo
