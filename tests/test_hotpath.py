"""The hot-path switches (benchmarks/perf/hotpath.py) compute the released function: each one, alone and all
together, against the transformers reference at fp32 on the CPU; fusion keeps the checkpoint names."""

from __future__ import annotations

import pytest
import torch

from benchmarks.perf.attention import AttnShape, best_kernel, kernel_table, kernels_used, priority_order
from benchmarks.perf.frames import pixel_values, upload
from benchmarks.perf.hotpath import HotPath, fuse_projections
from tests.support.model import build_tiny_checkpoint, hf_reference, reference_logits, tiny_config
from videoitg.model import VideoITG
from videoitg.preprocess import normalize

SWITCHES = [HotPath(fuse=True), HotPath(native_gqa=True), HotPath(attention=("math",)),
            HotPath(attention=("flash",)), HotPath(fuse=True, native_gqa=True, attention=("flash", "math"))]


def _model_and_reference(seed: int = 0):
    torch.manual_seed(seed)
    model = VideoITG(tiny_config(vocab_size=300)).eval()
    model.reset_head()
    sig, qwen = hf_reference(model)
    return model, sig, qwen


@pytest.mark.parametrize("hot", SWITCHES, ids=lambda h: h.label)
def test_switch_matches_transformers_reference(hot: HotPath) -> None:
    model, sig, qwen = _model_and_reference()
    S = model.config.vision.image_size
    g = torch.Generator().manual_seed(1)
    pv, ids = torch.randn(6, 3, S, S, generator=g), torch.randint(0, 300, (7,), generator=g)
    with torch.no_grad():
        ref = reference_logits(model, sig, qwen, pv, ids)
        hot.apply(model)
        ours = model(pv, ids)
    assert (ours - ref).abs().max().item() < 1e-5


def test_switches_change_the_modules() -> None:
    """Guard the test above: the switches really reach the modules they claim to."""
    torch.manual_seed(0)
    model = VideoITG(tiny_config())
    HotPath(fuse=True, native_gqa=True, attention=("flash",)).apply(model)
    layer = model.model.layers[0]
    assert hasattr(layer.self_attn, "qkv_proj") and not hasattr(layer.self_attn, "q_proj")
    assert hasattr(layer.mlp, "gate_up_proj") and not hasattr(layer.mlp, "up_proj")
    tower = model.model.vision_tower.vision_tower.vision_model.encoder.layers[0]
    assert hasattr(tower.self_attn, "qkv_proj")
    assert layer.self_attn.native_gqa and layer.self_attn.sdpa_backends is not None
    assert tower.self_attn.sdpa_backends is not None
    assert fuse_projections(model) == 0  # idempotent


def test_pinned_kernel_is_the_one_that_runs() -> None:
    torch.manual_seed(0)
    model = VideoITG(tiny_config()).eval()
    S = model.config.vision.image_size
    pv, ids = torch.randn(2, 3, S, S), torch.randint(0, 512, (5,))
    with torch.no_grad():
        HotPath(attention=("math",)).apply(model)
        math = kernels_used(lambda: model(pv, ids))
        HotPath(attention=("flash",)).apply(model)
        flash = kernels_used(lambda: model(pv, ids))
    layers = model.config.vision_layers_used + model.config.text.num_hidden_layers
    assert {r["kernel"] for r in math} == {"math"} and sum(r["calls"] for r in math) == layers
    assert {r["kernel"] for r in flash} == {"flash (cpu)"} and sum(r["calls"] for r in flash) == layers


def test_fused_model_keeps_the_checkpoint_format(tmp_path) -> None:
    from videoitg.checkpoint import load_checkpoint, save_checkpoint

    ckpt = build_tiny_checkpoint(tmp_path / "ckpt")
    model, tok = load_checkpoint(ckpt, "cpu", torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fuse_projections(model)
    after = model.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    model.load_state_dict(before)  # HF names load into a fused model
    save_checkpoint(model, tmp_path / "resaved", tok)
    again, _ = load_checkpoint(tmp_path / "resaved", "cpu", torch.float32)
    assert all(torch.equal(before[k], v) for k, v in again.state_dict().items())


def test_uint8_frames_normalise_like_the_cpu_path() -> None:
    frames = torch.randint(0, 256, (3, 5, 5, 3), dtype=torch.uint8)
    ref = normalize(frames.numpy())
    chw = frames.permute(0, 3, 1, 2).contiguous()
    assert torch.equal(pixel_values(chw), ref)
    assert torch.equal(upload(chw, torch.device("cpu"), torch.float32), ref)
    assert torch.equal(pixel_values(chw, torch.bfloat16), ref.to(torch.bfloat16))


def test_kernel_table_on_cpu() -> None:
    shapes = [AttnShape("llm", 1, 4, 2, 130, 16), AttnShape("vision", 2, 4, 4, 49, 12)]
    table = kernel_table(shapes, torch.device("cpu"), torch.float32, ["flash", "math", "efficient"], iters=1)
    for s in ("llm", "vision"):
        assert table[s]["math"]["runs"] and table[s]["math"]["rel_l2"] < 1e-5
        assert table[s]["flash"]["runs"] and table[s]["flash"]["rel_l2"] < 1e-5
        assert table[s]["efficient"]["runs"] is False and table[s]["efficient"]["why"]
        assert best_kernel(table, s) in ("flash", "math")
    assert table["llm"]["flops"] == 4 * 4 * 130 * 130 * 16
    assert "MATH" in priority_order() and "FLASH_ATTENTION" in priority_order()


@pytest.mark.slow
def test_compiled_layers_match_transformers_reference() -> None:
    """torch.compile of every layer (inductor's fused elementwise kernels) with the other switches on (~20 s)."""
    model, sig, qwen = _model_and_reference()
    S = model.config.vision.image_size
    pv, ids = torch.randn(4, 3, S, S), torch.randint(0, 300, (5,))
    with torch.no_grad():
        ref = reference_logits(model, sig, qwen, pv, ids)
        HotPath(fuse=True, native_gqa=True, compile=True).apply(model)
        ours = model(pv, ids)
    assert (ours - ref).abs().max().item() < 1e-5
    assert model.model.layers[0]._compiled_call_impl is not None
