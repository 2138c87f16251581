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

from videoitg.model.grounding import VideoITG
from videoitg.model.qwen2 import run_decoder


class VideoITGAnchor(VideoITG):
    """Variant B. Same parameters as Variant C; a different sequence layout and causal attention."""

    def __init__(self, cfg):
        if cfg.attention != "causal":
            raise ValueError("Variant B needs config.attention = 'causal'")
        super().__init__(cfg)

    def anchor_layout(self, visual: torch.Tensor, ids: torch.Tensor) -> tuple[int, int, int]:
        """(visual tokens, instruction tokens, anchors) of one sequence."""
        return visual.shape[0] * visual.shape[1], int(ids.shape[0]), visual.shape[0]

    def embed_batch(
        self, visual: list[torch.Tensor], input_ids: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Right-padded [B, L, H] of [visual ; instruction ; anchors] and the valid mask (None if unpadded)."""
        emb = self.model.embed_tokens
        seqs = []
        for v, ids in zip(visual, input_ids, strict=True):
            T, n, _ = v.shape
            self.check_length(T * n + T, len(ids))
            v = v.to(emb.weight.dtype)
            anchors = v.mean(dim=1)  # [T, H]: one pooled token per frame
            seqs.append(torch.cat([v.flatten(0, 1), emb(ids.to(emb.weight.device)), anchors]))
        lengths = [s.shape[0] for s in seqs]
        L = max(lengths)
        if all(n == L for n in lengths):
            return torch.stack(seqs), None
        x = seqs[0].new_zeros(len(seqs), L, seqs[0].shape[-1])
        valid = torch.zeros(len(seqs), L, dtype=torch.bool, device=x.device)
        for i, s in enumerate(seqs):
            x[i, : s.shape[0]] = s
            valid[i, : s.shape[0]] = True
        return x, valid

    def hidden_states(self, visual: list[torch.Tensor], input_ids: list[torch.Tensor]) -> torch.Tensor:
        """Last hidden states [B, L, H] of the padded batch (causal attention)."""
        x, valid = self.embed_batch(visual, input_ids)
        return run_decoder(self.model.layers, self.model.norm, self.config.text, x, valid, causal=True,
                           checkpoint_layers=self.gradient_checkpointing)

    def score_features(self, visual: list[torch.Tensor], input_ids: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-frame logits (fp32 [T_i]) read at the anchor positions."""
        h = self.hidden_states(visual, input_ids)
        out = []
        for i, (v, ids) in enumerate(zip(visual, input_ids, strict=True)):
            nv, nt, T = self.anchor_layout(v, ids)
            a = h[i, nv + nt : nv + nt + T].float()  # [T, H]
            out.append(a @ self.out_proj.weight[0].float() + self.out_proj.bias.float())
        return out


def model_class(cfg) -> type[VideoITG]:
    """The module class for a config: Variant B when attention is causal, else the released Variant C."""
    return VideoITGAnchor if cfg.attention == "causal" else VideoITG


def load_model(ckpt, device="cpu", dtype=None, vision_tower=None):
    """`videoitg.checkpoint.load_checkpoint`, returning the Variant B class for a causal checkpoint (both
    variants have the same tensors, so only the Python class differs)."""
    import torch

    from videoitg.checkpoint import load_checkpoint

    model, tok = load_checkpoint(ckpt, device, dtype or torch.float32, vision_tower)
    if model.config.attention == "causal" and not isinstance(model, VideoITGAnchor):
        model.__class__ = VideoITGAnchor  # same parameters and attributes; only the forward differs
    return model, tok
