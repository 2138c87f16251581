"""The Triton model-repository generator: each model's `config.pbtxt` and `model.py` shim, and the repository's
summary, for a cpu or gpu deployment in the `bls` or `ensemble` shape (docs/repository.md).
The tensors come from `videoitg.contract.protocol`; the implementation lives in `python_backend/`."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from videoitg.contract.parameters import (
    DEFAULT_CHECKPOINT,
    DecodeParameters,
    GroundingParameters,
    ModelParameters,
    SelectParameters,
    StepParameters,
    TopParameters,
    VisionParameters,
)
from videoitg.contract.protocol import (
    DECODE,
    DURATION,
    FEATURE_TYPES,
    FEATURES,
    FRAME_INDICES,
    GENERATED,
    GROUNDING,
    INSTRUCTION,
    LOGITS,
    MODES,
    OPEN_DIMS,
    OTHER_INPUTS_BYTES,
    PIXEL_VALUES,
    SELECT,
    SELECTION_INPUTS,
    SUMMARY_FILE,
    TIMESTAMPS,
    TOP,
    VIDEO,
    VISION,
    ModelDims,
    ModelSummary,
    RepoSummary,
    Signature,
    TensorSpec,
    check_decoder,
    signatures,
)
from videoitg.decoders import DECODERS
from videoitg.engines.summary import BUILD_SUMMARY, read_summary
from videoitg.errors import InputError
from videoitg.outputs import DEFAULT_RANKING_RULE, DEFAULT_TOP_K, SelectionOptions, check_ranking_rule
from videoitg.paths import MediaRoots
from videoitg.precision import PRECISIONS
from videoitg.request.limits import Limits, served_defaults
from videoitg.sampling import SamplingParams
from videoitg.writes import write_whole

# NVDEC on a GPU (the frames stay on the device); PyAV on a CPU machine, where it is the faster decoder.
DEFAULT_DECODERS = {"cpu": "pyav", "gpu": "dali"}


@dataclass
class RepoSpec:
    target: str = "cpu"  # "cpu" | "gpu"
    mode: str = "bls"  # "bls" | "ensemble" (cpu target only)
    # The decode step's decoder (`videoitg.decoders.SERVED`; a python-backend step either way, uint8 frames streamed
    # to the vision step): "pyav" (PyAV on the CPU) or "dali" (DALI's Python API inside the step:
    # NVDEC on the gpu target, PyAV for the streams NVDEC cannot number or decode; DALI's CPU decoder on the cpu
    # target, VP8/VP9/MJPEG only). The step self-tests DALI at load (`videoitg.decode.selftest.self_test`).
    # "" = the target's default (`DEFAULT_DECODERS`).
    decoder: str = ""
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
    precision: str = "default"  # videoitg.precision.PRECISIONS (the torch runtime)
    # Built-in served defaults, not the environment, so a repository generated from a RepoSpec is reproducible (the
    # committed examples); `videoitg repo build` / `serve` pass Limits.from_args (flags > environment > defaults).
    limits: Limits = field(default_factory=served_defaults)
    # Directories under which a request may name its video (VIDEO_URI) instead of carrying its bytes: real paths
    # (`videoitg.paths.MediaRoots.of`), announced to clients as the top-level model's `media_roots` parameter.
    # Empty (the default): every reference is refused. BLS with the pyav decoder only.
    media_roots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.target not in ("cpu", "gpu"):
            raise InputError(f"target must be 'cpu' or 'gpu', got {self.target!r}")
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        self.decoder = check_decoder(self.decoder or DEFAULT_DECODERS[self.target])
        if DECODERS[self.decoder].placement == "gpu only" and not self.gpu:
            raise InputError(f"the {self.decoder} decoder decodes on NVDEC only: use it with --target gpu")
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
            raise InputError(f"limits must be a videoitg.request.limits.Limits, got {type(self.limits).__name__}")
        self.limits.check_sampling(self.sampling)  # a repository whose every request would be refused
        check_ranking_rule(self.ranking_rule)
        if isinstance(self.media_roots, (str, os.PathLike)) or not all(
                isinstance(r, str) and os.path.isabs(r) for r in self.media_roots):
            raise InputError(f"media_roots must be a tuple of absolute directories, got {self.media_roots!r}")
        self.media_roots = tuple(self.media_roots)
        if self.media_roots and self.mode != "bls":
            raise InputError("--media-root (videos by reference) needs the bls repository")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision != "default" and self.engines:
            raise InputError(f"--precision {self.precision} runs the torch runtime's layers so; engines carry their "
                             "own precision (`videoitg build --precision`): serve without --engines")
        if self.precision == "fp8":
            if self.dtype not in ("", "bfloat16"):
                raise InputError(f"--precision fp8 runs attention, the norms and the head in bfloat16, not "
                                 f"{self.dtype}: leave --dtype out (or give bfloat16)")
            self.dtype = "bfloat16"
        if not self.dtype:
            self.dtype = "float32" if self.target == "cpu" else "float16"
        if self.dtype not in FEATURE_TYPES:
            raise InputError(f"dtype must be one of {', '.join(FEATURE_TYPES)}, got {self.dtype!r}")

    @property
    def gpu(self) -> bool:
        return self.target == "gpu"

    @property
    def streaming(self) -> bool:
        """Whether the decode step streams (decoupled): a decoder that streams under the BLS model."""
        return self.mode == "bls" and DECODERS[self.decoder].streams and self.stream_frames > 0


# ---- engines -----------------------------------------------------------------------------------------------
GPU_ONLY_RUNTIMES = ("tensorrt", "trtllm")


def step_runtimes(engines: str, target: str) -> dict[str, str]:
    """The runtime each step serves with: what `videoitg build` recorded in `ENGINES/build.json` (`runtimes`, the
    fastest built), except that a cpu target never gets a GPU-only runtime (it falls back to ONNX Runtime when its
    graph was built, else torch). No engines: torch. Each engine's manifest is checked when the step loads it."""
    runtimes = {"vision": "torch", "grounding": "torch"}
    if not engines:
        return runtimes
    built = read_summary(engines)
    if built is None:
        raise InputError(f"{engines}: no {BUILD_SUMMARY}; build engines with `videoitg build --out {engines}`")
    from videoitg.engines.runtimes import ENGINE_FILES  # imports torch, as reading the checkpoint's dims does

    for step, runtime in built.get("runtimes", {}).items():
        if target == "cpu" and runtime in GPU_ONLY_RUNTIMES:
            runtime = "onnxruntime" if (Path(engines) / ENGINE_FILES[("onnxruntime", step)]).is_file() else "torch"
        runtimes[step] = runtime
    return runtimes


# ---- config trees -------------------------------------------------------------------------------------------
def _io(t: TensorSpec) -> dict[str, Any]:
    cfg: dict[str, Any] = {"name": t.name, "data_type": f"TYPE_{t.dtype}", "dims": list(t.dims)}
    if t.ragged:
        cfg["allow_ragged_batch"] = True
    if t.optional:
        cfg["optional"] = True
    return cfg


def _python_model(name: str, spec: RepoSpec, sig: Signature, params: ModelParameters, *, max_batch: int = 0,
                  count: int = 1, batching: dict[str, Any] | None = None, on_gpu: bool = False) -> dict[str, Any]:
    cfg: dict[str, Any] = {"name": name, "backend": "python", "max_batch_size": max_batch}
    if batching is not None:
        cfg["dynamic_batching"] = batching
    cfg["input"] = [_io(t) for t in sig.inputs]
    cfg["output"] = [_io(t) for t in sig.outputs]
    kind = "KIND_GPU" if (on_gpu and spec.gpu) else "KIND_CPU"
    cfg["instance_group"] = [{"kind": kind, "count": count}]
    p = params.to_parameters()
    if spec.gpu:
        # Inputs arrive where the producer left them (GPU), so tensors pass between steps by DLPack, not host copies.
        p["FORCE_CPU_ONLY_INPUT_TENSORS"] = "no"  # python_backend's own parameter
    cfg["parameters"] = {k: {"string_value": v} for k, v in p.items()}
    return cfg


def _local_checkpoint(spec: RepoSpec, root: Path | None) -> tuple[Path, Path | None] | None:
    """(the checkpoint, the external tower the spec names) where the steps will find them (`root`: the repository's
    root, under which relative paths lie); None when the checkpoint is not on this machine (`repo build --no-bundle`
    of a path only the serving host has)."""
    from videoitg.model.files import resolve_checkpoint, resolve_under  # numpy, av: not for --help

    ckpt = resolve_checkpoint(spec.checkpoint, root)
    if not (ckpt / "config.json").is_file():
        return None
    return ckpt, resolve_under(spec.vision_tower, root) if spec.vision_tower else None


def model_dims(spec: RepoSpec, root: Path | None = None) -> ModelDims:
    """The dimensions the checkpoint fixes, read from its config where the steps will read it. A checkpoint that is
    not on this machine leaves them open, as the steps then check them themselves."""
    from videoitg.model.files import load_config

    local = _local_checkpoint(spec, root)
    if local is None:
        return OPEN_DIMS
    config = load_config(*local)[0]  # as the steps' StepAssets do
    return ModelDims(image_size=config.vision.image_size, hidden_size=config.text.hidden_size)


def pinned_identity(spec: RepoSpec, root: Path | None = None) -> str:
    """The identity of the checkpoint the repository is written for (`videoitg.model.files.checkpoint_identity`:
    its config and every weight byte, its external tower's too), taken where the steps will read it: pinned in the
    parameters of every model that loads or caches by it, so a step reloaded later loads those weights or none, and
    the feature cache keys by them. "" for a checkpoint that is not on this machine: its models take the identity
    from the files when they load."""
    from videoitg.model.files import checkpoint_identity

    local = _local_checkpoint(spec, root)
    return "" if local is None else checkpoint_identity(*local)


def repo_signatures(spec: RepoSpec, dims: ModelDims = OPEN_DIMS) -> dict[str, Signature]:
    """Each model's signature in the repository `spec` describes (`protocol.signatures`), with the checkpoint's
    `dims` (`model_dims`; the default leaves them open)."""
    return signatures(spec.mode, spec.decoder, FEATURE_TYPES[spec.dtype], spec.streaming, dims)


def model_specs(spec: RepoSpec, root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Model name -> config tree. `root`: where the repository is written (relative paths are under it)."""
    sig = repo_signatures(spec, model_dims(spec, root))
    shared = StepParameters(checkpoint=spec.checkpoint, vision_tower=spec.vision_tower,
                            device="cuda" if spec.gpu else "cpu", dtype=spec.dtype, precision=spec.precision,
                            limits=spec.limits, checkpoint_identity=pinned_identity(spec, root))
    step = {f.name: getattr(shared, f.name) for f in fields(StepParameters)}
    # the documented moment rule (docs/moments.md)
    selection = SelectionOptions(spec.default_top_k, spec.ranking_rule)
    engines = spec.engines if not spec.engines or Path(spec.engines).is_absolute() or root is None \
        else str(root / spec.engines)
    runtimes = step_runtimes(engines, spec.target)
    specs: dict[str, dict[str, Any]] = {}

    if spec.mode == "bls":
        specs[TOP] = _python_model(
            TOP, spec, sig[TOP], TopParameters(
                **step, sampling=spec.sampling, selection=selection, vision_runtime=runtimes["vision"],
                engines=spec.engines, feature_cache_bytes=spec.cache_bytes, decoder=spec.decoder,
                stream_frames=spec.stream_frames if spec.streaming else 0, media_roots=MediaRoots(spec.media_roots)),
            # No dynamic batcher: tritonserver 2.51's, with a bounded queue, leaves a request that arrives while the
            # one instance is busy up to 500 ms in it (the execution's end wakes the batcher before the instance is
            # free again; benchmarks/RESULTS.md#concurrent-requests-cpu). The model hands each request to a task at
            # once, and its own admission (`videoitg_bls`: requests_at_once, then a bounded line) refuses past it.
            max_batch=spec.max_batch)
    else:
        specs[TOP] = _ensemble(spec, sig[TOP])
        specs[SELECT] = _python_model(SELECT, spec, sig[SELECT], SelectParameters(spec.limits, selection),
                                      max_batch=spec.max_batch)
    specs[DECODE] = _decode_spec(spec, sig[DECODE])
    # Steps take one video per request with a batch axis of 1 ([1, T, ...]); no dynamic batching, so a request's
    # answer never waits for another request's decode or tower pass.
    specs[VISION] = _python_model(
        VISION, spec, sig[VISION], VisionParameters(**step, vision_runtime=runtimes["vision"], engines=spec.engines),
        on_gpu=True, max_batch=spec.max_batch, count=spec.vision_instances)
    specs[GROUNDING] = _python_model(
        GROUNDING, spec, sig[GROUNDING],
        GroundingParameters(**step, grounding_runtime=runtimes["grounding"], engines=spec.engines),
        on_gpu=True, max_batch=spec.max_batch, count=spec.grounding_instances,
        # Never delay: requests that queued while a batch ran still go together (each is scored alone).
        batching={"max_queue_delay_microseconds": 0})
    return specs


def _ensemble(spec: RepoSpec, sig: Signature) -> dict[str, Any]:
    """decode -> vision -> grounding -> select as a Triton ensemble; lower-case names are the tensors between
    steps, upper-case ones the ensemble's own inputs and outputs."""
    def step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> dict[str, Any]:
        return {"model_name": model, "model_version": -1, "input_map": inputs, "output_map": outputs}

    return {
        "name": TOP, "platform": "ensemble", "max_batch_size": spec.max_batch,
        "input": [_io(t) for t in sig.inputs], "output": [_io(t) for t in sig.outputs],
        "ensemble_scheduling": {"step": [
            step(DECODE, {VIDEO: VIDEO},
                 {PIXEL_VALUES: "frames", FRAME_INDICES: "frame_indices", TIMESTAMPS: "timestamps",
                  DURATION: "duration"}),
            step(VISION, {PIXEL_VALUES: "frames"}, {FEATURES: "features"}),
            step(GROUNDING, {FEATURES: "features", INSTRUCTION: INSTRUCTION}, {LOGITS: "logits"}),
            step(SELECT, {LOGITS: "logits", FRAME_INDICES: "frame_indices", TIMESTAMPS: "timestamps",
                          DURATION: "duration", **{o.name: o.name for o in SELECTION_INPUTS}},
                 {t.name: t.name for t in sig.outputs}),
        ]},
    }


def _decode_spec(spec: RepoSpec, sig: Signature) -> dict[str, Any]:
    on_gpu = spec.gpu and DECODERS[spec.decoder].placement != "cpu"  # NVDEC on the step's GPU
    # Under the BLS model, which sends at most max_in_flight videos at once, no dynamic batcher (as its own); under
    # the ensemble, which has no admission of its own, a bounded queue refuses past max_in_flight at once ("Exceeds
    # maximum queue size"), one request per execution.
    batching = None if spec.mode == "bls" else {
        "max_queue_delay_microseconds": 0, "preferred_batch_size": [1],
        "default_queue_policy": {"max_queue_size": spec.limits.max_in_flight}}
    # An NVDEC decoder runs on a GPU instance (Triton names its GPU: `python_backend.params.instance_device`) on the
    # gpu target; the python decode step of the bls repository answers in chunks (decoupled: `protocol.signatures`).
    params = DecodeParameters(
        spec.checkpoint, spec.vision_tower, spec.decoder, "cuda" if on_gpu else "cpu", spec.sampling,
        spec.limits, MediaRoots(spec.media_roots), spec.stream_frames if spec.streaming else 0)
    cfg = _python_model(DECODE, spec, sig, params, count=spec.decode_instances, max_batch=spec.max_batch,
                        batching=batching, on_gpu=on_gpu)
    if spec.streaming:
        cfg["model_transaction_policy"] = {"decoupled": True}
    return cfg


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
HEADER = f"{GENERATED} (videoitg/repository/generator.py); edit the generator, not this file.\n"


def render(spec: RepoSpec, root: Path | None = None) -> dict[str, str]:
    """Relative path -> file content for the whole repository, its summary (`protocol.SUMMARY_FILE`) included."""
    files: dict[str, str] = {}
    configs = model_specs(spec, root)
    for name, cfg in configs.items():
        files[f"{name}/config.pbtxt"] = HEADER + to_pbtxt(cfg) + "\n"
        if cfg.get("backend") == "python":
            files[f"{name}/1/model.py"] = SHIM.format(module=MODULES[name])
        elif cfg.get("platform") == "ensemble":
            files[f"{name}/{EMPTY_VERSION}"] = ""
    files[SUMMARY_FILE] = summarize(spec, configs).to_json()
    return files


def summarize(spec: RepoSpec, configs: dict[str, dict[str, Any]]) -> RepoSummary:
    """The repository's summary from its model configs (`model_specs`)."""
    sig = repo_signatures(spec)
    models = {}
    for name, cfg in configs.items():
        group = cfg.get("instance_group", [{}])[0]  # an ensemble has none
        batch = cfg["max_batch_size"]
        models[name] = ModelSummary(
            max_batch_size=batch, kind=group.get("kind"), count=group.get("count", 0),
            inputs=len(sig[name].inputs), outputs=len(sig[name].outputs),
            max_request_bytes=spec.limits.decode.max_bytes * max(1, batch) + OTHER_INPUTS_BYTES)
    return RepoSummary(target=spec.target, mode=spec.mode, decoder=spec.decoder, public=TOP, models=models)


def build_repository(spec: RepoSpec, out: str | Path, clean: bool = True, bundle: bool = False) -> Path:
    """Write the repository. `bundle`: copy the checkpoint, its external SigLIP tower and the engines into it
    (`bundle_assets`), so it depends on no host path."""
    generate(spec, out, clean, bundle)
    return Path(out)


def generate(spec: RepoSpec, out: str | Path, clean: bool = True, bundle: bool = False) -> dict[str, str]:
    """`build_repository`, returning what it wrote (relative path -> content: `render`'s), so that a launcher can
    check it and write it again (`write_files`) without rendering again."""
    out = Path(out)
    if clean and out.exists():
        for name in MODULES:
            shutil.rmtree(out / name, ignore_errors=True)
    if bundle:
        spec = bundle_assets(spec, out)
    files = render(spec, out)
    write_files(out, files)
    return files


def write_files(out: Path, files: dict[str, str], only: set[str] | None = None) -> None:
    """Write `files` (relative path -> content) under `out`, each whole (`only`: these of them)."""
    for rel, text in files.items():
        if only is None or rel in only:
            p = out / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            write_whole(p, text)


# Bundled files live in the top-level model's directory: Triton ignores its non-numeric subdirectories, and a
# directory of their own at the root would be taken for a model.
ASSET_DIR = TOP


def bundle_assets(spec: RepoSpec, out: Path) -> RepoSpec:
    """Copy the checkpoint (the embedded default needs none: it ships with the package), its external SigLIP tower
    and the engines under `out/videoitg/`, hard-linked where the filesystem allows, and return the spec that names
    them relative to the repository's root (`params.StepAssets` resolves them there)."""
    from dataclasses import replace

    from videoitg.model.files import load_config, resolve_checkpoint

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
