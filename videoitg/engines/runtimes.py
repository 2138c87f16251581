"""One interface over the ways this project runs the two halves of VideoITG: torch, onnxruntime, tensorrt.

    vision = open_vision(engines_dir, "onnxruntime")      # or "tensorrt" / "torch" (model=...)
    feats = vision.encode(pixel_values)                   # [T, g², Cv] (or [T, hw², H] if the projector is fused)
    llm = open_llm(engines_dir, "onnxruntime")
    logits = llm.score(inputs_embeds, segment_ids, T)     # [T] fp32, one request

`verify` and the Triton vision/LLM steps call only this module; the libraries are imported lazily, each behind
one function, so a machine without TensorRT still runs torch and onnxruntime. Every engine file is opened only
after its manifest passed `check_manifest` (version lock, GPU, checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from videoitg.engine_build.onnx_export import LLMEncoder, VisionEncoder

from videoitg.engines.libraries import import_onnxruntime, import_tensorrt
from videoitg.engines.manifest import (
    BackendUnavailable,
    EngineError,
    EngineManifest,
    EngineMismatchError,
    RuntimeEnv,
    check_manifest,
)
from videoitg.model.layout import PAD_SEGMENT

BACKENDS = ("torch", "onnxruntime", "tensorrt")
LAYOUT = {  # backend -> (folder, vision file, llm file) inside an engines directory
    "onnxruntime": ("onnx", "vision.onnx", "llm.onnx"),
    "tensorrt": ("tensorrt", "vision.plan", "llm.plan"),
}


# ---- the interface -------------------------------------------------------------------------------------------
class VisionRuntime:
    backend = "?"
    precision = "fp32"
    fused_hw: int | None = None  # projector fused at this hw: output is [N, hw², H]
    max_frames_per_call: int | None = None

    def run(self, pixel_values: torch.Tensor) -> torch.Tensor:  # one chunk
        raise NotImplementedError

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[T, 3, S, S] -> features, in chunks the engine's profile accepts."""
        n = pixel_values.shape[0]
        step = self.max_frames_per_call or n
        return torch.cat([self.run(c) for c in pixel_values.split(step)], dim=0)


class LLMRuntime:
    backend = "?"
    precision = "fp32"
    padded = False  # True: accepts right-padded batches with an attention mask

    def run(self, inputs_embeds, segment_ids, frame_ids, attention_mask=None) -> torch.Tensor:  # [B, T]
        raise NotImplementedError

    def score(self, inputs_embeds: torch.Tensor, segment_ids: torch.Tensor, num_frames: int) -> torch.Tensor:
        """One request: inputs_embeds [L, H], segment_ids [L] -> fp32 logits [T]."""
        args = (inputs_embeds[None], segment_ids[None].long(), torch.arange(num_frames, dtype=torch.int64))
        mask = torch.ones_like(args[1]) if self.padded else None
        return self.run(*args, attention_mask=mask)[0].float().cpu()

    def score_batch(self, embeds: list[torch.Tensor], segments: list[torch.Tensor], frames: list[int]):
        """Several requests: one padded call when the runtime takes a mask, else one call each."""
        if not self.padded or len(embeds) == 1:
            return [self.score(e, s, t) for e, s, t in zip(embeds, segments, frames, strict=True)]
        L, T = max(e.shape[0] for e in embeds), max(frames)
        x = embeds[0].new_zeros(len(embeds), L, embeds[0].shape[-1])
        seg = torch.full((len(embeds), L), PAD_SEGMENT, dtype=torch.int64)
        mask = torch.zeros(len(embeds), L, dtype=torch.int64)
        for i, (e, s) in enumerate(zip(embeds, segments, strict=True)):
            x[i, : len(e)], seg[i, : len(s)], mask[i, : len(e)] = e, s, 1
        out = self.run(x, seg, torch.arange(T, dtype=torch.int64), mask).float().cpu()
        return [out[i, :t] for i, t in enumerate(frames)]


# ---- torch -------------------------------------------------------------------------------------------------
class TorchVision(VisionRuntime):
    backend = "torch"

    def __init__(self, model, hw: int | None = None, chunk: int = 64):
        self.module, self.fused_hw, self.max_frames_per_call = VisionEncoder(model, hw), hw, chunk
        p = model.out_proj.weight
        self.device, self.dtype = p.device, p.dtype
        self.precision = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[p.dtype]

    @torch.inference_mode()
    def run(self, pixel_values):
        return self.module(pixel_values.to(self.device, self.dtype)).float().cpu()


class TorchLLM(LLMRuntime):
    backend = "torch"
    padded = True

    def __init__(self, model):
        self.module = LLMEncoder(model, padded=True)
        p = model.out_proj.weight
        self.device, self.dtype = p.device, p.dtype
        self.precision = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[p.dtype]

    @torch.inference_mode()
    def run(self, inputs_embeds, segment_ids, frame_ids, attention_mask=None):
        d = self.device
        mask = None if attention_mask is None else attention_mask.to(d)
        return self.module(inputs_embeds.to(d, self.dtype), segment_ids.to(d), frame_ids.to(d), mask).float().cpu()


# ---- onnxruntime ---------------------------------------------------------------------------------------------
_ORT_FLOAT = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class _OrtSession:
    def __init__(self, path: Path, threads: int | None = None):
        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        self.sess = ort.InferenceSession(str(path), opts, providers=providers)
        self.inputs = {i.name: i.type for i in self.sess.get_inputs()}
        self.provider = self.sess.get_providers()[0]

    def __call__(self, **feeds: torch.Tensor) -> np.ndarray:
        arrays = {}
        for name, t in feeds.items():
            if name not in self.inputs:
                continue
            a = t.detach().cpu().numpy()
            arrays[name] = a.astype(_ORT_FLOAT[self.inputs[name]]) if self.inputs[name] in _ORT_FLOAT else a
        return self.sess.run(None, arrays)[0]


class OrtVision(VisionRuntime):
    backend = "onnxruntime"

    def __init__(self, path: Path, manifest: EngineManifest, chunk: int = 64, threads: int | None = None):
        self.sess, self.fused_hw = _OrtSession(path, threads), manifest.extra.get("fused_hw")
        self.precision, self.max_frames_per_call = manifest.precision, chunk

    def run(self, pixel_values):
        return torch.from_numpy(self.sess(pixel_values=pixel_values)).float()


class OrtLLM(LLMRuntime):
    backend = "onnxruntime"

    def __init__(self, path: Path, manifest: EngineManifest, threads: int | None = None):
        self.sess, self.precision = _OrtSession(path, threads), manifest.precision
        self.padded = "attention_mask" in self.sess.inputs

    def run(self, inputs_embeds, segment_ids, frame_ids, attention_mask=None):
        feeds = dict(inputs_embeds=inputs_embeds, segment_ids=segment_ids, frame_ids=frame_ids)
        if self.padded:
            feeds["attention_mask"] = attention_mask if attention_mask is not None else torch.ones_like(segment_ids)
        return torch.from_numpy(self.sess(**feeds)).float()


# ---- tensorrt ------------------------------------------------------------------------------------------------
class _TrtEngine:
    """A deserialized plan run through TensorRT 10's name-based tensor API on torch CUDA buffers."""

    def __init__(self, path: Path):
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise BackendUnavailable("TensorRT plans need a CUDA GPU; none is visible")
        self.trt, self.logger = trt, trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:  # version / GPU mismatch that slipped past the manifest
            raise EngineMismatchError(f"TensorRT {trt.__version__} could not deserialize {path}; rebuild it here")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.torch_dtype = {
            trt.float32: torch.float32,
            trt.float16: torch.float16,
            trt.bfloat16: torch.bfloat16,
            trt.int64: torch.int64,
            trt.int32: torch.int32,
            trt.bool: torch.bool,
        }

    def max_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.engine.get_tensor_profile_shape(name, 0)[2])

    def __call__(self, **feeds: torch.Tensor) -> dict[str, torch.Tensor]:
        keep = []
        for name in self.inputs:
            t = feeds[name].to("cuda", self.torch_dtype[self.engine.get_tensor_dtype(name)]).contiguous()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=self.torch_dtype[self.engine.get_tensor_dtype(name)], device="cuda")
            self.context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EngineError("TensorRT execution failed (see the TensorRT log)")
        stream.synchronize()
        return outs


class TrtVision(VisionRuntime):
    backend = "tensorrt"

    def __init__(self, path: Path, manifest: EngineManifest):
        self.eng, self.precision, self.fused_hw = _TrtEngine(path), manifest.precision, manifest.extra.get("fused_hw")
        self.max_frames_per_call = self.eng.max_shape("pixel_values")[0]

    def run(self, pixel_values):
        return next(iter(self.eng(pixel_values=pixel_values).values())).float().cpu()


class TrtLLM(LLMRuntime):
    backend = "tensorrt"

    def __init__(self, path: Path, manifest: EngineManifest):
        self.eng, self.precision = _TrtEngine(path), manifest.precision
        self.padded = "attention_mask" in self.eng.inputs

    def run(self, inputs_embeds, segment_ids, frame_ids, attention_mask=None):
        feeds = dict(inputs_embeds=inputs_embeds, segment_ids=segment_ids, frame_ids=frame_ids)
        if self.padded:
            feeds["attention_mask"] = attention_mask if attention_mask is not None else torch.ones_like(segment_ids)
        return self.eng(**feeds)["logits"].float().cpu()


# ---- opening engines -----------------------------------------------------------------------------------------
def _checked(engines_dir: Path, backend: str, which: int, env: RuntimeEnv | None, ckpt_id: str | None):
    if backend not in LAYOUT:
        raise EngineError(f"no engine files for backend {backend!r} (engine backends: {sorted(LAYOUT)})")
    folder, *files = LAYOUT[backend]
    path = Path(engines_dir) / folder / files[which]
    if not path.is_file():
        raise BackendUnavailable(f"{path} was not built (see {Path(engines_dir) / 'build.json'})")
    manifest = EngineManifest.read(path)
    check_manifest(manifest, env or RuntimeEnv.current(), checkpoint_identity=ckpt_id)
    return path, manifest


def open_vision(
    engines_dir: str | Path | None,
    backend: str,
    *,
    model=None,
    env: RuntimeEnv | None = None,
    checkpoint_identity: str | None = None,
    **kw: Any,
) -> VisionRuntime:
    if backend == "torch":
        if model is None:
            raise EngineError("the torch backend runs the loaded reference model: pass model=")
        return TorchVision(model, **kw)
    path, manifest = _checked(Path(engines_dir), backend, 0, env, checkpoint_identity)
    return OrtVision(path, manifest, **kw) if backend == "onnxruntime" else TrtVision(path, manifest)


def open_llm(
    engines_dir: str | Path | None,
    backend: str,
    *,
    model=None,
    env: RuntimeEnv | None = None,
    checkpoint_identity: str | None = None,
    **kw: Any,
) -> LLMRuntime:
    if backend == "torch":
        if model is None:
            raise EngineError("the torch backend runs the loaded reference model: pass model=")
        return TorchLLM(model)
    path, manifest = _checked(Path(engines_dir), backend, 1, env, checkpoint_identity)
    return OrtLLM(path, manifest, **kw) if backend == "onnxruntime" else TrtLLM(path, manifest)


def built_backends(engines_dir: str | Path) -> dict[str, Any]:
    """What `videoitg build` recorded in build.json: built engines and skipped ones with reasons."""
    p = Path(engines_dir) / "build.json"
    if not p.is_file():
        raise EngineError(f"{engines_dir}: no build.json; run `videoitg build --checkpoint DIR --out {engines_dir}`")
    return json.loads(p.read_text())


def open_best(
    engines_dir: str | Path | None,
    *,
    model=None,
    prefer: tuple[str, ...] = ("tensorrt", "onnxruntime", "torch"),
    checkpoint_identity: str | None = None,
) -> tuple[VisionRuntime, LLMRuntime, list[str]]:
    """The first backend in `prefer` whose vision and LLM engines both open here (manifests checked), plus the
    reasons the earlier ones were passed over. This is how a server picks up whatever `videoitg build` made."""
    passed_over = []
    for backend in prefer:
        try:
            if backend != "torch" and engines_dir is None:
                raise BackendUnavailable("no engines directory given")
            v = open_vision(engines_dir, backend, model=model, checkpoint_identity=checkpoint_identity)
            llm = open_llm(engines_dir, backend, model=model, checkpoint_identity=checkpoint_identity)
            return v, llm, passed_over
        except (BackendUnavailable, EngineError) as e:
            passed_over.append(f"{backend}: {e}")
    raise BackendUnavailable("no backend could open:\n  " + "\n  ".join(passed_over))
