"""Export the two halves of VideoITG to ONNX (torch.export-based "dynamo" exporter).

Vision graph  `pixel_values [N, 3, S, S]` -> `features [N, g², Cv]` (SigLIP through the select layer), or with
a fixed `hw` the projector fused in: -> `visual [N, hw², H]`. N (the frame batch) is dynamic; a request of 512
frames runs in chunks of at most the engine's profile maximum.

LLM graph (the grounding half as an encoder): `inputs_embeds [B, L, H]` (visual rows, then instruction
embeddings), `segment_ids [B, L]` (frame index of each visual token, -1 text, -2 padding), `frame_ids [T]`
(0..T-1; only its length matters) and, in the padded-batch variant, `attention_mask [B, L]` -> `logits [B, T]`.
B, L and T are dynamic, so one graph serves every T although tokens per frame change with T. Attention is the
checkpoint's (full for Variant C). The head is the per-token 1-label score pooled per frame
(`videoitg.model.layout`), so no hidden state leaves the graph.

The modules here only wire the core model's own submodules (`videoitg.model`): no model code is copied. The
dynamo exporter is used because the legacy TorchScript exporter fails on Qwen2 (`aten::diff`); it writes the
weights to `<file>.data` beside the graph (needed past 2 GB).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from videoitg.model import VideoITG
from videoitg.model.layout import PAD_SEGMENT, frame_mean_logits
from videoitg.model.projector import resize_grid
from videoitg.model.qwen2 import rope_cos_sin

OPSET = 18
MAX_FRAMES = 4096  # upper bound of the exported frame axes
logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notices


class VisionEncoder(nn.Module):
    """SigLIP truncated at the select layer, optionally followed by the projector at a fixed hw."""

    def __init__(self, model: VideoITG, hw: int | None = None):
        super().__init__()
        self.model, self.hw = model, hw

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # The tower's own module, without VisionTower's python chunk loop (chunking is the runtime's job).
        feats = self.model.model.vision_tower.vision_tower.vision_model(pixel_values)
        if self.hw is None:
            return feats
        # The projector's own resize, with one chunk spanning the whole exported frame range: its python chunk
        # loop would otherwise pin the frame axis (torch.export guards `frames <= chunk`).
        return self.model.model.mm_projector.out_projection(resize_grid(feats, self.hw, chunk_frames=MAX_FRAMES))


class LLMEncoder(nn.Module):
    """Decoder stack + final norm + per-token 1-label head + per-frame mean, on input embeddings.

    `padded=False` (one request per call) builds no attention mask, so attention stays the plain SDPA pattern
    TensorRT fuses into flash-style kernels; a [B, 1, L, L] mask can prevent that fusion (then L² scores per
    head are materialised: 0.34 GB per head at L = 13k in fp16). `padded=True` takes `attention_mask` for
    batches of right-padded requests."""

    def __init__(self, model: VideoITG, padded: bool = False):
        super().__init__()
        self.model, self.padded = model, padded

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        segment_ids: torch.Tensor,
        frame_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        m, cfg = self.model, self.model.config.text
        B, L, _ = inputs_embeds.shape
        x = inputs_embeds.to(m.out_proj.weight.dtype)
        cos, sin = rope_cos_sin(torch.arange(L, device=x.device), cfg.head_dim, cfg.rope_theta, x.dtype)
        mask = None
        if attention_mask is not None:
            keys = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, L]: padded keys are hidden from all
            mask = keys.expand(B, 1, L, L)
            if m.causal:
                mask = mask & torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
                mask = mask | torch.eye(L, dtype=torch.bool, device=x.device)  # no empty row on padding
        for layer in m.model.layers:
            x = layer(x, cos, sin, mask, m.causal)
        h = m.model.norm(x)
        scores = h.float() @ m.out_proj.weight[0].float()  # [B, L] per-token 1-label head
        return frame_mean_logits(scores, segment_ids, frame_ids, m.out_proj.bias.float())


@dataclass
class ExportResult:
    path: Path
    seconds: float
    input_names: list[str]
    output_names: list[str]
    dynamic: dict[str, dict[int, str]]


def _export(module: nn.Module, args: tuple, path: Path, input_names, output_names, dynamic_shapes) -> float:
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, unused axis names) buries the progress
        prog = torch.onnx.export(
            module.eval(),
            args,
            dynamo=True,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    # Weights go to `<name>.data` whatever their size, so a 7B graph (15 GB) and a tiny one look alike.
    prog.save(str(path), external_data=True)
    return time.perf_counter() - t0


def export_vision(model: VideoITG, path: str | Path, hw: int | None = None, example_frames: int = 2) -> ExportResult:
    s = model.config.vision.image_size
    dtype = model.out_proj.weight.dtype
    x = torch.randn(example_frames, 3, s, s, dtype=dtype)
    n = torch.export.Dim("frames", min=1, max=MAX_FRAMES)
    out = "features" if hw is None else "visual"
    secs = _export(VisionEncoder(model, hw), (x,), Path(path), ["pixel_values"], [out], ({0: n},))
    return ExportResult(Path(path), secs, ["pixel_values"], [out], {"pixel_values": {0: "frames"}, out: {0: "frames"}})


def export_llm(model: VideoITG, path: str | Path, padded: bool = False) -> ExportResult:
    """Export with example sizes that exercise every dynamic axis (B=2 when padded, T=3 frames of 4 tokens)."""
    h = model.config.text.hidden_size
    dtype = model.out_proj.weight.dtype
    B, T, n, text = (2 if padded else 1), 3, 4, 5
    L = T * n + text + (2 if padded else 0)
    seg = torch.full((B, L), PAD_SEGMENT, dtype=torch.int64)
    seg[:, : T * n] = torch.arange(T).repeat_interleave(n)
    seg[:, T * n : T * n + text] = -1
    args: tuple = (torch.randn(B, L, h, dtype=dtype), seg, torch.arange(T, dtype=torch.int64))
    names = ["inputs_embeds", "segment_ids", "frame_ids"]
    b = torch.export.Dim("batch", min=1, max=64) if padded else None
    seq, frames = torch.export.Dim("seq", min=2, max=65536), torch.export.Dim("num_frames", min=1, max=MAX_FRAMES)
    shapes: list[dict] = [{0: b, 1: seq} if padded else {1: seq}, {0: b, 1: seq} if padded else {1: seq}, {0: frames}]
    dyn = {
        "inputs_embeds": {1: "seq"},
        "segment_ids": {1: "seq"},
        "frame_ids": {0: "num_frames"},
        "logits": {1: "num_frames"},
    }
    if padded:
        mask = torch.ones(B, L, dtype=torch.int64)
        mask[1, -2:] = 0
        args += (mask,)
        names.append("attention_mask")
        shapes.append({0: b, 1: seq})
        dyn.update({"attention_mask": {0: "batch", 1: "seq"}})
        for k in ("inputs_embeds", "segment_ids", "logits"):
            dyn[k][0] = "batch"
    secs = _export(LLMEncoder(model, padded), args, Path(path), names, ["logits"], tuple(shapes))
    return ExportResult(Path(path), secs, names, ["logits"], dyn)
