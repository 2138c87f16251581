"""`videoitg build`: everything this machine can build from one checkpoint, each engine with its manifest.

    ENGINES/onnx/vision.onnx(.data)      SigLIP through the select layer
    ENGINES/onnx/llm.onnx(.data)         grounding LLM as an encoder -> per-frame logits (Variant C or B)
    ENGINES/tensorrt/{vision,llm}.plan   TensorRT plans from those graphs (where `import tensorrt` works)
    ENGINES/build.json                   what was built, what was skipped and why, and the runtime each step
                                         serves with (`runtimes`: the fastest built one; `videoitg serve --engines`)

`--steps vision` builds the vision step's engines alone (the SigLIP graph and plan): the checkpoint's vision half is
the only part read, and the LLM is neither loaded nor exported.

The graphs are exported in `--precision` (auto: fp16 where CUDA is available, as released, fp32 elsewhere), which
the TensorRT plans built from them keep (strongly typed; `trt_builder`); ONNX Runtime runs any of them (fp32 is
what a CPU deployment wants). fp8 exports the fp16 graphs a quantizer starts from and refuses the plan while they
hold no Q/DQ nodes. TensorRT-LLM runs the grounding half on its PyTorch backend straight from the checkpoint's
safetensors (`videoitg.engines.trtllm`): nothing is compiled, the build only checks that the library imports. A
part that needs a missing library is skipped with the reason recorded, never faked.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from videoitg.engine_build.onnx_export import (
    GRAPH_DTYPES,
    OPSET,
    ExportResult,
    export_llm,
    export_vision,
    graph_precision,
)
from videoitg.engine_build.trt_builder import PRECISIONS, LLMProfileSpec, VisionProfileSpec, build_plan
from videoitg.engines.manifest import EngineManifest, Profile, RuntimeEnv, checkpoint_sha256
from videoitg.engines.preflight import RUNTIME_MODULES
from videoitg.engines.summary import summary_path
from videoitg.errors import BackendUnavailable, EngineError
from videoitg.libraries import import_trtllm, library_version
from videoitg.model.checkpoint import load_checkpoint
from videoitg.model.files import checkpoint_identity
from videoitg.request.limits import Limits

TARGETS = ("onnx", "tensorrt", "trtllm")
STEPS = ("vision", "grounding")  # the serving steps engines are built for; trtllm serves grounding only
GRAPH = {"vision": "vision", "grounding": "llm"}  # step -> its graph's and plan's name


@dataclass
class BuildOptions:
    checkpoint: Path
    out: Path
    precision: str = "auto"  # resolve_precision
    max_frames: int = 512
    vision_chunk: int = 128  # frames per vision-plan call: its profile's max, the batch the runtime runs
    max_text_tokens: int = Limits.max_instruction_tokens  # instruction tokens the grounding plan takes (served: 1024)
    targets: tuple[str, ...] = TARGETS
    steps: tuple[str, ...] = STEPS
    workspace_gib: float = 8.0
    vision_tower: Path | None = None
    trtllm_unfused_rope: bool = False  # the trtllm runtime's RoPE outside the fused attention kernel (build.json)

    def command(self) -> str:
        parts = [
            "videoitg",
            "build",
            "--checkpoint",
            str(self.checkpoint),
            "--out",
            str(self.out),
            "--precision",
            self.precision,
            "--max-frames",
            str(self.max_frames),
            "--vision-chunk",
            str(self.vision_chunk),
            "--max-text-tokens",
            str(self.max_text_tokens),
        ] + (["--trtllm-unfused-rope"] if self.trtllm_unfused_rope else [])
        if tuple(self.steps) != STEPS:
            parts += ["--steps", ",".join(self.steps)]
        return shlex.join(parts)


@dataclass
class BuildReport:
    built: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def skip(self, what: str, reason: str) -> None:
        print(f"  skipped {what}: {reason}")
        self.skipped.append({"what": what, "reason": reason})

    def add(self, m: EngineManifest, folder: Path, seconds: float) -> None:
        print(f"  built {m.kind:<18} {folder.name}/{m.file}  ({m.precision}, {seconds:.1f} s)")
        self.built.append(
            {
                "name": m.name,
                "kind": m.kind,
                "path": f"{folder.name}/{m.file}",
                "precision": m.precision,
                "seconds": round(seconds, 2),
            }
        )


def resolve_precision(precision: str) -> str:
    """auto: fp16 where CUDA is available (the released inference precision), fp32 elsewhere."""
    if precision == "auto":
        return "fp16" if torch.cuda.is_available() else "fp32"
    if precision not in PRECISIONS:
        raise EngineError(f"precision {precision!r} is not one of auto, {', '.join(PRECISIONS)}")
    return precision


def _versions(*names: str) -> dict[str, str]:
    """The installed version of each library in `names` that is installed (package metadata)."""
    return {n: v for n in names if (v := library_version(n))}


@dataclass(frozen=True)
class PlanInputs:
    """What `build_plan` is given for one TensorRT plan: its graph, optimisation profiles, precision, workspace."""

    name: str  # "vision" | "llm"
    onnx: Path
    profiles: list[Profile]
    precision: str
    workspace_gib: float


def plan_inputs(opts: BuildOptions, config: Any, graphs: dict[str, ExportResult]) -> list[PlanInputs]:
    """The plans a build asks TensorRT for, one per exported graph: the vision graph's frame batch (1..vision_chunk
    frames at the tower's image size), the grounding graph's sequence and frame axes up to the longest sequence the
    served limits admit (`LLMProfileSpec.for_model`), each in the build's precision."""
    plans = []
    for name, graph in graphs.items():
        if name == "vision":
            profiles = VisionProfileSpec(config.vision.image_size, opts.vision_chunk).profiles()
        else:
            spec = LLMProfileSpec.for_model(config, opts.max_frames, opts.max_text_tokens)
            profiles = [p for p in spec.profiles() if p.input in graph.input_names]
        plans.append(PlanInputs(name, graph.path, profiles, opts.precision, opts.workspace_gib))
    return plans


def run_build(opts: BuildOptions) -> BuildReport:
    bad = [t for t in opts.targets if t not in TARGETS]
    if bad:
        raise EngineError(f"unknown build target(s) {bad}; choose from {TARGETS}")
    if not opts.steps or any(s not in STEPS for s in opts.steps):
        raise EngineError(f"build steps {list(opts.steps)}: choose one or both of {STEPS}")
    opts = replace(opts, precision=resolve_precision(opts.precision))
    steps = [s for s in STEPS if s in opts.steps]
    dtype = GRAPH_DTYPES.get(opts.precision, torch.float16)  # fp8: the fp16 graph a quantizer starts from
    part = steps[0] if len(steps) == 1 else "all"  # one step: only its half of the checkpoint is read
    model, _ = load_checkpoint(opts.checkpoint, "cpu", dtype, opts.vision_tower, with_tokenizer=False, part=part)
    cfg = model.config
    ident = {
        "sha256": checkpoint_sha256(opts.checkpoint),
        "identity": checkpoint_identity(opts.checkpoint, opts.vision_tower),  # as the steps name it
        "path": str(Path(opts.checkpoint).resolve()),
    }
    rep, out = BuildReport(), Path(opts.out)
    extra = {"rebuild_command": opts.command(), "variant": "C" if cfg.attention == "bidirectional" else "B"}
    print(f"building engines ({', '.join(steps)}) for {opts.checkpoint} (Variant {extra['variant']}) into {out}")

    onnx_dir = out / "onnx"
    graphs: dict[str, tuple[ExportResult, EngineManifest]] = {}
    if "onnx" in opts.targets or "tensorrt" in opts.targets:
        exporters = {"vision": export_vision, "llm": export_llm}
        for name in (GRAPH[s] for s in steps):
            r = exporters[name](model, onnx_dir / f"{name}.onnx")
            m = EngineManifest(
                name=name,
                kind="onnx",
                file=r.path.name,
                precision=graph_precision(model),
                checkpoint=ident,
                versions=_versions("torch", "onnx"),
                io={"inputs": r.input_names, "outputs": r.output_names, "dynamic_axes": r.dynamic, "opset": OPSET},
                extra=extra,
            )
            m.write(onnx_dir)
            rep.add(m, onnx_dir, r.seconds)
            graphs[name] = (r, m)

    if "tensorrt" in opts.targets:
        trt_dir = out / "tensorrt"
        for p in plan_inputs(opts, cfg, {name: r for name, (r, _) in graphs.items()}):
            plan = trt_dir / f"{p.name}.plan"
            t0 = time.perf_counter()
            try:
                trt_dir.mkdir(parents=True, exist_ok=True)
                versions = build_plan(p.onnx, plan, p.profiles, p.precision, p.workspace_gib)
            except BackendUnavailable as e:
                rep.skip(f"tensorrt/{p.name}.plan", str(e))
                continue
            env = RuntimeEnv.current()
            m = EngineManifest(
                name=p.name,
                kind="tensorrt",
                file=plan.name,
                precision=opts.precision,
                checkpoint=ident,
                versions=versions,
                gpu={"name": env.gpu_name, "compute_capability": env.compute_capability},
                profiles=p.profiles,
                io=graphs[p.name][1].io,
                extra=graphs[p.name][1].extra,
            )
            m.write(trt_dir)
            rep.add(m, trt_dir, time.perf_counter() - t0)

    if "trtllm" in opts.targets and "grounding" in steps:
        try:
            import_trtllm()
            print("  trtllm: the grounding half runs on the TensorRT-LLM PyTorch backend from the checkpoint")
            rep.built.append({"name": "grounding", "kind": "trtllm", "path": str(Path(opts.checkpoint).resolve()),
                              "precision": opts.precision if opts.precision in ("fp16", "bf16") else "fp16",
                              "seconds": 0.0})
        except BackendUnavailable as e:
            rep.skip("trtllm (PyTorch backend)", str(e))

    summary_path(out).parent.mkdir(parents=True, exist_ok=True)
    summary_path(out).write_text(
        json.dumps(
            {
                "checkpoint": ident,
                "precision": opts.precision,
                "command": opts.command(),
                "runtimes": serving_runtimes(rep),
                "trtllm": {"disable_fuse_rope": opts.trtllm_unfused_rope},  # read by runtimes.trtllm_options
                "built": rep.built,
                "skipped": rep.skipped,
                "versions": {k: v for k, v in RuntimeEnv.current().versions.items() if v},
            },
            indent=2,
        )
        + "\n"
    )
    return rep


PREFERENCE = {"vision": ("tensorrt", "onnxruntime"), "grounding": ("tensorrt", "trtllm", "onnxruntime")}
KIND_RUNTIME = {"onnx": "onnxruntime", "tensorrt": "tensorrt", "trtllm": "trtllm"}


def serving_runtimes(rep: BuildReport) -> dict[str, str]:
    """The runtime each step serves with: the fastest that was built and whose library is installed where the build
    ran (TensorRT, then TensorRT-LLM, then ONNX Runtime), torch when none was. Engines are built in the image that
    serves them, and the GPU image has no onnxruntime (docs/deploy-gpu.md): its ONNX graphs are written, not served."""
    built = {(b["name"] if b["name"] != "llm" else "grounding", KIND_RUNTIME[b["kind"]]) for b in rep.built}
    here = {r for r in KIND_RUNTIME.values() if library_version(RUNTIME_MODULES[r])}
    return {step: next((r for r in prefer if (step, r) in built and r in here), "torch")
            for step, prefer in PREFERENCE.items()}
