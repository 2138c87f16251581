"""VideoITG Variant C (`EagleQwenG`): which frames matter for an instruction.

    frames [T,3,S,S] --SigLIP (select layer)--> [T, g², Cv] --resize to HW², MLP--> [T, HW², H]   (visual half)
    [visual tokens (frame-major) ; embed(instruction + "\n")] --Qwen2, full attention--> last hidden state
    per frame: mean over its HW² positions --out_proj--> one logit per frame              (grounding half)

The visual half does not depend on the instruction, so it is a separate call (`visual_features`) that servers
cache; `score_features` takes a padded batch of (visual features, instruction ids) pairs.
"""

from __future__ import annotations

import torch
from torch import nn

from videoitg.config import VideoITGConfig
from videoitg.model.layout import SequenceLayout, build_inputs
from videoitg.model.projector import SeqMLPProjector
from videoitg.model.qwen2 import DecoderLayer, RMSNorm, run_decoder
from videoitg.model.vision import SiglipEncoderLayer, VisionTower, embedding


class GroundingLM(nn.Module):
    """The `model.*` namespace of the released checkpoint: Qwen2 body + projector + vision tower."""

    def __init__(self, cfg: VideoITGConfig):
        super().__init__()
        t = cfg.text
        self.embed_tokens = embedding(t.vocab_size, t.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(t) for _ in range(t.num_hidden_layers))
        self.norm = RMSNorm(t.hidden_size, t.rms_norm_eps)
        self.mm_projector = SeqMLPProjector(cfg.mm_hidden_size, t.hidden_size)
        self.vision_tower = VisionTower(cfg.vision, cfg.vision_layers_used)


class VideoITG(nn.Module):
    def __init__(self, cfg: VideoITGConfig):
        super().__init__()
        if cfg.attention == "causal" and not self.anchors:
            # Causal attention without anchors has no trained counterpart: the released model is bidirectional,
            # the causal design is Variant B. `videoitg.model.model_class(cfg)` picks the right one.
            raise ValueError("VideoITG (Variant C) needs attention='bidirectional'; a causal checkpoint is Variant B: "
                             "build it with videoitg.model.model_class(config)")
        self.config = cfg
        self.model = GroundingLM(cfg)
        self.out_proj = nn.Linear(cfg.text.hidden_size, 1)
        self.gradient_checkpointing = False
        self.model.vision_tower.requires_grad_(False)  # frozen in the released recipe

    def reset_head(self) -> None:
        """The released init of the new head: xavier-uniform weight, zero bias."""
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def transformer_layers(self) -> list[nn.Module]:
        """The SigLIP encoder layers and the Qwen2 decoder layers this model holds (a serving step holds one half):
        what `videoitg.model.hotpath` compiles (`videoitg.model.fp8` converts the decoder layers `fp8_layers` names)."""
        tower = self.model.vision_tower
        vision = list(tower.vision_tower.vision_model.encoder.layers) if tower is not None else []
        return vision + list(self.model.layers)

    def pad_mlps(self, multiple: int) -> None:
        """SigLIP's MLPs widened in place with zeros to a multiple of `multiple` (1: the checkpoint's width again):
        `SiglipMLP.pad`, what `videoitg.model.hotpath` does on a GPU."""
        for layer in self.transformer_layers():
            if isinstance(layer, SiglipEncoderLayer):
                layer.mlp.pad(multiple)

    @property
    def causal(self) -> bool:
        return self.config.attention == "causal"

    # ---- visual half (instruction-independent) ---------------------------------------------------------------
    def encode_frames(self, pixel_values: torch.Tensor, chunk_frames: int = 64) -> torch.Tensor:
        """[T, 3, S, S] -> [T, g², Cv]: SigLIP hidden state at `mm_vision_select_layer`."""
        with torch.no_grad():  # frozen tower: never keep its activations for backward
            return self.model.vision_tower(pixel_values, chunk_frames)

    def project(self, feats: torch.Tensor, hw: int) -> torch.Tensor:
        """[T, g², Cv] -> [T, hw², H]."""
        w = self.model.mm_projector.out_projection[0].weight
        return self.model.mm_projector(feats.to(w.dtype), hw)

    def visual_features(
        self, pixel_values: torch.Tensor, hw: int | None = None, chunk_frames: int = 64
    ) -> torch.Tensor:
        """[T, 3, S, S] -> [T, hw², H]; hw defaults to the inference rule for this T."""
        hw = hw or self.config.tokens_per_side(pixel_values.shape[0])
        return self.project(self.encode_frames(pixel_values, chunk_frames), hw)

    # ---- grounding half ----------------------------------------------------------------------------------------
    anchors = False  # Variant B (`VideoITGAnchor`) appends one anchor token per frame

    def layout(self, visual: torch.Tensor, ids: torch.Tensor) -> SequenceLayout:
        """The sequence of one (visual [T, n, H], instruction ids [N]) pair, checked against the length budget.
        The released code truncates an over-long sequence, which cuts into the visual tokens and breaks the
        per-frame reshape; we refuse instead, naming the budget."""
        lay = SequenceLayout(visual.shape[0], visual.shape[1], int(ids.shape[0]), self.anchors)
        lay.check(self.config.tokenizer_model_max_length)
        return lay

    def sequence(self, visual: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """One request's input embeddings [L, H] in the layout of `videoitg.model.layout`."""
        self.layout(visual, ids)
        emb = self.model.embed_tokens
        return build_inputs(visual, emb(ids.to(emb.weight.device)), self.anchors)

    def embed_batch(
        self, visual: list[torch.Tensor], input_ids: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Right-padded [B, L, H] embeddings of each request's `sequence` and the valid mask (None when nothing
        is padded)."""
        seqs = [self.sequence(v, ids) for v, ids in zip(visual, input_ids, strict=True)]
        if len(seqs) == 1:  # the common serving case: a view, not a copy of the whole [L, H] sequence
            return seqs[0][None], None
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
        """Last hidden states [B, L, H] (after the final RMSNorm) of the padded batch."""
        x, valid = self.embed_batch(visual, input_ids)
        return run_decoder(self.model.layers, self.model.norm, self.config.text, x, valid, causal=self.causal,
                           checkpoint_layers=self.gradient_checkpointing)

    def score_features(self, visual: list[torch.Tensor], input_ids: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-frame logits (fp32 [T_i]) for a batch of (visual [T_i, n_i, H], instruction ids [L_i]) pairs.
        Batched scores equal each pair scored alone: padding is masked out of every attention."""
        h = self.hidden_states(visual, input_ids)
        out = []
        for i, v in enumerate(visual):
            T, n = v.shape[0], v.shape[1]
            # mean in fp32 straight from the bf16/fp16 activations (no full-size upcast copy), then the head.
            pooled = h[i, : T * n].view(T, n, -1).mean(dim=1, dtype=torch.float32)  # [T, H]
            out.append(pooled @ self.out_proj.weight[0].float() + self.out_proj.bias.float())
        return out

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """One video, one instruction: [T, 3, S, S], [L] -> logits [T]."""
        return self.score_features([self.visual_features(pixel_values)], [input_ids])[0]
