"""What a build gives TensorRT for each plan (`engine_build.build.plan_inputs`: the graph, its optimisation profiles
from `engine_build.trt_builder`, the precision and the workspace), at the released model's shapes: checked against
the graphs the real-shape tier exports and against the sizes the released configs and token budget give. TensorRT
itself cannot run here (docs/engines.md); this is everything up to `build_plan`."""

from __future__ import annotations

from pathlib import Path

import onnx

from tests.support.model import real_shape_config
from videoitg.engine_build.build import BuildOptions, plan_inputs
from videoitg.engine_build.onnx_export import ExportResult
from videoitg.engine_build.trt_builder import LLMProfileSpec
from videoitg.engines.manifest import EngineManifest, Profile
from videoitg.engines.runtimes import max_sequence_length
from videoitg.model.files import load_config
from videoitg.model.token_budget import visual_tokens


def _exported(engines: Path, name: str) -> ExportResult:
    """A graph `videoitg build` wrote, as the build holds it (from its manifest)."""
    path = engines / "onnx" / f"{name}.onnx"
    io = EngineManifest.read(path).io
    return ExportResult(path, 0.0, io["inputs"], io["outputs"], io["dynamic_axes"])


def _graph_dims(path: Path) -> dict[str, list[int | str]]:
    g = onnx.load(str(path), load_external_data=False).graph
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in g.input}


def _covers(profile: Profile, dims: list[int | str]) -> bool:
    """The profile gives every axis of the graph's input: a fixed axis its size at min, opt and max, a symbolic one
    a range min <= opt <= max."""
    if not len(profile.min) == len(profile.opt) == len(profile.max) == len(dims):
        return False
    for axis, d in enumerate(dims):
        lo, opt, hi = profile.min[axis], profile.opt[axis], profile.max[axis]
        if isinstance(d, int) and not lo == opt == hi == d:
            return False
        if not 1 <= lo <= opt <= hi:
            return False
    return True


def test_real_shape_plan_inputs_match_the_graphs_and_the_released_budget(real_shape_checkpoint, real_shape_engines):
    """A GPU build of the real-shape checkpoint (fp16, the defaults: 512 frames, 128-frame vision chunks, 1024
    instruction tokens) asks TensorRT for: the vision plan at 384 px, 1..128 frames; the grounding plan over 2..17,408
    tokens of width 3584 (16,384 visual tokens at T = 64 or 256, plus 1024 instruction tokens; opt at one 512-frame
    request, 12,800 + 160) and 1..512 frames. Every profile names an input of its graph and gives each fixed axis
    the graph's own size."""
    cfg, _ = load_config(real_shape_checkpoint)
    opts = BuildOptions(checkpoint=real_shape_checkpoint, out=real_shape_engines, precision="fp16")
    graphs = {name: _exported(real_shape_engines, name) for name in ("vision", "llm")}
    plans = {p.name: p for p in plan_inputs(opts, cfg, graphs)}
    assert set(plans) == {"vision", "llm"}
    assert all(p.precision == "fp16" and p.workspace_gib == 8.0 for p in plans.values())
    vision = {p.input: p for p in plans["vision"].profiles}
    assert vision["pixel_values"] == Profile("pixel_values", [1, 3, 384, 384], [128, 3, 384, 384], [128, 3, 384, 384])
    assert [visual_tokens(cfg, t) for t in (64, 256, 512)] == [16384, 16384, 12800]
    assert max_sequence_length(cfg, 512, 1024) == 17408
    llm = {p.input: p for p in plans["llm"].profiles}
    assert llm["inputs_embeds"] == Profile("inputs_embeds", [1, 2, 3584], [1, 12960, 3584], [1, 17408, 3584])
    assert llm["segment_ids"] == Profile("segment_ids", [1, 2], [1, 12960], [1, 17408])
    assert llm["frame_ids"] == Profile("frame_ids", [1], [512], [512])
    for name, plan in plans.items():
        dims = _graph_dims(plan.onnx)
        assert set(dims) == {p.input for p in plan.profiles}, name  # every input has a profile, every profile an input
        for p in plan.profiles:
            assert _covers(p, dims[p.input]), (name, p, dims[p.input])


def test_real_shape_variant_b_profile_counts_its_anchors():
    """Variant B appends one anchor per frame: its longest admitted sequence is T = 455 (6 x 6 tokens per frame,
    16,380 visual + 455 anchors) plus 1024 instruction tokens = 17,859."""
    cfg = real_shape_config(attention="causal")
    assert LLMProfileSpec.for_model(cfg, 512, 1024).max_len == 17859
