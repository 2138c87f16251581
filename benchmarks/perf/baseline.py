"""The original VideoITG inference path, rebuilt from the same library calls, as the benchmarks' baseline.

What the released code does for one request: HF `SiglipVisionModel` over every layer with
`output_hidden_states=True` in chunks of 384 frames (post-norm and pooling head computed and thrown away), keep
`hidden_states[-2]`; the seq_mlp projector (bilinear resize, Linear-GELU-Linear); HF `Qwen2Model` with every
layer's `self_attn.is_causal = False` and `output_hidden_states=True`; per-frame mean pool; `out_proj`.
The original runs flash-attn 2; flash-attn cannot be installed here, so both towers use PyTorch SDPA (which has
flash kernels of its own) here and in our path alike.

The HF modules take their weights from a core-model state dict (same parameter names as the released checkpoint),
so the baseline and our path compute the same function and their scores can be compared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from videoitg.config import TextConfig, VideoITGConfig, VisionConfig

if TYPE_CHECKING:  # transformers' model classes take seconds to import: imported where a baseline is built
    from transformers import Qwen2Config, Qwen2Model, SiglipVisionConfig

ORIGINAL_CHUNK = 384  # frames per SigLIP call in clip_encoder.py
VISION_PREFIX = "model.vision_tower.vision_tower."
PROJECTOR_PREFIX = "model.mm_projector."


def hf_siglip_config(v: VisionConfig) -> SiglipVisionConfig:
    from transformers import SiglipVisionConfig

    d = v.to_hf_dict()
    d.pop("model_type", None)
    cfg = SiglipVisionConfig(**d)
    cfg._attn_implementation = "sdpa"
    return cfg


def hf_qwen2_config(t: TextConfig) -> Qwen2Config:
    from transformers import Qwen2Config

    cfg = Qwen2Config(
        vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_hidden_layers, num_attention_heads=t.num_attention_heads,
        num_key_value_heads=t.num_key_value_heads, rms_norm_eps=t.rms_norm_eps, rope_theta=t.rope_theta,
        max_position_embeddings=t.max_position_embeddings, use_sliding_window=False, tie_word_embeddings=False,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


class OriginalPath(nn.Module):
    """Baseline: the released inference path (see the module docstring). Batch 1, like the original eval."""

    def __init__(self, cfg: VideoITGConfig, chunk: int = ORIGINAL_CHUNK) -> None:
        from transformers import Qwen2Model, SiglipVisionModel

        super().__init__()
        self.cfg, self.chunk = cfg, chunk
        self.vision = SiglipVisionModel(hf_siglip_config(cfg.vision))
        h = cfg.text.hidden_size
        self.mm_projector = nn.Module()
        self.mm_projector.out_projection = nn.Sequential(nn.Linear(cfg.mm_hidden_size, h), nn.GELU(), nn.Linear(h, h))
        self.llm = Qwen2Model(hf_qwen2_config(cfg.text))
        for layer in self.llm.layers:  # what CustomQwen2DecoderLayer does: full attention in every layer
            layer.self_attn.is_causal = False
        self.out_proj = nn.Linear(h, 1)

    # ---- weights ----------------------------------------------------------------------------------------------
    def load_core_state_dict(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Copy weights from a core-model (checkpoint-named) state dict. Returns the baseline parameters that had
        no counterpart there: only layers past the selected one, post_layernorm and the pooling head may be
        missing (a tower truncated at load time does not hold them; they do not change the scores)."""
        # transformers 4.x nests SiglipVisionModel's weights under `vision_model.`; 5.x holds them directly.
        nested = hasattr(self.vision, "vision_model")
        mapped: dict[str, torch.Tensor] = {}
        for k, val in state.items():
            if k.startswith(VISION_PREFIX):
                rest = k[len(VISION_PREFIX):]
                if not nested and rest.startswith("vision_model."):
                    rest = rest[len("vision_model."):]
                mapped["vision." + rest] = val
            elif k.startswith(PROJECTOR_PREFIX):
                mapped["mm_projector." + k[len(PROJECTOR_PREFIX):]] = val
            elif k.startswith("model."):
                mapped["llm." + k[len("model."):]] = val
            elif k.startswith("out_proj."):
                mapped[k] = val
        result = self.load_state_dict(mapped, strict=False)
        used = self.cfg.vision_layers_used
        bad = [k for k in result.missing_keys if not _is_unused_vision_weight(k, used)]
        if bad:
            raise KeyError(f"core state dict lacks baseline weights: {bad[:5]}{' ...' if len(bad) > 5 else ''}")
        return list(result.missing_keys)

    # ---- the original forward ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[T, 3, S, S] -> [T, N, Cv]: hidden_states[select_layer] of every chunk (all hidden states kept)."""
        sel = self.cfg.mm_vision_select_layer
        outs = []
        for chunk in pixel_values.split(self.chunk):
            out = self.vision(pixel_values=chunk.to(self.dtype), output_hidden_states=True)
            outs.append(out.hidden_states[sel])
        return torch.cat(outs)

    @torch.no_grad()
    def project(self, feats: torch.Tensor) -> torch.Tensor:
        """seq_mlp at inference: resize each frame's grid to HW x HW (bilinear, no antialias), then the MLP."""
        t, n, cv = feats.shape
        g, hw = self.cfg.vision.grid, self.cfg.tokens_per_side(t)
        x = feats.view(t, g, g, cv)
        if hw < g:
            x = F.interpolate(x.permute(0, 3, 1, 2), size=(hw, hw), mode="bilinear", align_corners=False)
            x = x.permute(0, 2, 3, 1)
        return self.mm_projector.out_projection(x.reshape(t * hw * hw, cv)).view(t, hw * hw, -1)

    @torch.no_grad()
    def score_visual(self, visual: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """[T, n, H] visual embeddings + [L] instruction ids -> [T] logits (one non-causal pass, all hidden states)."""
        t, n, h = visual.shape
        text = self.llm.embed_tokens(input_ids.view(1, -1))
        emb = torch.cat([visual.reshape(1, t * n, h).to(text.dtype), text], dim=1)
        out = self.llm(inputs_embeds=emb, output_hidden_states=True, use_cache=False)
        pooled = out.last_hidden_state[0, : t * n].view(t, n, h).mean(dim=1)
        return self.out_proj(pooled).squeeze(-1)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        return self.score_visual(self.project(self.encode_frames(pixel_values)), input_ids)

    @property
    def dtype(self) -> torch.dtype:
        return self.out_proj.weight.dtype


def _is_unused_vision_weight(key: str, used: int) -> bool:
    """Layers past the selected one, post_layernorm and the pooling head: computed by HF, never used."""
    key = key.replace("vision.vision_model.", "vision.", 1)
    if key.startswith(("vision.post_layernorm.", "vision.head.")):
        return True
    prefix = "vision.encoder.layers."
    return key.startswith(prefix) and int(key[len(prefix):].split(".", 1)[0]) >= used


@torch.no_grad()
def check_bidirectional(llm: Qwen2Model, tokens: int = 8) -> bool:
    """True when the first token's output depends on the last token's input, i.e. the pass is not causal.
    A guard against a transformers version that builds an explicit causal mask and ignores `is_causal`."""
    p = next(llm.parameters())
    g = torch.Generator(device=p.device).manual_seed(0)
    x = torch.randn(1, tokens, llm.config.hidden_size, device=p.device, generator=g).to(p.dtype)
    y = x.clone()
    y[0, -1] += 1
    a = llm(inputs_embeds=x, use_cache=False).last_hidden_state[0, 0]
    b = llm(inputs_embeds=y, use_cache=False).last_hidden_state[0, 0]
    return bool((a - b).abs().max() > 0)
