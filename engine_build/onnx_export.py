"""Export the two halves of VideoITG to ONNX (torch.export-based "dynamo" exporter), in the build's precision.

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

Precision lives in the graph: a graph exported from a model loaded in fp16 (or bf16) holds fp16 weights and
activations, with fp32 kept explicitly where the numerics need it, as the torch model computes: SigLIP's layer
norms (`_layer_norm_fp32`; torch's fp16 kernel accumulates in fp32 too), Qwen2's RMSNorm (the model's own
`RMSNorm` normalises in fp32), the per-token head and the per-frame pooling. TensorRT builds such a graph strongly
typed (the only mode TensorRT 11 has), so the plan runs in the graph's types. Inputs and outputs are fp32 at every
precision (cast inside the graph), so one runtime contract serves every build.

The dynamo exporter is used because the legacy TorchScript exporter fails on Qwen2 (`aten::diff`); it writes the
weights to `<file>.data` beside the graph (needed past 2 GB).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from videoitg.model.grounding import VideoITG
from videoitg.model.layout import SequenceLayout, frame_mean_logits
from videoitg.model.qwen2 import run_decoder

OPSET = 18
MAX_FRAMES = 4096  # upper bound of the exported frame axes
GRAPH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notices


def graph_precision(model: nn.Module) -> str:
    """The precision a graph exported from `model` runs in: the dtype its weights were loaded in (read from the
    projector, which a load of either half keeps)."""
    dtype = model.model.mm_projector.out_projection[0].weight.dtype
    return next(name for name, d in GRAPH_DTYPES.items() if d == dtype)


def patch_embed(embeddings: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """`SiglipEmbeddings.forward` with its stride-p convolution written as the matrix product it is ([T, gh·gw, 3p²]
    x [3p², D]): the ONNX Conv operator has no bfloat16 before opset 22, MatMul has. Like the convolution (no
    padding), it sees floor(S / p) patches per side and drops the last S mod p pixels of each (so400m/14 at 384 px:
    27 patches, 6 pixels dropped)."""
    conv = embeddings.patch_embedding
    w = conv.weight  # [D, 3, p, p]
    p = w.shape[-1]
    T, C, H, W = pixel_values.shape
    gh, gw = H // p, W // p
    x = pixel_values[:, :, : gh * p, : gw * p].to(w.dtype)
    x = x.reshape(T, C, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(T, gh * gw, C * p * p)
    return x @ w.reshape(w.shape[0], -1).t() + conv.bias + embeddings.position_embedding.weight


def _layer_norm_fp32(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm computed in fp32 and rounded once to the activations' dtype (a no-op cast at fp32)."""
    w, b = norm.weight.float(), norm.bias.float()
    return F.layer_norm(x.float(), norm.normalized_shape, w, b, norm.eps).to(x.dtype)


class VisionEncoder(nn.Module):
    """SigLIP truncated at the select layer: fp32 pixels in, fp32 features out, the body in the model's dtype."""

    def __init__(self, model: VideoITG):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # The tower's own modules, without VisionTower's python chunk loop (chunking is the runtime's job); each
        # encoder layer as `SiglipEncoderLayer.forward` computes it, its norms in fp32.
        vm = self.model.model.vision_tower.vision_tower.vision_model
        x = patch_embed(vm.embeddings, pixel_values)
        for layer in vm.encoder.layers:
            x = x + layer.self_attn(_layer_norm_fp32(layer.layer_norm1, x))
            x = x + layer.mlp(_layer_norm_fp32(layer.layer_norm2, x))
        return x.float()


class LLMEncoder(nn.Module):
    """The model's decoder stack and final norm (`run_decoder`), then the per-token 1-label head pooled per frame,
    both in fp32 (as `VideoITG.score_features`)."""

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


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_shapes: Any) -> float:
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
    """The graph runs in the dtype `model` was loaded in (`graph_precision`)."""
    s = model.config.vision.image_size
    x = torch.randn(example_frames, 3, s, s)
    n = torch.export.Dim("frames", min=1, max=MAX_FRAMES)
    secs = _export(VisionEncoder(model), (x,), Path(path), ["pixel_values"], ["features"], ({0: n},))
    return ExportResult(Path(path), secs, ["pixel_values"], ["features"],
                        {"pixel_values": {0: "frames"}, "features": {0: "frames"}})


def export_llm(model: VideoITG, path: str | Path) -> ExportResult:
    """Export with example sizes that exercise every dynamic axis (T=3 frames of 4 tokens, 5 instruction tokens,
    anchors when the model is Variant B). The graph runs in the dtype `model` was loaded in."""
    layout = SequenceLayout(3, 4, 5, model.anchors)
    embeds = torch.randn(1, layout.length, model.config.text.hidden_size)
    args = (embeds, layout.segment_ids()[None], torch.arange(layout.num_frames, dtype=torch.int64))
    names = ["inputs_embeds", "segment_ids", "frame_ids"]
    seq, frames = torch.export.Dim("seq", min=2, max=65536), torch.export.Dim("num_frames", min=1, max=MAX_FRAMES)
    dyn = {"inputs_embeds": {1: "seq"}, "segment_ids": {1: "seq"}, "frame_ids": {0: "num_frames"},
           "logits": {1: "num_frames"}}
    secs = _export(LLMEncoder(model), args, Path(path), names, ["logits"], ({1: seq}, {1: seq}, {0: frames}))
    return ExportResult(Path(path), secs, names, ["logits"], dyn)
