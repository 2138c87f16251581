"""Export the two halves of VideoITG to ONNX (torch.export-based "dynamo" exporter).

Vision graph  `pixel_values [N, 3, S, S]` -> `features [N, g², Cv]` (SigLIP through the select layer). N (the
frame batch) is dynamic; a request of 512 frames runs in chunks of at most the engine's profile maximum. The
projector stays outside (its resize depends on the request's frame count): `videoitg.engines.runtimes`.

Grounding graph: `inputs_embeds [1, L, H]` (the sequence of `videoitg.model.layout`: visual rows, instruction
embeddings, and for Variant B the anchors), `segment_ids [1, L]` (the frame each position pools into) and
`frame_ids [T]` (0..T-1; only its length matters) -> `logits [1, T]`. L and T are dynamic, so one graph serves
every T although tokens per frame change with T. One request per call: no attention mask, so attention stays the
plain pattern TensorRT fuses into flash-style kernels. The decoder is the model's own `run_decoder` (full
attention for Variant C, causal for Variant B); the head is the per-token 1-label score pooled per frame, so no
hidden state leaves the graph.

The dynamo exporter is used because the legacy TorchScript exporter fails on Qwen2 (`aten::diff`); it writes the
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
from videoitg.model.layout import SequenceLayout, frame_mean_logits
from videoitg.model.qwen2 import run_decoder

OPSET = 18
MAX_FRAMES = 4096  # upper bound of the exported frame axes
logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notices


class VisionEncoder(nn.Module):
    """SigLIP truncated at the select layer."""

    def __init__(self, model: VideoITG):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # The tower's own module, without VisionTower's python chunk loop (chunking is the runtime's job).
        return self.model.model.vision_tower.vision_tower.vision_model(pixel_values)


class LLMEncoder(nn.Module):
    """The model's decoder stack and final norm (`run_decoder`), then the per-token 1-label head pooled per frame."""

    def __init__(self, model: VideoITG):
        super().__init__()
        self.model = model

    def forward(self, inputs_embeds: torch.Tensor, segment_ids: torch.Tensor, frame_ids: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = inputs_embeds.to(m.out_proj.weight.dtype)
        h = run_decoder(m.model.layers, m.model.norm, m.config.text, x, None, causal=m.causal)  # [1, L, H]
        scores = h.float() @ m.out_proj.weight[0].float()  # [1, L] per-token 1-label head
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


def export_vision(model: VideoITG, path: str | Path, example_frames: int = 2) -> ExportResult:
    s = model.config.vision.image_size
    dtype = model.out_proj.weight.dtype
    x = torch.randn(example_frames, 3, s, s, dtype=dtype)
    n = torch.export.Dim("frames", min=1, max=MAX_FRAMES)
    secs = _export(VisionEncoder(model), (x,), Path(path), ["pixel_values"], ["features"], ({0: n},))
    return ExportResult(Path(path), secs, ["pixel_values"], ["features"],
                        {"pixel_values": {0: "frames"}, "features": {0: "frames"}})


def export_llm(model: VideoITG, path: str | Path) -> ExportResult:
    """Export with example sizes that exercise every dynamic axis (T=3 frames of 4 tokens, 5 instruction tokens,
    anchors when the model is Variant B)."""
    layout = SequenceLayout(3, 4, 5, model.anchors)
    embeds = torch.randn(1, layout.length, model.config.text.hidden_size, dtype=model.out_proj.weight.dtype)
    args = (embeds, layout.segment_ids()[None], torch.arange(layout.num_frames, dtype=torch.int64))
    names = ["inputs_embeds", "segment_ids", "frame_ids"]
    seq, frames = torch.export.Dim("seq", min=2, max=65536), torch.export.Dim("num_frames", min=1, max=MAX_FRAMES)
    dyn = {"inputs_embeds": {1: "seq"}, "segment_ids": {1: "seq"}, "frame_ids": {0: "num_frames"},
           "logits": {1: "num_frames"}}
    secs = _export(LLMEncoder(model), args, Path(path), names, ["logits"], ({1: seq}, {1: seq}, {0: frames}))
    return ExportResult(Path(path), secs, names, ["logits"], dyn)
