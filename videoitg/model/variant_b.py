"""VideoITG Variant B (paper design space): causal attention with one anchor token per frame.

    [visual tokens (frame-major) ; embed(instruction + "\\n") ; anchor_1 .. anchor_T] --Qwen2, causal-->
    logit_t = out_proj(last hidden state at anchor_t)

anchor_t is the mean of frame t's projected visual tokens (the LLM inputs), copied after the instruction. With
causal attention the video prefix never sees the instruction, so its keys/values can be computed once per video
and reused across instructions, and the model fits causal LLM engines. It shares every module, parameter name
and the checkpoint layout with Variant C (`VideoITG`); only `config.attention = "causal"` tells them apart.
"""

from __future__ import annotations

import torch

from videoitg.config import VideoITGConfig
from videoitg.model.grounding import VideoITG


class VideoITGAnchor(VideoITG):
    """Variant B. Same parameters as Variant C; a different sequence layout and causal attention."""

    anchors = True

    def __init__(self, cfg: VideoITGConfig):
        if cfg.attention != "causal":
            raise ValueError("Variant B needs config.attention = 'causal'")
        super().__init__(cfg)

    def score_features(self, visual: list[torch.Tensor], input_ids: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-frame logits (fp32 [T_i]) read at the anchor positions."""
        h = self.hidden_states(visual, input_ids)
        out = []
        for i, (v, ids) in enumerate(zip(visual, input_ids, strict=True)):
            lay = self.layout(v, ids)
            a = h[i, lay.anchor_start : lay.anchor_start + lay.num_frames].float()  # [T, H]
            out.append(a @ self.out_proj.weight[0].float() + self.out_proj.bias.float())
        return out


def model_class(cfg: VideoITGConfig) -> type[VideoITG]:
    """The module class for a config: Variant B when attention is causal, else the released Variant C."""
    return VideoITGAnchor if cfg.attention == "causal" else VideoITG
