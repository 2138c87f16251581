"""The hot path (videoitg/model/hotpath.py): HF's checkpoint names round trip, GQA without copied K/V heads, the
per-layer compilation, and each GPU-check switch computing the same function as the path it replaces."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.support.model import one_torch_thread, real_shape_config, tiny_config
from videoitg.model.checkpoint import load_checkpoint, save_checkpoint
from videoitg.model.grounding import VideoITG
from videoitg.model.hotpath import HOT_PATH, MLP_MULTIPLE, compile_layers, prepare_inference
from videoitg.model.vision import SiglipMLP


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture
def hot_path() -> Iterator[None]:
    """Restores the switches a test turns off."""
    saved = dataclasses.replace(HOT_PATH)
    yield
    for f in dataclasses.fields(HOT_PATH):
        setattr(HOT_PATH, f.name, getattr(saved, f.name))


def tiny_model(seed: int = 0) -> VideoITG:
    torch.manual_seed(seed)
    model = VideoITG(tiny_config()).eval()
    for p in model.parameters():  # biases and norms away from 0 / 1, so a swapped or dropped part would show
        torch.nn.init.normal_(p, std=0.1 if p.dim() == 1 else 0.05)
    return model


def inputs(cfg, frames: int = 6, tokens: int = 9, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = cfg.vision.image_size
    return torch.randn(frames, 3, s, s, generator=g), torch.randint(0, cfg.text.vocab_size, (tokens,), generator=g)


HF_PARTS = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")


def test_a_checkpoint_round_trip_keeps_hf_names_and_weights(tmp_path: Path) -> None:
    model = tiny_model()
    save_checkpoint(model, tmp_path / "ckpt")
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
    assert all(any(f".{p}.weight" in k for k in names) for p in HF_PARTS)
    assert not [k for k in names if ".qkv." in k or ".gate_up." in k]
    loaded, _ = load_checkpoint(tmp_path / "ckpt", with_tokenizer=False)
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_each_switch_computes_the_same_function(hot_path: None) -> None:
    """The path the GPU check times without a change equals the path with it (fp32, within summation order)."""
    model = tiny_model()
    assert model.config.text.num_key_value_heads < model.config.text.num_attention_heads  # GQA is exercised
    px, ids = inputs(model.config)
    with torch.inference_mode():
        hot = model(px, ids)
        for switch in ("gqa_without_copies", "gelu_epilogue"):
            setattr(HOT_PATH, switch, False)
            assert torch.allclose(model(px, ids), hot, rtol=0, atol=1e-5), switch


def test_the_padded_mlp_computes_the_same_function_and_unpads_to_the_checkpoint(tmp_path: Path) -> None:
    """SigLIP's MLP widened with zeros (what a GPU runs) gives the same logits, and shows the checkpoint's weights
    outside: its state_dict (what the GPU check's released-style model loads, what a checkpoint saves) and what it
    loads are the checkpoint's shapes; unpadded again, every weight is the checkpoint's, bit for bit."""
    model = tiny_model()
    mlps = [m for m in model.modules() if isinstance(m, SiglipMLP)]
    width = model.config.vision.intermediate_size
    assert mlps and width % 80  # the multiple below pads
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kept = model.state_dict(keep_vars=True)  # unpadded, the hooks leave the state as torch gives it
    assert all(kept[f"{name}.{p}"] is getattr(getattr(m, p.split(".")[0]), p.split(".")[1])
               for name, m in model.named_modules() if isinstance(m, SiglipMLP)
               for p in ("fc1.weight", "fc1.bias", "fc2.weight"))
    params = [id(p) for p in model.parameters()]
    px, ids = inputs(model.config)
    with torch.inference_mode():
        want = model(px, ids)
        model.pad_mlps(80)
        got = model(px, ids)
    padded = -(-width // 80) * 80
    for m in mlps:
        assert m.fc1.weight.shape[0] == m.fc1.bias.shape[0] == m.fc2.weight.shape[1] == padded > width
        assert not m.fc1.weight[width:].any() and not m.fc1.bias[width:].any() and not m.fc2.weight[:, width:].any()
    assert torch.allclose(got, want, rtol=0, atol=1e-6)
    assert [id(p) for p in model.parameters()] == params  # the same Parameters: a compiled graph's inputs
    shown = model.state_dict()
    assert all(shown[k].shape == v.shape and torch.equal(shown[k], v) for k, v in before.items())
    save_checkpoint(model, tmp_path / "ckpt")
    other = tiny_model(seed=5)
    other.pad_mlps(80)
    other.load_state_dict(before)  # a padded model takes the checkpoint's shapes, and stays padded
    assert all(m.fc1.weight.shape[0] == padded for m in other.modules() if isinstance(m, SiglipMLP))
    with torch.inference_mode():
        assert torch.allclose(other(px, ids), want, rtol=0, atol=1e-6)
    assert torch.allclose(load_checkpoint(tmp_path / "ckpt", with_tokenizer=False)[0](px, ids), want, rtol=0,
                          atol=1e-6)
    model.pad_mlps(1)
    after = model.state_dict()
    assert all(after[k].shape == v.shape and torch.equal(after[k], v) for k, v in before.items())
    assert all(m.fc2.weight.is_contiguous() and m.fc1.out_features == m.fc2.in_features == width for m in mlps)


def test_the_released_mlp_pads_to_whole_tiles_and_computes_the_same_function() -> None:
    """At SigLIP-so400m's shapes (1,152 wide, MLP 4,304) a GPU's padding gives 4,352 columns (a multiple of 256) and
    the same outputs (fp32: only the summation order of fc2's longer reduction differs)."""
    torch.manual_seed(0)
    mlp = SiglipMLP(real_shape_config().vision).eval()
    assert mlp.width == 4304
    x = torch.randn(2, 50, 1152)
    with torch.inference_mode():
        want = mlp(x)
        mlp.pad(MLP_MULTIPLE)
        got = mlp(x)
    assert mlp.fc1.out_features == mlp.fc2.in_features == 4352
    assert torch.allclose(got, want, rtol=0, atol=1e-5)


def test_gqa_with_padding_and_causal_masks_equals_copied_heads(hot_path: None) -> None:
    """enable_gqa with the padded batch's mask (Variant C) and causally (Variant B's attention) equals K/V heads
    copied per query group."""
    from videoitg.model.qwen2 import Attention, attention_mask, rope_cos_sin

    t = tiny_config().text
    torch.manual_seed(0)
    attn = Attention(t).eval()
    x = torch.randn(2, 11, t.hidden_size)
    cos, sin = rope_cos_sin(torch.arange(11), t.head_dim, t.rope_theta, x.dtype)
    valid = torch.ones(2, 11, dtype=torch.bool)
    valid[1, 7:] = False
    for causal in (False, True):
        mask = attention_mask(valid, causal)
        with torch.inference_mode():
            HOT_PATH.gqa_without_copies = True
            a = attn(x, cos, sin, mask, causal)
            HOT_PATH.gqa_without_copies = False
            b = attn(x, cos, sin, mask, causal)
        assert torch.allclose(a, b, rtol=0, atol=1e-6)


def test_one_graph_per_layer_type_serves_every_layer_and_every_shape() -> None:
    """Regional compilation: the SigLIP layers share one graph and the Qwen2 layers another, for a new frame count and
    instruction length too (dynamic shapes), with no graph break; the compiled model equals the eager one. Traced by
    dynamo with the eager backend (inductor's code generation takes minutes on 2 CPU cores; on a GPU the GPU check
    compiles with it)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = tiny_model()
    first, second = inputs(model.config, 6, 9), inputs(model.config, 5, 7, seed=2)
    with torch.inference_mode():
        eager = [model(*first), model(*second)]
        compile_layers(model, backend="eager")
        compiled = [model(*first), model(*second)]
    cfg = model.config
    assert len(model.transformer_layers()) == cfg.vision_layers_used + cfg.text.num_hidden_layers > 2
    assert counters["stats"]["unique_graphs"] == 2 and not counters["graph_break"]
    for a, b in zip(eager, compiled, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-5)
    torch._dynamo.reset()


def test_prepare_inference_compiles_only_on_a_gpu_and_refuses_an_unknown_precision() -> None:
    model = tiny_model()
    shapes = {k: v.shape for k, v in model.named_parameters()}
    prepare_inference(model)  # a CPU model: unchanged (the MLPs unpadded), not compiled
    assert all(getattr(layer, "_compiled_call_impl", None) is None for layer in model.transformer_layers())
    assert {k: v.shape for k, v in model.named_parameters()} == shapes
    with pytest.raises(ValueError, match="unknown precision"):
        prepare_inference(model, "int4")


def test_vision_bf16_puts_only_the_tower_in_bfloat16() -> None:
    """precision "vision-bf16": the vision tower in bfloat16, the rest in the model's dtype (what
    `videoitg.precision.resolve_precision` gives); the model runs, its features in the projector's dtype."""
    from videoitg.precision import resolve_precision

    assert resolve_precision("vision-bf16", None, "cuda:0") == ("float16", "vision-bf16")
    assert resolve_precision("vision-bf16", None, "cpu") == ("float32", "vision-bf16")
    assert resolve_precision("fp8", None, "cuda") == ("bfloat16", "fp8")
    model = prepare_inference(tiny_model(), "vision-bf16")
    tower = {p.dtype for p in model.model.vision_tower.parameters()}
    rest = {p.dtype for n, p in model.named_parameters() if ".vision_tower." not in f".{n}"}
    assert tower == {torch.bfloat16} and rest == {torch.float32}
    px, ids = inputs(model.config)
    with torch.inference_mode():
        assert model.visual_features(px).dtype == torch.float32 and torch.isfinite(model(px, ids)).all()
