"""The Triton model-repository generator: every `config.pbtxt` (and each model's tiny `model.py` shim) comes from
`model_specs()` here, for a CPU or a GPU deployment of a given checkpoint and optional engines, in one of two
shapes (`RepoSpec.mode`, trade-off in docs/serving.md):
- `bls` (default): the top-level `videoitg` is a BLS orchestrator (python): hash + feature cache, then
  decode -> vision on a miss, grounding, selection. A cache hit skips decode and the vision tower. Each request is
  its own task (a hit never waits behind a decode); at most `Limits.max_in_flight` cold videos at once, past it a
  request is refused at once (UNAVAILABLE) instead of waiting while its client times out.
- `ensemble`: the top-level `videoitg` is a Triton ensemble decode -> vision -> grounding -> `videoitg_select`,
  the standard shape that perf_analyzer / model-analyzer and operators know; no feature cache (every request
  decodes and encodes its video). CPU target only.

Both shapes take the same inputs and give the same outputs. The steps (all reachable by clients too, so each
checks its own inputs as the top-level model does):
- `videoitg_decode`     python: the core decoder (`videoitg.decode`) with PyAV (`--decoder python`) or DALI
                        through its Python API in the step (`--decoder dali`: NVDEC on a GPU instance, output left
                        on the device; DALI's CPU decoder, VP8/VP9/MJPEG, on the cpu target). No Triton DALI
                        backend is used.
- `videoitg_vision`     python: SigLIP + projector on the runtime the engines directory names (torch, ONNX
                        Runtime, a TensorRT plan: `videoitg.engines.runtimes`).
- `videoitg_grounding`  python: owns the tokenizer and the grounding LLM on its runtime (torch, ONNX Runtime,
                        TensorRT, TensorRT-LLM); dynamic batching with ragged inputs, each request scored alone.
- `videoitg_select`     python (ensemble only): logits -> ranking, top-K, moments (what the BLS model does inline).
The model.py shims import `videoitg.python_backend.<module>` (the `python_backend/` folder, installed with the
package), so the implementation lives once and the repository needs only the installed package.
The deployment's `videoitg.limits.Limits` travel as model parameters (`Limits.to_parameters()`) of the top-level,
decode and grounding models, which read them back with `Limits.from_mapping`: one configuration, checked where
each bound can first be checked (bytes at the top level, the video in decode, tokens in grounding).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videoitg.errors import InputError, VideoITGError
from videoitg.limits import Limits, served_defaults
from videoitg.outputs import DEFAULT_RANKING_RULE, DEFAULT_TOP_K, SelectionOptions, check_ranking_rule
from videoitg.sampling import SamplingParams

TOP = "videoitg"
DECODE = "videoitg_decode"
VISION = "videoitg_vision"
GROUNDING = "videoitg_grounding"
SELECT = "videoitg_select"
MODES = ("bls", "ensemble")
FEATURE_TYPES = {"float32": "FP32", "float16": "FP16", "bfloat16": "BF16"}  # the steps' dtype -> Triton's
DEFAULT_CHECKPOINT = "default"  # resolved with videoitg.defaults.default_checkpoint() inside the server


@dataclass
class RepoSpec:
    target: str = "cpu"  # "cpu" | "gpu"
    mode: str = "bls"  # "bls" | "ensemble" (cpu target only)
    # The decode step (python either way): "python" (PyAV on the CPU, uint8 frames to the vision step) or "dali"
    # (DALI's Python API inside the step, float32 pixel values: NVDEC on the gpu target, DALI's CPU decoder on the cpu
    # target, which decodes VP8/VP9/MJPEG only). The step self-tests DALI at load (`dali_backend.self_test`).
    decoder: str = "python"
    checkpoint: str = DEFAULT_CHECKPOINT
    vision_tower: str = ""  # a SigLIP directory, over the checkpoint's mm_vision_tower
    engines: str = ""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    cache_bytes: int = 1 << 30
    max_batch: int = 8
    default_top_k: int = DEFAULT_TOP_K
    ranking_rule: str = DEFAULT_RANKING_RULE  # the deployment's default; a request may send RANKING_RULE
    # Instances of each step (Triton's instance_group count; on the gpu target, per GPU). More decode instances only
    # pay with spare cores (decoding competes with the encoders); more vision / grounding instances with spare
    # accelerator memory and compute (each holds its own copy of its half of the model).
    decode_instances: int = 1
    vision_instances: int = 1
    grounding_instances: int = 1
    # The python decode step of the bls repository streams a video's frames to the vision step in chunks of this
    # many (decode overlaps the tower); 0: it answers once with every frame. The ensemble never streams.
    stream_frames: int = 64
    dtype: str = ""  # "" = float32 on cpu, float16 on gpu (what the released model runs in)
    # Built-in served defaults, not the environment, so a repository generated from a RepoSpec is reproducible (the
    # committed examples); `videoitg repo build` / `serve` pass Limits.from_args (flags > environment > defaults).
    limits: Limits = field(default_factory=served_defaults)
    # Directories under which a request may name its video (VIDEO_URI) instead of carrying its bytes: real paths
    # (`videoitg.paths.MediaRoots.of`), announced to clients as the top-level model's `media_roots` parameter.
    # Empty (the default): every reference is refused. BLS with the python decoder only.
    media_roots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.target not in ("cpu", "gpu"):
            raise InputError(f"target must be 'cpu' or 'gpu', got {self.target!r}")
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.decoder not in ("dali", "python"):
            raise InputError(f"decoder must be 'dali' or 'python', got {self.decoder!r}")
        if self.mode == "ensemble" and self.gpu:
            raise InputError("the ensemble repository is generated for the cpu target only; use --mode bls for a "
                             "GPU deployment")
        for name in ("max_batch", "default_top_k", "decode_instances", "vision_instances", "grounding_instances"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be an int >= 1, got {v!r}")
        if isinstance(self.stream_frames, bool) or not isinstance(self.stream_frames, int) or self.stream_frames < 0:
            raise InputError(f"stream_frames must be an int >= 0, got {self.stream_frames!r}")
        if not isinstance(self.limits, Limits):
            raise InputError(f"limits must be a videoitg.limits.Limits, got {type(self.limits).__name__}")
        self.limits.check_sampling(self.sampling)  # a repository whose every request would be refused
        check_ranking_rule(self.ranking_rule)
        if isinstance(self.media_roots, (str, os.PathLike)) or not all(
                isinstance(r, str) and os.path.isabs(r) for r in self.media_roots):
            raise InputError(f"media_roots must be a tuple of absolute directories, got {self.media_roots!r}")
        self.media_roots = tuple(self.media_roots)
        if self.media_roots and self.mode != "bls":
            raise InputError("--media-root (videos by reference) needs the bls repository")
        if not self.dtype:
            self.dtype = "float32" if self.target == "cpu" else "float16"
        if self.dtype not in FEATURE_TYPES:
            raise InputError(f"dtype must be one of {', '.join(FEATURE_TYPES)}, got {self.dtype!r}")

    @property
    def gpu(self) -> bool:
        return self.target == "gpu"

    @property
    def streaming(self) -> bool:
        """Whether the decode step streams (decoupled): the python decoder under the BLS model."""
        return self.mode == "bls" and self.decoder == "python" and self.stream_frames > 0


# ---- engines -----------------------------------------------------------------------------------------------
GPU_ONLY_RUNTIMES = ("tensorrt", "trtllm")


def step_runtimes(engines: str, target: str) -> dict[str, str]:
    """The runtime each step serves with: what `videoitg build` recorded in `ENGINES/build.json` (`runtimes`, the
    fastest built), except that a cpu target never gets a GPU-only runtime (it falls back to ONNX Runtime when its
    graph was built, else torch). No engines: torch. Each engine's manifest is checked when the step loads it."""
    runtimes = {"vision": "torch", "grounding": "torch"}
    if not engines:
        return runtimes
    summary = Path(engines) / "build.json"
    if not summary.is_file():
        raise InputError(f"{engines}: no build.json; build engines with `videoitg build --out {engines}`")
    built = json.loads(summary.read_text())
    for step, runtime in built.get("runtimes", {}).items():
        if target == "cpu" and runtime in GPU_ONLY_RUNTIMES:
            onnx = Path(engines) / "onnx" / ("vision.onnx" if step == "vision" else "llm.onnx")
            runtime = "onnxruntime" if onnx.is_file() else "torch"
        runtimes[step] = runtime
    return runtimes


# ---- config trees -------------------------------------------------------------------------------------------
def _io(name: str, dtype: str, dims: list[int], **extra: Any) -> dict[str, Any]:
    return {"name": name, "data_type": f"TYPE_{dtype}", "dims": dims, **extra}


def _params(**kv: Any) -> dict[str, dict[str, str]]:
    return {k: {"string_value": str(v)} for k, v in kv.items()}


def _python_model(name: str, spec: RepoSpec, *, inputs, outputs, max_batch: int = 0, count: int = 1,
                  batching: dict | None = None, params: dict[str, Any] | None = None,
                  on_gpu: bool = False) -> dict[str, Any]:
    cfg: dict[str, Any] = {"name": name, "backend": "python", "max_batch_size": max_batch}
    if batching is not None:
        cfg["dynamic_batching"] = batching
    cfg["input"] = inputs
    cfg["output"] = outputs
    kind = "KIND_GPU" if (on_gpu and spec.gpu) else "KIND_CPU"
    cfg["instance_group"] = [{"kind": kind, "count": count}]
    p = dict(params or {})
    if spec.gpu:
        # Inputs arrive where the producer left them (GPU), so tensors pass between steps by DLPack, not host copies.
        p["FORCE_CPU_ONLY_INPUT_TENSORS"] = "no"
    cfg["parameters"] = _params(**p)
    return cfg


def selection_inputs() -> list[dict[str, Any]]:
    return [
        _io("TOP_K", "INT32", [1], optional=True),
        _io("RANKING_RULE", "STRING", [1], optional=True),  # "released" | "exact" (videoitg.outputs)
    ]


def request_inputs(mode: str = "bls") -> list[dict[str, Any]]:
    """What a client sends the top-level model. With the feature cache (bls), the video may come as VIDEO_DIGEST
    alone (`videoitg.digest.video_digest`): a cached video is then scored without its bytes crossing the wire, an
    uncached one is answered NOT_FOUND and the client sends VIDEO (`VideoITGClient` does both); or as VIDEO_URI,
    a file under one of the server's media roots (refused where it has none)."""
    if mode == "bls":
        video = [_io("VIDEO", "STRING", [1], optional=True), _io("VIDEO_DIGEST", "STRING", [1], optional=True),
                 _io("VIDEO_URI", "STRING", [1], optional=True)]
    else:
        video = [_io("VIDEO", "STRING", [1])]
    return [*video, _io("INSTRUCTION", "STRING", [1]), *selection_inputs()]


def frame_inputs() -> list[dict[str, Any]]:
    """Asking for the top-K frames as images (bls only; docs/serving.md): FRAMES "jpeg" | "uint8", FRAMES_SIZE the
    longer side in pixels (0 or absent: the video's own size)."""
    return [_io("FRAMES", "STRING", [1], optional=True), _io("FRAMES_SIZE", "INT32", [1], optional=True)]


def frame_outputs() -> list[dict[str, Any]]:
    """The frames asked for, chronological; only the asked format's output is in the answer
    (`videoitg.outputs.frame_outputs`)."""
    return [_io("FRAME_JPEGS", "STRING", [-1]), _io("FRAME_PIXELS", "UINT8", [-1, -1, -1, 3])]


def result_outputs() -> list[dict[str, Any]]:
    """What the top-level model answers, in either shape (the tensors `videoitg.outputs.result_outputs` fills)."""
    return [
        # Chronological, one per sampled frame: sigmoid score, the head's raw logit, the original frame number
        # and its timestamp in seconds.
        _io("SCORES", "FP32", [-1]),
        _io("LOGITS", "FP32", [-1]),
        _io("FRAME_INDICES", "INT64", [-1]),
        _io("TIMESTAMPS", "FP64", [-1]),
        # Ranking order under RANKING_RULE (default "released": the fp16 sigmoid, ties to the earlier frame):
        # positions into the per-frame outputs, best first.
        _io("RANKING", "INT32", [-1]),
        _io("TOP_K_FRAMES", "INT64", [-1]),  # the K best frame numbers, chronological
        _io("CACHE_HIT", "BOOL", [1]),  # always false in the ensemble (no cache)
        _io("MOMENTS", "FP32", [-1, 3]),  # [start_s, end_s, score], best first (videoitg.moments)
        # The rule the ranking outputs follow (the request's, else the deployment's). No output shares an input's
        # name: in an ensemble that name would be the input tensor, and an absent optional input gives nothing.
        _io("APPLIED_RANKING_RULE", "STRING", [1]),
        # The video's duration in seconds as its container states it (0: not stated); the moments end by it.
        _io("DURATION", "FP64", [1]),
    ]


def model_specs(spec: RepoSpec, root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Model name -> config tree. `root`: where the repository is written (relative engine paths are under it)."""
    s = spec.sampling
    common = {
        "checkpoint": spec.checkpoint,
        "vision_tower": spec.vision_tower,
        "device": "cuda" if spec.gpu else "cpu",
        "dtype": spec.dtype,
    }
    sampling = {"num_frames": s.num_frames, "target_fps": f"{s.target_fps:g}", "sampling_rule": s.rule}
    limits = spec.limits.to_parameters()
    # the documented moment rule (docs/moments.md)
    selection = SelectionOptions(spec.default_top_k, spec.ranking_rule).to_parameters()
    engines = spec.engines if not spec.engines or Path(spec.engines).is_absolute() or root is None \
        else str(root / spec.engines)
    runtimes = step_runtimes(engines, spec.target)
    specs: dict[str, dict[str, Any]] = {}

    if spec.mode == "bls":
        specs[TOP] = _python_model(
            TOP, spec, max_batch=spec.max_batch,
            # No added delay: requests already queued while a batch runs form the next batch. A bounded queue: past
            # max_in_flight waiting requests Triton refuses the next one at once ("Exceeds maximum queue size").
            batching={"max_queue_delay_microseconds": 0,
                      "default_queue_policy": {"max_queue_size": spec.limits.max_in_flight}},
            inputs=request_inputs("bls") + frame_inputs(), outputs=result_outputs() + frame_outputs(),
            params={
                **common, **sampling, **limits, **selection,
                "vision_runtime": runtimes["vision"], "engines": spec.engines,
                "feature_cache_bytes": spec.cache_bytes,
                "decode_model": DECODE, "vision_model": VISION, "grounding_model": GROUNDING,
                "decode_backend": spec.decoder, "stream_frames": spec.stream_frames if spec.streaming else 0,
                "media_roots": _media_roots(spec),
            },
        )
    else:
        specs[TOP] = _ensemble(spec)
        specs[SELECT] = _python_model(
            SELECT, spec, max_batch=spec.max_batch,
            inputs=[
                _io("LOGITS", "FP32", [-1]),
                _io("FRAME_INDICES", "INT64", [-1]),
                _io("TIMESTAMPS", "FP64", [-1]),
                _io("DURATION", "FP64", [1], optional=True),  # the decode step's: moments end by it
                *selection_inputs(),
            ],
            outputs=result_outputs(), params={**limits, **selection},
        )
    specs[DECODE] = _decode_spec(spec, {**sampling, **limits})
    # Steps take one video per request with a batch axis of 1 ([1, T, ...]); no dynamic batching, so a request's
    # answer never waits for another request's decode or tower pass.
    specs[VISION] = _python_model(
        VISION, spec, on_gpu=True, max_batch=spec.max_batch, count=spec.vision_instances,
        # uint8 resized frames from the python decoder; DALI hands over normalised float pixel values.
        inputs=[_io("PIXEL_VALUES", "FP32" if spec.decoder == "dali" else "UINT8", [-1, 3, -1, -1]),
                # The video's frame count when PIXEL_VALUES is one chunk of it (the streaming decode step's).
                _io("NUM_FRAMES", "INT64", [1], optional=True)],
        outputs=[_io("FEATURES", FEATURE_TYPES[spec.dtype], [-1, -1, -1])],
        params={**common, **limits, "vision_runtime": runtimes["vision"], "engines": spec.engines},
    )
    feat = FEATURE_TYPES[spec.dtype]
    specs[GROUNDING] = _python_model(
        GROUNDING, spec, on_gpu=True, max_batch=spec.max_batch, count=spec.grounding_instances,
        # Never delay: requests that queued while a batch ran still go together (each is scored alone).
        batching={"max_queue_delay_microseconds": 0},
        inputs=[
            # Ragged: one request per video, different frame counts; each is scored alone (batched == alone).
            _io("FEATURES", feat, [-1, -1, -1], allow_ragged_batch=True),
            _io("INSTRUCTION", "STRING", [1]),
        ],
        outputs=[_io("LOGITS", "FP32", [-1])],
        params={**common, **limits, "grounding_runtime": runtimes["grounding"], "engines": spec.engines},
    )
    return specs


def _ensemble(spec: RepoSpec) -> dict[str, Any]:
    """decode -> vision -> grounding -> select as a Triton ensemble; lower-case names are the tensors between
    steps, upper-case ones the ensemble's own inputs and outputs."""
    def step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> dict[str, Any]:
        return {"model_name": model, "model_version": -1, "input_map": inputs, "output_map": outputs}

    return {
        "name": TOP, "platform": "ensemble", "max_batch_size": spec.max_batch,
        "input": request_inputs("ensemble"), "output": result_outputs(),
        "ensemble_scheduling": {"step": [
            step(DECODE, {"VIDEO": "VIDEO"},
                 {"PIXEL_VALUES": "frames", "FRAME_INDICES": "frame_indices", "TIMESTAMPS": "timestamps",
                  "DURATION": "duration"}),
            step(VISION, {"PIXEL_VALUES": "frames"}, {"FEATURES": "features"}),
            step(GROUNDING, {"FEATURES": "features", "INSTRUCTION": "INSTRUCTION"}, {"LOGITS": "logits"}),
            step(SELECT, {"LOGITS": "logits", "FRAME_INDICES": "frame_indices", "TIMESTAMPS": "timestamps",
                          "DURATION": "duration", "TOP_K": "TOP_K", "RANKING_RULE": "RANKING_RULE"},
                 {o["name"]: o["name"] for o in result_outputs()}),
        ]},
    }


def _decode_spec(spec: RepoSpec, params: dict[str, Any]) -> dict[str, Any]:
    """`params`: sampling and limits, which the decode step applies."""
    dali = spec.decoder == "dali"
    outputs = [
        # [T, 3, S, S]: resized uint8 frames the vision step normalises (python), or DALI's float32 SigLIP pixel
        # values (left on the instance's GPU by NVDEC)
        _io("PIXEL_VALUES", "FP32" if dali else "UINT8", [-1, 3, -1, -1]),
        _io("FRAME_INDICES", "INT64", [-1]),  # original frame numbers of the sampled frames
        _io("TIMESTAMPS", "FP64", [-1]),
        _io("DURATION", "FP64", [1]),  # the container's duration in seconds (0: not stated), which bounds moments
    ]
    # Clients can call the step directly: a bounded queue (the top level sends at most max_in_flight videos at once)
    # refuses the rest at once ("Exceeds maximum queue size") instead of queueing decodes ahead of the top level's,
    # and a cancelled request leaves the queue. One request per execution, as without dynamic batching.
    batching = {"max_queue_delay_microseconds": 0, "preferred_batch_size": [1],
                "default_queue_policy": {"max_queue_size": spec.limits.max_in_flight}}
    # The dali decoder runs on a GPU instance (Triton names its GPU: `runtimes.instance_device`) on the gpu target.
    params = {"checkpoint": spec.checkpoint, "vision_tower": spec.vision_tower, "decoder": spec.decoder,
              "device": "cuda" if spec.gpu and dali else "cpu", **params}
    model = {"count": spec.decode_instances, "max_batch": spec.max_batch, "batching": batching, "on_gpu": dali}
    if spec.mode != "bls":
        return _python_model(DECODE, spec, **model, inputs=[_io("VIDEO", "STRING", [1])], outputs=outputs,
                             params=params)
    # Under the BLS model the video comes as its bytes or as a file under a media root (checked here again: a
    # client may call this step), with the identity of the file the BLS model hashed (`steps.decode_source`).
    inputs = [_io("VIDEO", "STRING", [1], optional=True), _io("VIDEO_URI", "STRING", [1], optional=True),
              _io("VIDEO_VERSION", "STRING", [1], optional=True)]
    params["media_roots"] = _media_roots(spec)
    if not spec.streaming:
        return _python_model(DECODE, spec, **model, inputs=inputs, outputs=outputs, params=params)
    # Decoupled: chunks of PIXEL_VALUES with the video's NUM_FRAMES as they decode, FRAME_INDICES, TIMESTAMPS and
    # DURATION last (`videoitg.python_backend.steps.decode_stream`).
    cfg = _python_model(DECODE, spec, **model, inputs=inputs, outputs=[*outputs, _io("NUM_FRAMES", "INT64", [1])],
                        params={**params, "stream_frames": spec.stream_frames})
    cfg["model_transaction_policy"] = {"decoupled": True}
    return cfg


def _media_roots(spec: RepoSpec) -> str:
    from videoitg.paths import MediaRoots

    return MediaRoots(tuple(spec.media_roots)).to_parameter()


# ---- pbtxt --------------------------------------------------------------------------------------------------
def _scalar(key: str, v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str) and (v.startswith(("TYPE_", "KIND_")) or key == "data_type"):
        return v  # enum values are bare identifiers
    return json.dumps(v)


def to_pbtxt(cfg: dict[str, Any], indent: int = 0) -> str:
    """Protobuf text format of a model-config tree (dicts = messages, lists of dicts = repeated messages)."""
    pad = "  " * indent
    lines: list[str] = []
    for k, v in cfg.items():
        if k == "parameters" and isinstance(v, dict):  # map<string, ModelParameter>
            for pk, pv in v.items():
                lines.append(f"{pad}parameters {{")
                lines.append(f"{pad}  key: {json.dumps(pk)}")
                lines.append(f"{pad}  value {{ string_value: {json.dumps(pv['string_value'])} }}")
                lines.append(f"{pad}}}")
        elif k.endswith("_map") and isinstance(v, dict):  # map<string, string> (ensemble input_map/output_map)
            for mk, mv in v.items():
                lines.append(f"{pad}{k} {{ key: {json.dumps(mk)} value: {json.dumps(mv)} }}")
        elif isinstance(v, dict):
            lines.append(f"{pad}{k} {{")
            lines.append(to_pbtxt(v, indent + 1))
            lines.append(f"{pad}}}")
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            lines.append(f"{pad}{k} [")
            for i, item in enumerate(v):
                lines.append(f"{pad}  {{")
                lines.append(to_pbtxt(item, indent + 2))
                lines.append(f"{pad}  }}{',' if i < len(v) - 1 else ''}")
            lines.append(f"{pad}]")
        elif isinstance(v, list):
            lines.append(f"{pad}{k}: [ {', '.join(_scalar(k, x) for x in v)} ]")
        else:
            lines.append(f"{pad}{k}: {_scalar(k, v)}")
    return "\n".join(x for x in lines if x)


# ---- writing ------------------------------------------------------------------------------------------------
SHIM = '''"""Generated by `videoitg repo build`: the implementation is python_backend/{module}.py."""

from videoitg.python_backend.{module} import TritonPythonModel  # noqa: F401
'''

MODULES = {TOP: "videoitg_bls", DECODE: "decode", VISION: "vision", GROUNDING: "grounding", SELECT: "selection"}
EMPTY_VERSION = "1/.keep"  # Triton needs a version directory for an ensemble too; git keeps no empty directory
HEADER = "# Generated by `videoitg repo build` (videoitg/serving/repository.py); edit the generator, not this file.\n"


def render(spec: RepoSpec, root: Path | None = None) -> dict[str, str]:
    """Relative path -> file content for the whole repository."""
    files: dict[str, str] = {}
    for name, cfg in model_specs(spec, root).items():
        files[f"{name}/config.pbtxt"] = HEADER + to_pbtxt(cfg) + "\n"
        if cfg.get("backend") == "python":
            files[f"{name}/1/model.py"] = SHIM.format(module=MODULES[name])
        elif cfg.get("platform") == "ensemble":
            files[f"{name}/{EMPTY_VERSION}"] = ""
    return files


class RepositoryError(VideoITGError):
    """A repository that would not load could not be written completely (the message says what is missing)."""


def build_repository(spec: RepoSpec, out: str | Path, clean: bool = True, bundle: bool = False) -> Path:
    """Write the repository. `bundle`: copy the checkpoint, its external SigLIP tower and the engines into it
    (`bundle_assets`), so it depends on no host path."""
    out = Path(out)
    if clean and out.exists():
        for name in MODULES:
            shutil.rmtree(out / name, ignore_errors=True)
    if bundle:
        spec = bundle_assets(spec, out)
    for rel, text in render(spec, out).items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return out


# Bundled files live in the top-level model's directory: Triton ignores its non-numeric subdirectories, and a
# directory of their own at the root would be taken for a model.
ASSET_DIR = TOP


def bundle_assets(spec: RepoSpec, out: Path) -> RepoSpec:
    """Copy the checkpoint (the embedded default needs none: it ships with the package), its external SigLIP tower
    and the engines under `out/videoitg/`, hard-linked where the filesystem allows, and return the spec that names
    them relative to the repository's root (`steps.StepAssets` resolves them there)."""
    from dataclasses import replace

    from videoitg.checkpoint import load_config
    from videoitg.python_backend.steps import resolve_checkpoint

    changes: dict[str, str] = {}
    if spec.checkpoint != DEFAULT_CHECKPOINT:
        ckpt = resolve_checkpoint(spec.checkpoint)
        _copy_tree(ckpt, out / ASSET_DIR / "checkpoint")
        changes["checkpoint"] = f"{ASSET_DIR}/checkpoint"
        _, tower = load_config(ckpt, spec.vision_tower or None)
        if tower is not None and tower.resolve().is_relative_to(ckpt.resolve()):
            if spec.vision_tower:  # already copied with the checkpoint
                changes["vision_tower"] = f"{ASSET_DIR}/checkpoint/{tower.resolve().relative_to(ckpt.resolve())}"
        elif tower is not None:
            _copy_tree(tower, out / ASSET_DIR / "vision_tower")
            changes["vision_tower"] = f"{ASSET_DIR}/vision_tower"
    if spec.engines:
        _copy_tree(Path(spec.engines), out / ASSET_DIR / "engines")
        changes["engines"] = f"{ASSET_DIR}/engines"
    return replace(spec, **changes)


def _copy_tree(src: Path, dst: Path) -> None:
    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)  # a 16 GB checkpoint costs no space on the same filesystem
        except OSError:
            shutil.copy2(a, b)

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, copy_function=link_or_copy)
