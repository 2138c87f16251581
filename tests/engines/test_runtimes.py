"""The runtime seam's placement and sizing policy, without a GPU, TensorRT or TensorRT-LLM: which device a Triton
instance runs on, what a serving step loads where, the frames per vision-engine call, the grounding profile's
length against what the limits admit, and the error for a shape outside a plan's profile. Engines that need a
GPU are not run here (docs/engines.md says what has not run)."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from tests.support.model import tiny_config
from tests.support.triton_stub import stand_in_pb_utils
from videoitg.commands.cli import build_parser
from videoitg.config import preset
from videoitg.defaults import default_checkpoint
from videoitg.engine_build.build import BuildOptions
from videoitg.engine_build.trt_builder import LLMProfileSpec, write_plan
from videoitg.engines import runtimes
from videoitg.engines.runtimes import (
    DEFAULT_CHUNK,
    _TrtEngine,
    engine_chunk,
    load_device,
    max_sequence_length,
    open_grounding,
    open_vision,
    outside_engine,
    profile_error,
    use_device,
    visible_gpus,
)
from videoitg.engines.trtllm import EMBEDDING_ROWS, qwen2_config_dict, weight_keys
from videoitg.errors import EngineError, EngineMismatchError, InputError
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.model import checkpoint
from videoitg.model.grounding import VideoITG
from videoitg.python_backend.params import StepAssets
from videoitg.request.limits import Limits


# ---- item: multi-GPU placement --------------------------------------------------------------------------------
def test_the_instance_gpu_becomes_the_process_current_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT and TensorRT-LLM allocate on the current CUDA device: each instance (its own process) makes its
    GPU the current one; a CPU instance, or "cuda" without an index, changes nothing."""
    current: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # what would run on a GPU node
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    for device in ("cuda:1", "cpu", "cuda", "cuda:0"):
        use_device(device)
    assert current == [torch.device("cuda", 1), torch.device("cuda", 0)]


class Reached(Exception):
    pass


def test_every_visible_gpu_gets_its_own_cuda_memory_pool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`--cuda-memory-pool-byte-size=0:N` sizes GPU 0 only; the others keep Triton's 64 MB default, and a 512-frame
    hand-off between steps (906 MB of float32 frames) falls back to CUDA IPC there. One flag per visible GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert visible_gpus() == 4
    server = TritonServer(tmp_path, ServerOptions(gpu=True, cuda_pool_bytes=1 << 30))
    pools = [a for a in server.command(tmp_path / "backends") if a.startswith("--cuda-memory-pool-byte-size=")]
    assert pools == [f"--cuda-memory-pool-byte-size={i}:{1 << 30}" for i in range(4)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert visible_gpus() == 0
    cpu = TritonServer(tmp_path, ServerOptions(gpu=False)).command(tmp_path / "backends")
    assert not any(a.startswith("--cuda-memory-pool-byte-size") for a in cpu)


@pytest.mark.parametrize("runtime,loads_on", [("onnxruntime", "cpu"), ("trtllm", "cpu"), ("torch", "cuda:1")])
def test_the_grounding_step_loads_on_its_instance_gpu_and_engine_runtimes_load_on_cpu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: str, loads_on: str) -> None:
    """The grounding step of a KIND_GPU instance on GPU 1: GPU 1 becomes the process's device; the torch runtime
    loads its part there, an engine runtime on the CPU (only what stays outside the engine moves to the GPU).
    Without a server: the Triton module is a bare stand-in and the load records where it was asked to go."""
    stand_in_pb_utils(monkeypatch)
    step = importlib.import_module("videoitg.python_backend.grounding")
    used: list[str] = []
    asked: list[tuple[str, str]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    monkeypatch.setattr(step, "use_device", used.append)

    def load_served(self: Any, part: str, device: str, dtype: torch.dtype, runtime: str, pinned: str = "") -> None:
        asked.append((device, runtime))
        raise Reached(part)

    monkeypatch.setattr("videoitg.python_backend.params.StepAssets.load_served", load_served)
    params = {"device": "cuda", "grounding_runtime": runtime, "checkpoint": str(tmp_path)}
    args = {"model_config": json.dumps({"parameters": {k: {"string_value": v} for k, v in params.items()}}),
            "model_instance_kind": "GPU", "model_instance_device_id": "1", "model_repository": str(tmp_path / "m")}
    with pytest.raises(Reached, match="grounding"):
        step.TritonPythonModel().initialize(args)
    assert used == ["cuda:1"] and asked == [(loads_on, runtime)]  # the runtime: what is not read (below)


# ---- item: the grounding step's GPU memory ---------------------------------------------------------------------
def test_engine_runtimes_keep_only_what_stays_outside_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_device("torch", "cuda:1") == "cuda:1"
    assert all(load_device(r, "cuda:1") == "cpu" for r in ("onnxruntime", "tensorrt", "trtllm"))
    freed: list[bool] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # what would run on a GPU node
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(True))
    cfg = tiny_config()
    with torch.device("meta"):
        kept, grounding, vision = VideoITG(cfg), VideoITG(cfg), VideoITG(cfg)
    layers = len(kept.model.layers)
    outside_engine(grounding, "grounding", "trtllm", "meta")
    assert len(grounding.model.layers) == 0 and grounding.model.embed_tokens is not None
    assert grounding.out_proj is not None and grounding.model.norm is not None
    outside_engine(vision, "vision", "tensorrt", "meta")
    assert vision.model.vision_tower is None and vision.model.mm_projector is not None
    outside_engine(kept, "grounding", "torch", "meta")
    assert len(kept.model.layers) == layers and kept.model.vision_tower is not None
    assert freed == [True, True, True]  # torch's cached blocks go back after each
    with pytest.raises(EngineError, match="unknown step"):
        outside_engine(kept, "decode", "tensorrt", "meta")


def test_an_engine_steps_part_is_read_without_what_the_engine_runs(monkeypatch) -> None:
    """The grounding step of an engine runtime never reads the decoder layers from disk (a 7B checkpoint: ~15 GB
    read into host memory to be dropped), nor the vision step SigLIP; with torch both read all of their half."""
    read: list[str] = []
    real = checkpoint.load_indexed
    monkeypatch.setattr(checkpoint, "load_indexed", lambda index, keys: read.extend(keys) or real(index, keys))
    assets = StepAssets(default_checkpoint())

    def keys(part: str, runtime: str) -> tuple[list[str], Any]:
        read.clear()
        model, _ = assets.load_served(part, "cpu", torch.float32, runtime)[:2]
        return list(read), model

    ground, model = keys("grounding", "onnxruntime")
    assert ground and not any(k.startswith("model.layers.") for k in ground) and len(model.model.layers) == 0
    assert "out_proj.weight" in ground and any(k.startswith("model.embed_tokens.") for k in ground)
    torch_ground, _ = keys("grounding", "torch")
    assert any(k.startswith("model.layers.") for k in torch_ground)
    vision, model = keys("vision", "tensorrt")
    assert vision and not any(k.startswith(checkpoint.TOWER) for k in vision) and model.model.vision_tower is None
    torch_vision, _ = keys("vision", "torch")
    assert any(k.startswith(checkpoint.TOWER) for k in torch_vision)


def test_the_trtllm_model_loads_no_token_embeddings() -> None:
    """The TensorRT-LLM model is fed inputs_embeds (the core model's embeddings): its own 152,064-row table
    (1.09 GB at fp16 for Qwen2-7B) is never built, and its weights are not read."""
    cfg = preset("videoitg-7b")
    assert qwen2_config_dict(cfg, torch.float16)["vocab_size"] == EMBEDDING_ROWS == 1
    names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight",
             "out_proj.weight", "out_proj.bias", "model.mm_projector.out_projection.0.weight",
             "model.vision_tower.vision_model.embeddings.patch_embedding.weight"]
    assert weight_keys(names) == ["model.layers.0.self_attn.q_proj.weight", "model.norm.weight", "out_proj.weight",
                                  "out_proj.bias"]


# ---- item: the vision plan's chunk ----------------------------------------------------------------------------
def test_the_torch_runtimes_run_fp8_and_the_engines_refuse_it() -> None:
    """precision fp8 turns the torch runtime's language model's middle decoder layers into FP8 linear layers (a bf16
    model; the first and last stay 16-bit); an engine runs the precision it was built with, so asking it for fp8 is
    an error before any engine file is looked for."""
    from videoitg.model.fp8 import Float8Linear, fp8_layers

    cfg = tiny_config()
    cfg.text = dataclasses.replace(cfg.text, num_hidden_layers=4)
    model = VideoITG(cfg).to(torch.bfloat16).eval()
    vision, grounding = open_vision("torch", model, precision="fp8"), open_grounding("torch", model, precision="fp8")
    assert vision.precision == grounding.precision == "fp8"
    assert len(fp8_layers(model)) == 2 and all(isinstance(layer.self_attn.qkv, Float8Linear)
                                               for layer in fp8_layers(model))
    for opener in (open_vision, open_grounding):
        with pytest.raises(EngineError, match="runs the precision it was built with"):
            opener("onnxruntime", model, engines="/nowhere", precision="fp8")


def test_vision_engines_run_at_their_profile_max() -> None:
    assert engine_chunk(128) == 128  # a plan built with --vision-chunk 128 runs 128 frames a call
    assert engine_chunk(128, 32) == 32 and engine_chunk(8, 32) == 8  # a smaller request; never past the profile
    assert engine_chunk(None) == DEFAULT_CHUNK and engine_chunk(None, 16) == 16  # ONNX Runtime: no bound


# ---- item: the LLM plan's profile -----------------------------------------------------------------------------
# The longest sequence the default limits admit (512 frames, 1,024 instruction tokens), by hand: the visual tokens
# peak where T * HW^2 does (HW = min(floor(sqrt(vision_token_num / T)), 27)), plus one anchor per frame for
# Variant B, plus all 1,024 instruction tokens (the model's tokenizer_model_max_length leaves room for them).
LONGEST = [
    ("videoitg-7b", "bidirectional", 16384 + 1024),  # T=64 at 16x16 (or T=256 at 8x8)
    ("videoitg-7b", "causal", 455 * (36 + 1) + 1024),  # T=455 at 6x6, each frame with its anchor
    ("tiny", "bidirectional", 1024 + 1024),  # tiny_config: vision_token_num 1,024
    ("tiny", "causal", 256 * (4 + 1) + 1024),  # T=256 at 2x2 with anchors
]


@pytest.mark.parametrize(("model", "variant", "longest"), LONGEST)
def test_the_llm_profile_covers_every_admitted_sequence(model: str, variant: str, longest: int) -> None:
    """The grounding profile's max is the longest sequence the default limits admit."""
    cfg = preset(model, attention=variant) if model != "tiny" else tiny_config(attention=variant)
    limits = Limits()
    assert max_sequence_length(cfg, limits.max_sampled_frames, limits.max_instruction_tokens) == longest
    spec = LLMProfileSpec.for_model(cfg)
    embeds = {p.input: p for p in spec.profiles()}["inputs_embeds"]
    assert embeds.max == [1, longest, cfg.text.hidden_size] and spec.max_len == longest
    assert embeds.min <= embeds.opt <= embeds.max


def test_the_build_defaults_to_the_admitted_instruction_length() -> None:
    assert BuildOptions(Path("c"), Path("o")).max_text_tokens == Limits().max_instruction_tokens


def test_the_build_command_rebuilds_the_same_profiles() -> None:
    cmd = BuildOptions(Path("ckpt"), Path("out"), vision_chunk=96, max_text_tokens=2048).command()
    assert "--vision-chunk 96" in cmd and "--max-text-tokens 2048" in cmd


class _Context:
    """What the plan's execution context answers to `set_input_shape`: TensorRT returns False (and logs) for a
    shape outside the optimization profile."""

    def __init__(self, profiles: dict[str, tuple[tuple[int, ...], ...]]):
        self.profiles = profiles

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        lo, _, hi = self.profiles[name]
        return all(a <= d <= b for a, d, b in zip(lo, shape, hi, strict=True))


def test_a_shape_outside_the_plan_profile_is_an_error_naming_shape_and_profile() -> None:
    profiles = {"inputs_embeds": ((1, 2, 64), (1, 1000, 64), (1, 2048, 64)), "segment_ids": ((1, 2), (1, 1000),
                                                                                            (1, 2048))}
    engine = _TrtEngine.__new__(_TrtEngine)  # no TensorRT here: the binding step only, before any GPU copy
    engine.inputs, engine.profiles, engine.context = list(profiles), profiles, _Context(profiles)
    with pytest.raises(EngineError) as e:
        engine(inputs_embeds=torch.zeros(1, 2100, 64), segment_ids=torch.zeros(1, 2100, dtype=torch.int64))
    msg = str(e.value)
    assert "'inputs_embeds'" in msg and "(1, 2100, 64)" in msg and "max (1, 2048, 64)" in msg
    assert "min (1, 2, 64)" in msg and "videoitg build" in msg
    assert profile_error("x", (3,), ((1,), (2,), (2,))).startswith("TensorRT plan input 'x' of shape (3,)")


def test_the_build_command_default_profile_takes_every_admitted_instruction() -> None:
    """`videoitg build` with no --max-text-tokens builds a grounding plan that the served limits fit."""
    args = build_parser(["build"]).parse_args(["build", "--out", "e"])
    assert args.max_text_tokens == BuildOptions("c", "e").max_text_tokens == Limits().max_instruction_tokens


def test_the_verify_command_refuses_a_negative_instruction_length_by_its_flag() -> None:
    """`videoitg verify --instruction-tokens -1` is the command's own InputError naming the flag, before any
    checkpoint is loaded."""
    argv = ["verify", "--frames", "8", "--instruction-tokens", "-1"]
    args = build_parser(argv).parse_args(argv)
    with pytest.raises(InputError, match="--instruction-tokens needs a count of 0 or more, got -1"):
        args._run(args)


# ---- a plan is held once: written from TensorRT's buffer, deserialized from the mapped file -----------------------
PLAN_BYTES = 48 << 20  # a stand-in plan; a 7B model's LLM plan is ~15 GB, which a second copy would double


def _traced_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_built_plan_is_written_without_a_second_copy(tmp_path: Path) -> None:
    """`build_serialized_network` returns the plan in TensorRT's IHostMemory, a buffer; writing `bytes()` of it
    would hold the plan twice. Written from the buffer, the write allocates (almost) nothing."""
    serialized = bytearray(PLAN_BYTES)  # a buffer, as IHostMemory is
    serialized[-1] = 7
    peak = _traced_peak(lambda: write_plan(tmp_path / "llm.plan", serialized))
    assert peak < PLAN_BYTES // 8, peak
    data = (tmp_path / "llm.plan").read_bytes()
    assert len(data) == PLAN_BYTES and data[-1] == 7


def _fake_tensorrt(seen: dict) -> SimpleNamespace:
    """TensorRT's surface `_TrtEngine` uses, as far as loading goes: the plan handed to `deserialize_cuda_engine`
    is recorded (its size, its last byte) and the memory traced while it is read."""

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i: int) -> str:
            return ("x", "y")[i]

        def get_tensor_mode(self, name: str) -> str:
            return "in" if name == "x" else "out"

        def get_tensor_profile_shape(self, name: str, profile: int):
            return ((1, 3), (4, 3), (4, 3))

        def create_execution_context(self) -> object:
            return object()

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, plan) -> Engine:
            view = memoryview(plan)
            seen.update(nbytes=view.nbytes, last=view[-1], peak=tracemalloc.get_traced_memory()[1])
            view.release()
            return Engine()

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    return SimpleNamespace(Logger=Logger, Runtime=Runtime, TensorIOMode=SimpleNamespace(INPUT="in"),
                           float32=1, float16=2, bfloat16=3, int64=4, int32=5, bool=6, __version__="10.14.1.48")


def test_a_plan_is_deserialized_from_the_mapped_file_without_a_private_copy(tmp_path: Path, monkeypatch) -> None:
    """A bytes copy of the plan handed to TensorRT would cost ~15 GB more for the LLM plan, every load, against the
    pod's 48 GiB. Deserialized from the mapped file, loading allocates (almost) nothing in the process (TensorRT
    takes any buffer without copying it)."""
    plan = tmp_path / "llm.plan"
    plan.write_bytes(b"\0" * (PLAN_BYTES - 1) + b"\x05")
    seen: dict = {}
    monkeypatch.setattr(runtimes, "import_tensorrt", lambda: _fake_tensorrt(seen))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    engine = None

    def load() -> None:
        nonlocal engine
        engine = _TrtEngine(plan, torch.device("cuda", 0))

    peak = _traced_peak(load)
    assert seen["nbytes"] == PLAN_BYTES and seen["last"] == 5
    assert max(peak, seen["peak"]) < PLAN_BYTES // 8, (peak, seen)
    assert engine.inputs == ["x"] and engine.outputs == ["y"] and engine.max_batch == 4


def test_an_empty_plan_is_refused_by_name_as_one_to_rebuild(tmp_path: Path, monkeypatch) -> None:
    """A zero-length plan file (an interrupted copy or build) cannot be mapped: loading it is the typed
    EngineMismatchError naming the file and what to do, before TensorRT is handed anything."""
    plan = tmp_path / "llm.plan"
    plan.write_bytes(b"")
    seen: dict = {}
    monkeypatch.setattr(runtimes, "import_tensorrt", lambda: _fake_tensorrt(seen))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    with pytest.raises(EngineMismatchError) as e:
        _TrtEngine(plan, torch.device("cuda", 0))
    assert str(plan) in str(e.value) and "empty" in str(e.value) and "rebuild it here" in str(e.value)
    assert seen == {}  # never deserialized


def test_vision_runtime_features_of_chunks_are_the_whole_videos(tiny):
    """The streaming decode step sends a video's frames in chunks with the video's frame count: every step after
    the tower is per frame, so the chunks' features concatenated equal the whole video's (the projector's grid is
    set by the video's count, not the chunk's)."""
    S = tiny.config.vision.image_size
    t, chunk = 24, 10
    assert tiny.config.tokens_per_side(t) != tiny.config.tokens_per_side(chunk)  # the count changes the grid
    pv = torch.rand(t, 3, S, S, generator=torch.Generator().manual_seed(0)) * 2 - 1
    vision = open_vision("torch", tiny)
    whole = vision.visual_features(pv)
    chunks = torch.cat([vision.visual_features(c, num_frames=t) for c in pv.split(chunk)])
    assert chunks.shape == whole.shape and float((chunks - whole).abs().max()) <= 1e-5
