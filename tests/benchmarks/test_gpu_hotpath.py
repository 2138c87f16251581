"""The arithmetic and the switches of the GPU check's hot-path sections (benchmarks/gpu/gpu_hotpath.py), without a GPU:
the floors each ratio names, the per-tower FLOP split, the clock samples as nvidia-smi writes them, and the variants'
switches. (Every line of both sections runs in the bare-image rehearsal, tests/benchmarks/test_gpu_check.py.)"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from benchmarks.gpu import gpu_hotpath
from benchmarks.perf.flops import request_flops
from tests.support.model import tiny_config
from videoitg.config import VideoITGConfig
from videoitg.model.grounding import VideoITG
from videoitg.model.hotpath import HOT_PATH, MLP_MULTIPLE
from videoitg.model.vision import SiglipMLP


def test_the_tower_split_adds_up_to_the_request() -> None:
    cfg = VideoITGConfig()
    split = gpu_hotpath.tower_flops(cfg, 512, 150)
    f = request_flops(cfg, 512, 150)
    assert sum(t["gemm"] + t["attention"] for t in split.values()) == f.total
    for t in split.values():  # what FP8 runs and what stays 16-bit are the GEMMs
        assert t["fp8_gemm"] + t["other_gemm"] == t["gemm"]
    # `--precision fp8` keeps the vision tower 16-bit, and 2 of Qwen2-7B's 28 decoder layers
    assert split["vision"]["fp8_gemm"] == 0 and split["grounding"]["fp8_gemm"] * 28 == f.llm_linear * 26


def test_the_fp8_split_counts_the_gemms_the_fp8_model_runs() -> None:
    """The FLOPs of every FP8 GEMM a tiny model in `--precision fp8` runs on one request (counted from the
    Float8Linear calls' shapes), against `tower_flops`' fp8_gemm; the model's other linear layers against the rest."""
    from videoitg.model.fp8 import Float8Linear, to_fp8

    cfg = tiny_config()
    cfg.text = dataclasses.replace(cfg.text, num_hidden_layers=4)
    model = to_fp8(VideoITG(cfg).to(torch.bfloat16).eval())
    counted = {"fp8": 0, "16-bit": 0}

    def count(kind: str):
        def hook(module: torch.nn.Module, args: tuple, _out: object) -> None:
            x = args[0]
            counted[kind] += 2 * x.numel() * module.out_features
        return hook

    for m in model.modules():
        if isinstance(m, Float8Linear):
            m.register_forward_hook(count("fp8"))
        elif isinstance(m, torch.nn.Linear) and m not in list(model.model.vision_tower.modules()) and \
                m not in list(model.model.mm_projector.modules()):
            m.register_forward_hook(count("16-bit"))
    T, L = 4, 6
    frames = torch.rand(T, 3, cfg.vision.image_size, cfg.vision.image_size, dtype=torch.bfloat16)
    with torch.inference_mode():
        model(frames, torch.randint(0, cfg.text.vocab_size, (L,)))
    split = gpu_hotpath.tower_flops(cfg, T, L)["grounding"]
    assert counted["fp8"] == split["fp8_gemm"] > 0
    # the 16-bit decoder layers' linear layers, and the 1-logit head (fp32 on pooled frames: not an nn.Linear)
    assert counted["16-bit"] + request_flops(cfg, T, L).head == split["other_gemm"] > counted["16-bit"] > 0


def test_floors_are_flops_over_the_rates_they_name() -> None:
    split = {"vision": {"gemm": 100, "attention": 10, "fp8_gemm": 90, "other_gemm": 10},
             "projector": {"gemm": 4, "attention": 0, "fp8_gemm": 0, "other_gemm": 4},
             "grounding": {"gemm": 50, "attention": 20, "fp8_gemm": 49, "other_gemm": 1}}
    f = gpu_hotpath.floors(split, gemm=2.0, fp8=4.0, vis_att=5.0, llm_att=10.0)
    assert f["vision"] == 100 / 2 + 10 / 5 and f["projector"] == 2 and f["grounding"] == 50 / 2 + 20 / 10
    assert f["cold"] == f["vision"] + f["projector"] + f["grounding"] and f["cached"] == f["grounding"]
    assert f["fp8_cold"] == (90 + 49) / 4 + (10 + 4 + 1) / 2 + 10 / 5 + 20 / 10
    assert gpu_hotpath.floors(split, 2.0, None, 5.0, 10.0)["fp8_cold"] is None  # no FP8 rate off a Hopper
    assert gpu_hotpath.datasheet("NVIDIA H100 80GB HBM3")["fp8"] == 1978.9 and gpu_hotpath.datasheet("cpu") is None
    assert gpu_hotpath.datasheet("NVIDIA H100 PCIe")["fp16"] == 756.5


def test_clock_samples_are_summarized_as_nvidia_smi_writes_them() -> None:
    sampler = gpu_hotpath.ClockSampler(torch.device("cuda"))  # nothing is started: the lines are given
    sampler.proc = SimpleNamespace()
    sampler.lines = ["1980, 2619, 650.12, 100, 61", "1755, 2619, 699.80, 100, 64", "1830, 2619, [N/A], 97, 63"]
    got = sampler.summary()
    assert got["samples"] == 3 and got["clocks.sm"] == {"min": 1755.0, "median": 1830.0, "max": 1980.0}
    assert got["power.draw"]["max"] == 699.8 and got["temperature.gpu"]["min"] == 61.0
    assert gpu_hotpath.ClockSampler(torch.device("cpu")).summary() == {"unavailable": "no GPU"}


@pytest.mark.parametrize("name", list(gpu_hotpath.VARIANTS))
def test_each_variant_sets_its_switches_and_layout_and_restores_them(name: str) -> None:
    model = gpu_hotpath.laid_out(VideoITG(tiny_config()))
    tower, twin = model.model.vision_tower, gpu_hotpath.twin(model)
    assert {p.dtype for p in twin.parameters()} == {torch.bfloat16} and twin is not tower
    before = dataclasses.replace(HOT_PATH)
    on, _ = gpu_hotpath.VARIANTS[name]
    with gpu_hotpath.variant(name):
        assert {s for s in gpu_hotpath.SWITCHES if getattr(HOT_PATH, s)} == set(on) - set(gpu_hotpath.LAYOUTS)
        assert model.model.vision_tower is (twin if "vision_bf16" in on else tower)
        mlps = [m for m in model.modules() if isinstance(m, SiglipMLP)]
        widths = {m.fc1.out_features for m in mlps}
        multiple = MLP_MULTIPLE if "padded_mlp" in on else 1
        assert widths == {-(-m.width // multiple) * multiple for m in mlps} and mlps[0].width % MLP_MULTIPLE
    assert HOT_PATH == before and model.model.vision_tower is tower
    assert all(m.fc1.out_features == m.width for m in model.modules() if isinstance(m, SiglipMLP))
    del model, tower, twin, mlps
    assert not gpu_hotpath.LAID_OUT  # a dropped model is no longer re-laid


def test_the_shipped_path_and_the_candidates() -> None:
    """`hot` runs what the hot path ships on a GPU and nothing more; each candidate is `hot` plus one change."""
    assert gpu_hotpath.VARIANTS["hot"] == (gpu_hotpath.SHIPPED, True)
    assert dataclasses.asdict(HOT_PATH) == {s: s in gpu_hotpath.SHIPPED for s in gpu_hotpath.SWITCHES}
    for c in gpu_hotpath.CANDIDATES:
        on, compiled = gpu_hotpath.VARIANTS[c]
        assert compiled and set(on) - set(gpu_hotpath.SHIPPED) == {c}


def test_in_fp8_swaps_converted_copies_in_and_the_16bit_layers_back() -> None:
    from videoitg.model.fp8 import Float8Linear

    model = VideoITG(tiny_config()).to(torch.bfloat16).eval()
    layers = model.model.layers
    originals = list(layers)
    with gpu_hotpath.in_fp8([(layers, 1)], "block"):
        assert layers[1] is not originals[1] and isinstance(layers[1].mlp.gate_up, Float8Linear)
        assert layers[1].mlp.gate_up.scheme == "block" and layers[0] is originals[0]
    assert list(layers) == originals and not [m for m in model.modules() if isinstance(m, Float8Linear)]


def test_a_failing_candidate_or_scheme_is_recorded_not_fatal() -> None:
    """`attempt`: what this torch or card lacks (a compile error, a scale layout) is recorded under `errors` and the
    section goes on without it."""
    out: dict = {}
    assert gpu_hotpath.attempt(out, "ok", lambda: 3) == 3 and "errors" not in out
    assert gpu_hotpath.attempt(out, "one_pass_norms", lambda: 1 / 0) is None
    assert out["errors"]["one_pass_norms"].startswith("ZeroDivisionError")


def test_a_peak_is_read_with_the_frames_already_in_the_models_dtype() -> None:
    """Every path's own peak holds one copy of the frames, made before the reading: frames in another dtype (which
    the call would copy, inside the reading) are refused; in the model's own, the reading runs (None off a GPU)."""
    model = VideoITG(tiny_config()).to(torch.bfloat16)
    s = model.config.vision.image_size
    ids = torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match="copied inside the call"):
        gpu_hotpath.own_peak_gb(model, torch.zeros(2, 3, s, s, dtype=torch.float16), ids, torch.device("cpu"))
    assert gpu_hotpath.own_peak_gb(model, torch.zeros(2, 3, s, s, dtype=torch.bfloat16), ids,
                                   torch.device("cpu")) is None
