"""The runtime seam: each half of VideoITG on torch, ONNX Runtime, a TensorRT plan or TensorRT-LLM.

    vision = open_vision("onnxruntime", model, engines="ENGINES")    # or "torch" / "tensorrt"
    visual = vision.visual_features(pixel_values)                    # [T, 3, S, S] -> [T, hw², H]
    grounding = open_grounding("onnxruntime", model, engines="ENGINES")  # or "torch" / "tensorrt" / "trtllm"
    logits = grounding.score(visual, ids)                            # one request -> fp32 [T]

`model` is the core `VideoITG` (or `VideoITGAnchor`): the torch runtime runs it; an engine runtime takes from it
only what stays outside the engine (the projector, whose resize depends on T; the token embeddings and the
sequence layout of `videoitg.model.layout`). The serving steps, `verify` and the benchmarks call only this module;
each library is imported lazily behind one function (`videoitg.engines.libraries`), so a machine without TensorRT
still runs torch and ONNX Runtime. An engine file opens only after its manifest passed `check_manifest` (version
lock, GPU, checkpoint).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from videoitg.engines.libraries import import_onnxruntime, import_tensorrt
from videoitg.engines.manifest import (
    BackendUnavailable,
    EngineError,
    EngineManifest,
    EngineMismatchError,
    RuntimeEnv,
    check_manifest,
)

RUNTIMES = ("torch", "onnxruntime", "tensorrt", "trtllm")
ENGINE_FILES = {  # (runtime, step) -> file inside an engines directory (written by `videoitg build`)
    ("onnxruntime", "vision"): "onnx/vision.onnx",
    ("onnxruntime", "grounding"): "onnx/llm.onnx",
    ("tensorrt", "vision"): "tensorrt/vision.plan",
    ("tensorrt", "grounding"): "tensorrt/llm.plan",
}
PRECISION = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


# ---- the interface -------------------------------------------------------------------------------------------
class VisionRuntime:
    """Frames -> projected visual features. Subclasses provide `encode` (SigLIP through the select layer)."""

    runtime = "?"
    precision = "fp32"

    def __init__(self, model, chunk_frames: int = 64):
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

    def __init__(self, model):
        self.model = model
        w = model.model.embed_tokens.weight
        self.device, self.dtype = w.device, w.dtype

    def score(self, visual: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# ---- torch -------------------------------------------------------------------------------------------------
class TorchVision(VisionRuntime):
    runtime = "torch"

    def __init__(self, model, chunk_frames: int = 64):
        super().__init__(model, chunk_frames)
        self.precision = PRECISION[self.dtype]

    def encode(self, pixel_values):
        return self.model.encode_frames(pixel_values.to(self.device, self.dtype), self.chunk_frames)


class TorchGrounding(GroundingRuntime):
    runtime = "torch"

    def __init__(self, model):
        super().__init__(model)
        self.precision = PRECISION[self.dtype]

    @torch.inference_mode()
    def score(self, visual, ids):
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


class _TrtEngine:
    """A deserialized plan run through TensorRT 10's name-based tensor API on torch CUDA buffers."""

    def __init__(self, path: Path):
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise BackendUnavailable("TensorRT plans need a CUDA GPU; none is visible")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:  # version / GPU mismatch that slipped past the manifest
            raise EngineMismatchError(f"TensorRT {trt.__version__} could not deserialize {path}; rebuild it here")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.torch_dtype = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
                            trt.int64: torch.int64, trt.int32: torch.int32, trt.bool: torch.bool}
        self.max_batch = int(self.engine.get_tensor_profile_shape(self.inputs[0], 0)[2][0])

    def __call__(self, **feeds: torch.Tensor) -> torch.Tensor:
        keep = []  # inputs must outlive the asynchronous launch
        for name in self.inputs:
            t = feeds[name].to("cuda", self.torch_dtype[self.engine.get_tensor_dtype(name)]).contiguous()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        out_name = self.outputs[0]
        out = torch.empty(tuple(self.context.get_tensor_shape(out_name)),
                          dtype=self.torch_dtype[self.engine.get_tensor_dtype(out_name)], device="cuda")
        self.context.set_tensor_address(out_name, out.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EngineError("TensorRT execution failed (see the TensorRT log)")
        stream.synchronize()
        return out.float()


def _engine(runtime: str, step: str, engines: str | Path | None, checkpoint_identity: str | None,
            env: RuntimeEnv | None, threads: int | None) -> tuple[_OrtSession | _TrtEngine, EngineManifest]:
    if engines is None:
        raise EngineError(f"the {runtime} runtime runs a built engine: pass the engines directory "
                          "(`videoitg build --checkpoint DIR --out ENGINES`)")
    path = Path(engines) / ENGINE_FILES[(runtime, step)]
    if not path.is_file():
        raise BackendUnavailable(f"{path} was not built (see {Path(engines) / 'build.json'})")
    manifest = EngineManifest.read(path)
    check_manifest(manifest, env or RuntimeEnv.current(), checkpoint_identity=checkpoint_identity)
    return (_OrtSession(path, threads) if runtime == "onnxruntime" else _TrtEngine(path)), manifest


class EngineVision(VisionRuntime):
    def __init__(self, model, runtime: str, session, manifest: EngineManifest, chunk_frames: int = 64):
        super().__init__(model, min(chunk_frames, session.max_batch or chunk_frames))
        self.runtime, self.session, self.precision = runtime, session, manifest.precision

    def encode(self, pixel_values):
        return torch.cat([self.session(pixel_values=c) for c in pixel_values.split(self.chunk_frames)])


class EngineGrounding(GroundingRuntime):
    """The engine runs the decoder stack, final norm and head pooled per frame (`LLMEncoder`); the embeddings and
    the layout (anchors included for Variant B) are built here by the core model."""

    def __init__(self, model, runtime: str, session, manifest: EngineManifest):
        super().__init__(model)
        self.runtime, self.session, self.precision = runtime, session, manifest.precision
        built = manifest.extra.get("variant")
        ours = "B" if model.anchors else "C"
        if built is not None and built != ours:
            raise EngineMismatchError(f"the grounding engine was built for Variant {built}, the checkpoint is "
                                      f"Variant {ours}: rebuild it")

    @torch.inference_mode()
    def score(self, visual, ids):
        ids = ids.to(self.device)
        layout = self.model.layout(visual, ids)
        embeds = self.model.sequence(visual.to(self.device, self.dtype), ids)  # [L, H]
        return self.session(inputs_embeds=embeds[None], segment_ids=layout.segment_ids()[None],
                            frame_ids=torch.arange(layout.num_frames, dtype=torch.int64))[0].cpu()


# ---- TensorRT-LLM (PyTorch backend) ---------------------------------------------------------------------------
TRTLLM_DTYPES = (torch.float16, torch.bfloat16)


def trtllm_dtype(requested: torch.dtype) -> torch.dtype:
    """The TensorRT-LLM grounding precision: the model's own (videoitg.pipeline.parse_dtype: float16 on a GPU, as
    released; bfloat16 when asked for). Its fused attention has no float32 path, so float32 is refused."""
    if requested not in TRTLLM_DTYPES:
        raise EngineError(f"the trtllm runtime runs float16 or bfloat16, the model was loaded as "
                          f"{str(requested).removeprefix('torch.')}: load it in float16 (the default on a GPU)")
    return requested


class TrtllmGrounding(GroundingRuntime):
    runtime = "trtllm"

    def __init__(self, model, checkpoint: str | Path, dtype: torch.dtype | None = None):
        from videoitg.engines.trtllm import TrtllmTorchScorer

        super().__init__(model)
        dtype = trtllm_dtype(dtype or self.dtype)  # the model's dtype unless one is given
        self.scorer, self.precision = TrtllmTorchScorer(checkpoint, dtype), PRECISION[dtype]

    @torch.inference_mode()
    def score(self, visual, ids):
        ids = ids.to(self.device)
        layout = self.model.layout(visual, ids)
        embeds = self.model.sequence(visual.to(self.device, self.dtype), ids)
        return self.scorer.score(embeds, layout.segment_ids(), layout.num_frames)


# ---- opening -------------------------------------------------------------------------------------------------
def _check_runtime(runtime: str, step: str) -> None:
    allowed = [r for r in RUNTIMES if r == "torch" or (r, step) in ENGINE_FILES or (r == "trtllm" and
                                                                                    step == "grounding")]
    if runtime not in allowed:
        raise EngineError(f"unknown {step} runtime {runtime!r}; choose one of {', '.join(allowed)}")


def open_vision(runtime: str, model, *, engines: str | Path | None = None, checkpoint_identity: str | None = None,
                env: RuntimeEnv | None = None, chunk_frames: int = 64, threads: int | None = None) -> VisionRuntime:
    _check_runtime(runtime, "vision")
    if runtime == "torch":
        return TorchVision(model, chunk_frames)
    session, manifest = _engine(runtime, "vision", engines, checkpoint_identity, env, threads)
    return EngineVision(model, runtime, session, manifest, chunk_frames)


def open_grounding(runtime: str, model, *, engines: str | Path | None = None, checkpoint: str | Path | None = None,
                   checkpoint_identity: str | None = None, env: RuntimeEnv | None = None,
                   threads: int | None = None, dtype: torch.dtype | None = None) -> GroundingRuntime:
    """dtype: the trtllm runtime's precision (default: the model's); the other runtimes run the model or engine as
    loaded or built."""
    _check_runtime(runtime, "grounding")
    if runtime == "torch":
        return TorchGrounding(model)
    if runtime == "trtllm":
        if checkpoint is None:
            raise EngineError("the trtllm runtime loads the checkpoint's weights itself: pass checkpoint=")
        return TrtllmGrounding(model, checkpoint, dtype)
    session, manifest = _engine(runtime, "grounding", engines, checkpoint_identity, env, threads)
    return EngineGrounding(model, runtime, session, manifest)
