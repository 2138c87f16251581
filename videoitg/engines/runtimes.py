"""The runtime seam: each half of VideoITG on torch, ONNX Runtime, a TensorRT plan or TensorRT-LLM.

    vision = open_vision("onnxruntime", model, engines="ENGINES")    # or "torch" / "tensorrt"
    visual = vision.visual_features(pixel_values)                    # [T, 3, S, S] -> [T, hw², H]
    grounding = open_grounding("onnxruntime", model, engines="ENGINES")  # or "torch" / "tensorrt" / "trtllm"
    logits = grounding.score(visual, ids)                            # one request -> fp32 [T]

`model` is the core `VideoITG` (or `VideoITGAnchor`): the torch runtime runs it; an engine runtime takes from it
only what stays outside the engine (the projector, whose resize depends on T; the token embeddings and the
sequence layout of `videoitg.model.layout`). The serving steps, `verify` and the benchmarks call only this module;
each library is imported lazily behind one function (`videoitg.libraries`), so a machine without TensorRT
still runs torch and ONNX Runtime. An engine file opens only after its manifest passed `check_manifest` (version
lock, GPU, checkpoint).

Placement: a Triton python-backend instance runs where Triton put it
(`videoitg.python_backend.params.instance_device` reads `initialize(args)`, `use_device` makes that GPU the
process's current one), and an engine runtime runs on the device of the model parts
it keeps (`load_device` / `outside_engine`: the step reads of its checkpoint part only what the engine does not
run, on the CPU, and moves it to the GPU).
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from videoitg.engines.manifest import EngineManifest, RuntimeEnv, check_manifest
from videoitg.engines.summary import read_summary, summary_path
from videoitg.errors import BackendUnavailable, CheckpointError, EngineError, EngineMismatchError, NonFiniteError
from videoitg.libraries import import_onnxruntime, import_tensorrt
from videoitg.model.checkpoint import all_finite
from videoitg.model.grounding import VideoITG
from videoitg.model.hotpath import prepare_inference
from videoitg.model.token_budget import fixed_tokens
from videoitg.request.limits import Limits
from videoitg.request.text import encode_instruction

RUNTIMES = ("torch", "onnxruntime", "tensorrt", "trtllm")
ENGINE_FILES = {  # (runtime, step) -> file inside an engines directory (written by `videoitg build`)
    ("onnxruntime", "vision"): "onnx/vision.onnx",
    ("onnxruntime", "grounding"): "onnx/llm.onnx",
    ("tensorrt", "vision"): "tensorrt/vision.plan",
    ("tensorrt", "grounding"): "tensorrt/llm.plan",
}
PRECISION = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
DEFAULT_CHUNK = 64  # frames per SigLIP call when nothing else bounds it (the torch model's own default)


# ---- placement -----------------------------------------------------------------------------------------------
def use_device(device: str) -> None:
    """Make `device` ("cuda:N") the current CUDA device of this process (each python-backend instance is its own
    process), so what allocates on "the" GPU (TensorRT's deserialization and execution context, TensorRT-LLM's
    attention workspace) lands on the instance's GPU. Nothing for "cuda" without an index (the current device
    stays), on a CPU device, or without CUDA."""
    d = torch.device(device)
    if d.type == "cuda" and d.index is not None and torch.cuda.is_available():
        torch.cuda.set_device(d)


def visible_gpus() -> int:
    """The GPUs CUDA shows this process, and so the tritonserver it starts (the same environment, the same
    `CUDA_VISIBLE_DEVICES`): Triton makes a KIND_GPU instance on each, and each needs its own CUDA memory pool
    (`--cuda-memory-pool-byte-size=N:BYTES` names one GPU; the others keep Triton's 64 MB default). Counting needs
    no CUDA context."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def load_device(runtime: str, device: str) -> str:
    """Where a serving step loads its checkpoint part: on `device` for the torch runtime (it runs the whole part);
    on the CPU for an engine runtime, so the layers the engine runs never reach the GPU (`outside_engine`)."""
    return device if runtime == "torch" else "cpu"


def drop_engine_part(model: nn.Module, step: str, runtime: str) -> None:
    """Drop from a step's model what an engine of `runtime` runs: SigLIP for the vision step (the projector stays),
    the decoder layers for the grounding step (token embeddings, layout, anchors and head stay); torch runs it
    all. Given to `load_checkpoint` (`drop`), so what is dropped is never read from disk."""
    if runtime == "torch":
        return
    if step == "vision":
        model.model.vision_tower = None
    elif step == "grounding":
        model.model.layers = nn.ModuleList()
    else:
        raise EngineError(f"unknown step {step!r}; choose vision or grounding")


def outside_engine(model: nn.Module, step: str, runtime: str, device: str) -> nn.Module:
    """Keep of a step's model only what stays outside an engine of `runtime` (`drop_engine_part`) and move it to
    `device`; then torch's cached CUDA blocks are given back, so the engine can have the memory."""
    drop_engine_part(model, step, runtime)
    model.to(device)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return model


def _cuda(device: torch.device) -> torch.device:
    """The GPU an engine runs on: the model's when it is on one, else the current CUDA device."""
    if device.type == "cuda" and device.index is not None:
        return device
    return torch.device("cuda", torch.cuda.current_device())


def engine_chunk(max_batch: int | None, requested: int | None = None) -> int:
    """Frames per vision-engine call: the engine's profile max (TensorRT plans are built with opt = max = the
    build's `--vision-chunk`, so a full chunk runs at the optimum), or `requested` when smaller; DEFAULT_CHUNK for
    an engine with no batch bound (ONNX Runtime)."""
    if max_batch is None:
        return requested or DEFAULT_CHUNK
    return min(requested or max_batch, max_batch)


def max_sequence_length(config: Any, max_frames: int, max_instruction_tokens: int) -> int:
    """The longest grounding sequence a deployment admits: over every T up to `max_frames` sampled frames, the
    video's fixed tokens (visual, plus Variant B's anchors) and the instruction tokens `Limits` lets through for
    it (`max_instruction_tokens`, within the model's `tokenizer_model_max_length`). A T that leaves no room for an
    instruction is refused, so it does not count. What a grounding engine's profile must cover."""
    limits = Limits(max_sampled_frames=max_frames, max_instruction_tokens=max_instruction_tokens)
    longest = 0
    for t in range(1, max_frames + 1):
        room = limits.instruction_token_limit(config, t)
        if room >= 1:
            longest = max(longest, fixed_tokens(config, t) + room)
    return longest


def profile_error(name: str, shape: tuple[int, ...], profile: tuple[tuple[int, ...], ...]) -> str:
    """The message for a shape a TensorRT plan's optimization profile does not take (`set_input_shape` False)."""
    lo, opt, hi = (tuple(int(d) for d in s) for s in profile)
    return (f"TensorRT plan input {name!r} of shape {tuple(shape)} is outside its optimization profile 0 "
            f"(min {lo}, opt {opt}, max {hi}); rebuild the plan with a profile that covers it "
            "(`videoitg build --max-frames N --max-text-tokens N`)")


# ---- what is served is finite --------------------------------------------------------------------------------
PROBE_FRAMES = 2  # the test input each tower proves itself on at a load: two frames, two one-token frames
PROBE_INSTRUCTION = "warm up"


def require_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    """`x` when every value is finite; else NonFiniteError naming `what`: NaN or infinity out of a model that loaded
    and proved itself is a fault of the checkpoint or its numerics (the server's), never of the request."""
    if not all_finite(x):
        raise NonFiniteError(f"{what} hold NaN or infinite values: a fault of the served checkpoint or its "
                             "numerics, not of the request")
    return x


def _refuse(part: str, checkpoint: str | Path, runtime: str, dtype: torch.dtype, device: str | torch.device) -> None:
    raise CheckpointError(
        f"{checkpoint}: {part} gives NaN or infinite values on a test input ({runtime} runtime, "
        f"{str(dtype).removeprefix('torch.')} on {torch.device(device).type}): its weights are damaged, or overflow "
        "this dtype; not served")


@torch.inference_mode()
def prove_vision(features: Callable[[torch.Tensor], torch.Tensor], config: Any, device: str | torch.device,
                 dtype: torch.dtype, checkpoint: str | Path, runtime: str = "torch") -> torch.Tensor:
    """A loaded vision half proves itself: `features` (pixel values [T, 3, S, S] -> features) of PROBE_FRAMES
    mid-grey frames must all be finite, else CheckpointError naming `checkpoint`. Also the first call's warm-up.
    Returns the features."""
    s = config.vision.image_size
    out = features(torch.zeros(PROBE_FRAMES, 3, s, s, device=device, dtype=dtype))
    if not all_finite(out):
        _refuse("the vision tower", checkpoint, runtime, dtype, device)
    return out


@torch.inference_mode()
def prove_grounding(score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], config: Any, tokenizer: Any,
                    device: str | torch.device, dtype: torch.dtype, checkpoint: str | Path,
                    runtime: str = "torch") -> torch.Tensor:
    """A loaded grounding half proves itself: `score` (features [T, n, H], instruction ids -> per-frame logits) of
    PROBE_FRAMES one-token frames of zeros and PROBE_INSTRUCTION must all be finite, else CheckpointError naming
    `checkpoint`. Also the first call's warm-up. Returns the logits."""
    visual = torch.zeros(PROBE_FRAMES, 1, config.text.hidden_size, device=device, dtype=dtype)
    out = score(visual, encode_instruction(tokenizer, PROBE_INSTRUCTION))
    if not all_finite(out):
        _refuse("the language model", checkpoint, runtime, dtype, device)
    return out


# ---- the interface -------------------------------------------------------------------------------------------
class VisionRuntime:
    """Frames -> projected visual features. Subclasses provide `encode` (SigLIP through the select layer)."""

    runtime = "?"
    precision = "fp32"

    def __init__(self, model: VideoITG, chunk_frames: int = DEFAULT_CHUNK):
        self.model, self.chunk_frames = model, chunk_frames
        w = model.model.mm_projector.out_projection[0].weight  # a vision-only load keeps just the visual half
        self.device, self.dtype = w.device, w.dtype

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:  # [T, 3, S, S] -> [T, g², Cv]
        raise NotImplementedError

    @torch.inference_mode()
    def visual_features(self, pixel_values: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """[T, 3, S, S] -> [T, hw², H], hw by the inference rule for the video's `num_frames` (default T: these
        are all its frames). Every step after the tower is per frame, so a video's frames may come in chunks."""
        feats = self.encode(pixel_values).to(self.device, self.dtype)
        return self.model.project(feats, self.model.config.tokens_per_side(num_frames or pixel_values.shape[0]))


class GroundingRuntime:
    """(visual features, instruction ids) of one request -> fp32 per-frame logits."""

    runtime = "?"
    precision = "fp32"
    max_length: int | None = None  # the longest sequence the engine takes (a TensorRT plan's profile); None: any

    def __init__(self, model: VideoITG):
        self.model = model
        w = model.model.embed_tokens.weight
        self.device, self.dtype = w.device, w.dtype

    def score(self, visual: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_admits(self, longest: int) -> None:
        """Refuse, at load, an engine shorter than the longest sequence the deployment admits
        (`max_sequence_length` of its limits), instead of failing the requests that reach past it."""
        if self.max_length is not None and longest > self.max_length:
            raise EngineMismatchError(
                f"the {self.runtime} grounding engine takes sequences up to {self.max_length} tokens; this "
                f"deployment's limits admit {longest}: rebuild it with `videoitg build` for these limits "
                "(--max-frames, --max-text-tokens), or lower max_sampled_frames / max_instruction_tokens")


# ---- torch -------------------------------------------------------------------------------------------------
class TorchVision(VisionRuntime):
    """The core model on its device, prepared for inference (`prepare_inference`: FP8 linear layers when
    `precision` is "fp8"; on a GPU, the layers compiled)."""

    runtime = "torch"

    def __init__(self, model: VideoITG, chunk_frames: int = DEFAULT_CHUNK, precision: str | None = None):
        super().__init__(model, chunk_frames)
        prepare_inference(model, precision)
        self.precision = precision or PRECISION[self.dtype]

    def encode(self, pixel_values: torch.Tensor):
        return self.model.encode_frames(pixel_values.to(self.device, self.dtype), self.chunk_frames)


class TorchGrounding(GroundingRuntime):
    """As TorchVision, for the grounding half."""

    runtime = "torch"

    def __init__(self, model: VideoITG, precision: str | None = None):
        super().__init__(model)
        prepare_inference(model, precision)
        self.precision = precision or PRECISION[self.dtype]

    @torch.inference_mode()
    def score(self, visual: torch.Tensor, ids: torch.Tensor):
        v = visual.to(self.device, self.dtype)
        return self.model.score_features([v], [ids.to(self.device)])[0].float().cpu()


# ---- engines (ONNX Runtime, TensorRT) ------------------------------------------------------------------------
_ORT_FLOAT = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class _OrtSession:
    """An ONNX Runtime session fed and read as torch tensors."""

    max_batch: int | None = None

    def __init__(self, path: Path, threads: int | None = None):
        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        self.sess = ort.InferenceSession(str(path), opts, providers=providers)
        self.inputs = {i.name: i.type for i in self.sess.get_inputs()}

    def __call__(self, **feeds: torch.Tensor) -> torch.Tensor:
        arrays = {}
        for name, t in feeds.items():
            a = t.detach().cpu().numpy()
            arrays[name] = a.astype(_ORT_FLOAT[self.inputs[name]]) if self.inputs[name] in _ORT_FLOAT else a
        return torch.from_numpy(self.sess.run(None, arrays)[0]).float()


@contextlib.contextmanager
def mapped(path: Path) -> Iterator[mmap.mmap]:
    """A plan file mapped read-only: TensorRT's `deserialize_cuda_engine` takes any buffer without copying it
    (TensorRT 10.14 and 11.1 `pyCore.cpp`), so the plan is read from the page cache once, never held a second time
    in this process's memory (a 7B model's LLM plan is ~15 GB; `read_bytes()` would add a private copy). An empty
    file is refused as no plan (EngineMismatchError), since it cannot be mapped."""
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise EngineMismatchError(f"{path} is empty (0 bytes), not a TensorRT plan; rebuild it here")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            yield m


class _TrtEngine:
    """A deserialized plan run through TensorRT 10's name-based tensor API on torch CUDA buffers, on one GPU
    (`device`: deserialized, bound and launched with it current)."""

    def __init__(self, path: Path, device: torch.device):
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise BackendUnavailable("TensorRT plans need a CUDA GPU; none is visible")
        self.device = _cuda(device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device), mapped(path) as plan:
            self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(plan)
            if self.engine is None:  # version / GPU mismatch that slipped past the manifest
                raise EngineMismatchError(f"TensorRT {trt.__version__} could not deserialize {path}; rebuild it here")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.torch_dtype = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
                            trt.int64: torch.int64, trt.int32: torch.int32, trt.bool: torch.bool}
        # (min, opt, max) of each input in profile 0, the one profile `trt_builder.build_plan` adds
        self.profiles = {n: tuple(tuple(int(d) for d in s) for s in self.engine.get_tensor_profile_shape(n, 0))
                         for n in self.inputs}
        self.max_batch = self.profiles[self.inputs[0]][2][0]

    def __call__(self, **feeds: torch.Tensor) -> torch.Tensor:
        for name in self.inputs:  # shapes first: one outside the profile is refused before anything is copied
            shape = tuple(int(d) for d in feeds[name].shape)
            if not self.context.set_input_shape(name, shape):
                raise EngineError(profile_error(name, shape, self.profiles[name]))
        with torch.cuda.device(self.device):
            keep = []  # inputs must outlive the asynchronous launch
            for name in self.inputs:
                t = feeds[name].to(self.device, self.torch_dtype[self.engine.get_tensor_dtype(name)]).contiguous()
                keep.append(t)
                self.context.set_tensor_address(name, t.data_ptr())
            out_name = self.outputs[0]
            out = torch.empty(tuple(self.context.get_tensor_shape(out_name)),
                              dtype=self.torch_dtype[self.engine.get_tensor_dtype(out_name)], device=self.device)
            self.context.set_tensor_address(out_name, out.data_ptr())
            stream = torch.cuda.current_stream(self.device)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise EngineError("TensorRT execution failed (see the TensorRT log)")
            stream.synchronize()
        return out.float()


def _engine(runtime: str, step: str, engines: str | Path | None, checkpoint_identity: str | None,
            env: RuntimeEnv | None, threads: int | None,
            device: torch.device) -> tuple[_OrtSession | _TrtEngine, EngineManifest]:
    if engines is None:
        raise EngineError(f"the {runtime} runtime runs a built engine: pass the engines directory "
                          "(`videoitg build --checkpoint DIR --out ENGINES`)")
    path = Path(engines) / ENGINE_FILES[(runtime, step)]
    if not path.is_file():
        raise BackendUnavailable(f"{path} was not built (see {summary_path(engines)})")
    manifest = EngineManifest.read(path)
    check_manifest(manifest, env or RuntimeEnv.current(), checkpoint_identity=checkpoint_identity)
    return (_OrtSession(path, threads) if runtime == "onnxruntime" else _TrtEngine(path, device)), manifest


class EngineVision(VisionRuntime):
    def __init__(self, model: VideoITG, runtime: str, session: Any, manifest: EngineManifest,
                 chunk_frames: int | None = None):
        super().__init__(model, engine_chunk(session.max_batch, chunk_frames))
        self.runtime, self.session, self.precision = runtime, session, manifest.precision

    def encode(self, pixel_values: torch.Tensor):
        return torch.cat([self.session(pixel_values=c) for c in pixel_values.split(self.chunk_frames)])


class EngineGrounding(GroundingRuntime):
    """The engine runs the decoder stack, final norm and head pooled per frame (`LLMEncoder`); the embeddings and
    the layout (anchors included for Variant B) are built here by the core model."""

    def __init__(self, model: VideoITG, runtime: str, session: Any, manifest: EngineManifest):
        super().__init__(model)
        self.runtime, self.session, self.precision = runtime, session, manifest.precision
        profiles = getattr(session, "profiles", None) or {}
        if "inputs_embeds" in profiles:  # [1, L, H]: L's max
            self.max_length = profiles["inputs_embeds"][2][1]
        built = manifest.extra.get("variant")
        ours = "B" if model.anchors else "C"
        if built is not None and built != ours:
            raise EngineMismatchError(f"the grounding engine was built for Variant {built}, the checkpoint is "
                                      f"Variant {ours}: rebuild it")

    @torch.inference_mode()
    def score(self, visual: torch.Tensor, ids: torch.Tensor):
        ids = ids.to(self.device)
        layout = self.model.layout(visual, ids)
        embeds = self.model.sequence(visual.to(self.device, self.dtype), ids)  # [L, H]
        return self.session(inputs_embeds=embeds[None], segment_ids=layout.segment_ids()[None],
                            frame_ids=torch.arange(layout.num_frames, dtype=torch.int64))[0].cpu()


# ---- TensorRT-LLM (PyTorch backend) ---------------------------------------------------------------------------
TRTLLM_DTYPES = (torch.float16, torch.bfloat16)


def trtllm_dtype(requested: torch.dtype) -> torch.dtype:
    """The TensorRT-LLM grounding precision: the model's own (videoitg.pipeline.scorer.parse_dtype: float16 on a GPU, as
    released; bfloat16 when asked for). Its fused attention has no float32 path, so float32 is refused."""
    if requested not in TRTLLM_DTYPES:
        raise EngineError(f"the trtllm runtime runs float16 or bfloat16, the model was loaded as "
                          f"{str(requested).removeprefix('torch.')}: load it in float16 (the default on a GPU)")
    return requested


def trtllm_options(engines: str | Path | None) -> dict[str, Any]:
    """How the trtllm runtime runs, as `videoitg build` recorded it in ENGINES/build.json ("trtllm"):
    {"disable_fuse_rope": bool}; the defaults without an engines directory or a record."""
    options: dict[str, Any] = {"disable_fuse_rope": False}
    summary = read_summary(engines) if engines is not None else None
    options.update((summary or {}).get("trtllm", {}))
    return options


class TrtllmGrounding(GroundingRuntime):
    runtime = "trtllm"

    def __init__(self, model: VideoITG, checkpoint: str | Path, dtype: torch.dtype | None = None,
                 disable_fuse_rope: bool = False, max_num_tokens: int = 0):
        """max_num_tokens: the longest sequence the attention metadata is sized for up front (the caller's
        limits, `max_sequence_length`); 0 sizes it at the first request, and a longer one resizes it."""
        from videoitg.engines.trtllm import TrtllmTorchScorer

        super().__init__(model)
        dtype = trtllm_dtype(dtype or self.dtype)  # the model's dtype unless one is given
        # the model's GPU (else the current one: TrtllmTorchScorer's default, and its refusal without CUDA)
        placement = {"device": _cuda(self.device)} if torch.cuda.is_available() else {}
        self.scorer = TrtllmTorchScorer(checkpoint, dtype, **placement, max_num_tokens=max_num_tokens,
                                        disable_fuse_rope=disable_fuse_rope)
        self.precision = PRECISION[dtype]

    @torch.inference_mode()
    def score(self, visual: torch.Tensor, ids: torch.Tensor):
        ids = ids.to(self.device)
        layout = self.model.layout(visual, ids)
        embeds = self.model.sequence(visual.to(self.device, self.dtype), ids)
        return self.scorer.score(embeds, layout.segment_ids(), layout.num_frames)


# ---- opening -------------------------------------------------------------------------------------------------
def _check_precision(runtime: str, precision: str | None) -> None:
    if precision is not None and runtime != "torch":
        raise EngineError(f"precision {precision} is the torch runtime's; a {runtime} engine runs the precision it "
                          "was built with (`videoitg build --precision`)")


def _check_runtime(runtime: str, step: str) -> None:
    allowed = [r for r in RUNTIMES if r == "torch" or (r, step) in ENGINE_FILES or (r == "trtllm" and
                                                                                    step == "grounding")]
    if runtime not in allowed:
        raise EngineError(f"unknown {step} runtime {runtime!r}; choose one of {', '.join(allowed)}")


def open_vision(runtime: str, model: VideoITG, *, engines: str | Path | None = None,
                checkpoint_identity: str | None = None, env: RuntimeEnv | None = None, chunk_frames: int | None = None,
                threads: int | None = None, precision: str | None = None) -> VisionRuntime:
    """chunk_frames: frames per call; default DEFAULT_CHUNK for torch, the engine's profile max for an engine
    (`engine_chunk`). precision: "fp8" for the torch runtime's FP8 linear layers (a bf16 model)."""
    _check_runtime(runtime, "vision")
    _check_precision(runtime, precision)
    if runtime == "torch":
        return TorchVision(model, chunk_frames or DEFAULT_CHUNK, precision)
    device = model.model.mm_projector.out_projection[0].weight.device
    session, manifest = _engine(runtime, "vision", engines, checkpoint_identity, env, threads, device)
    return EngineVision(model, runtime, session, manifest, chunk_frames)


def open_grounding(runtime: str, model: VideoITG, *, engines: str | Path | None = None,
                   checkpoint: str | Path | None = None, checkpoint_identity: str | None = None,
                   env: RuntimeEnv | None = None,
                   threads: int | None = None, dtype: torch.dtype | None = None,
                   disable_fuse_rope: bool | None = None, max_num_tokens: int = 0,
                   precision: str | None = None) -> GroundingRuntime:
    """dtype: the trtllm runtime's precision (default: the model's); the other runtimes run the model or engine as
    loaded or built. disable_fuse_rope: the trtllm runtime's RoPE outside the fused attention kernel (default: as
    `videoitg build --trtllm-unfused-rope` recorded it in the engines' build.json, `trtllm_options`).
    max_num_tokens: the longest sequence the caller's limits admit (`max_sequence_length`), which the trtllm
    runtime sizes its attention metadata for; 0: sized by the first request. precision: as for `open_vision`."""
    _check_runtime(runtime, "grounding")
    _check_precision(runtime, precision)
    if runtime == "torch":
        return TorchGrounding(model, precision)
    if runtime == "trtllm":
        if checkpoint is None:
            raise EngineError("the trtllm runtime loads the checkpoint's weights itself: pass checkpoint=")
        if disable_fuse_rope is None:
            disable_fuse_rope = bool(trtllm_options(engines)["disable_fuse_rope"])
        return TrtllmGrounding(model, checkpoint, dtype, disable_fuse_rope, max_num_tokens)
    device = model.model.embed_tokens.weight.device
    session, manifest = _engine(runtime, "grounding", engines, checkpoint_identity, env, threads, device)
    return EngineGrounding(model, runtime, session, manifest)
