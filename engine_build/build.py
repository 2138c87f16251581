"""`videoitg build`: everything this machine can build from one checkpoint, each engine with its manifest.

    ENGINES/onnx/vision.onnx(.data)      SigLIP through the select layer (or fused with the projector at --fuse-hw)
    ENGINES/onnx/llm.onnx(.data)         grounding LLM as an encoder -> per-frame logits
    ENGINES/tensorrt/{vision,llm}.plan   TensorRT plans from those graphs (where `import tensorrt` works)
    ENGINES/trtllm/checkpoint/           Variant B: TensorRT-LLM checkpoint; ENGINES/trtllm/engine/ from trtllm-build
    ENGINES/build.json                   what was built, what was skipped and why

ONNX graphs are always fp32 (portable; onnxruntime runs them on CPU). `--precision` applies to the TensorRT
plans and the TensorRT-LLM checkpoint. A part that needs a missing library is skipped with the reason recorded,
never faked.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from videoitg.engine_build.onnx_export import OPSET, export_llm, export_vision
from videoitg.engine_build.trt_builder import LLMProfileSpec, VisionProfileSpec, build_plan
from videoitg.engine_build.trtllm_convert import TrtllmBuildSpec, convert_variant_b, run_trtllm_build

from videoitg.checkpoint import checkpoint_identity, load_checkpoint
from videoitg.engines.manifest import BackendUnavailable, EngineError, EngineManifest, RuntimeEnv, checkpoint_sha256

TARGETS = ("onnx", "tensorrt", "trtllm")


@dataclass
class BuildOptions:
    checkpoint: Path
    out: Path
    precision: str = "fp16"
    max_frames: int = 512
    vision_chunk: int = 128
    fuse_hw: int | None = None
    llm_padded: bool = False
    max_text_tokens: int = 512
    max_batch: int = 1
    targets: tuple[str, ...] = TARGETS
    workspace_gib: float = 8.0
    vision_tower: Path | None = None

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
        ]
        if self.fuse_hw:
            parts += ["--fuse-hw", str(self.fuse_hw)]
        if self.llm_padded:
            parts.append("--llm-padded")
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


def _versions(*names: str) -> dict[str, str]:
    env = RuntimeEnv.current()
    out = {n: env.versions.get(n) for n in names if env.versions.get(n)}
    import onnx  # noqa: PLC0415

    if "onnx" in names:
        out["onnx"] = onnx.__version__
    return out


def run_build(opts: BuildOptions) -> BuildReport:
    bad = [t for t in opts.targets if t not in TARGETS]
    if bad:
        raise EngineError(f"unknown build target(s) {bad}; choose from {TARGETS}")
    model, _ = load_checkpoint(opts.checkpoint, "cpu", torch.float32, opts.vision_tower, with_tokenizer=False)
    cfg = model.config
    ident = {
        "sha256": checkpoint_sha256(opts.checkpoint),
        "identity": checkpoint_identity(opts.checkpoint),
        "path": str(Path(opts.checkpoint).resolve()),
    }
    rep, out = BuildReport(), Path(opts.out)
    extra = {"rebuild_command": opts.command(), "variant": "C" if cfg.attention == "bidirectional" else "B"}
    print(f"building engines for {opts.checkpoint} (Variant {extra['variant']}) into {out}")

    onnx_dir = out / "onnx"
    graphs: dict[str, Any] = {}
    if "onnx" in opts.targets or "tensorrt" in opts.targets:
        vr = export_vision(model, onnx_dir / "vision.onnx", hw=opts.fuse_hw)
        lr = export_llm(model, onnx_dir / "llm.onnx", padded=opts.llm_padded)
        for name, r in (("vision", vr), ("llm", lr)):
            m = EngineManifest(
                name=name,
                kind="onnx",
                file=r.path.name,
                precision="fp32",
                checkpoint=ident,
                versions=_versions("torch", "onnx"),
                io={"inputs": r.input_names, "outputs": r.output_names, "dynamic_axes": r.dynamic, "opset": OPSET},
                extra={**extra, "fused_hw": opts.fuse_hw} if name == "vision" else {**extra, "padded": opts.llm_padded},
            )
            m.write(onnx_dir)
            rep.add(m, onnx_dir, r.seconds)
            graphs[name] = (r, m)

    if "tensorrt" in opts.targets:
        trt_dir = out / "tensorrt"
        specs = {
            "vision": VisionProfileSpec(cfg.vision.image_size, opts.vision_chunk).profiles(),
            "llm": [
                p
                for p in LLMProfileSpec(
                    cfg.text.hidden_size, opts.max_frames, cfg.vision_token_num, opts.max_text_tokens, opts.max_batch
                ).profiles()
                if p.input in graphs["llm"][0].input_names
            ],
        }
        for name in ("vision", "llm"):
            plan = trt_dir / f"{name}.plan"
            t0 = time.perf_counter()
            try:
                trt_dir.mkdir(parents=True, exist_ok=True)
                versions = build_plan(graphs[name][0].path, plan, specs[name], opts.precision, opts.workspace_gib)
            except BackendUnavailable as e:
                rep.skip(f"tensorrt/{name}.plan", str(e))
                continue
            env = RuntimeEnv.current()
            m = EngineManifest(
                name=name,
                kind="tensorrt",
                file=plan.name,
                precision=opts.precision,
                checkpoint=ident,
                versions=versions,
                gpu={"name": env.gpu_name, "compute_capability": env.compute_capability},
                profiles=specs[name],
                io=graphs[name][1].io,
                extra=graphs[name][1].extra,
            )
            m.write(trt_dir)
            rep.add(m, trt_dir, time.perf_counter() - t0)

    if "trtllm" in opts.targets:
        _build_trtllm(opts, cfg, ident, extra, rep)

    (out / "build.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "build.json").write_text(
        json.dumps(
            {
                "checkpoint": ident,
                "precision": opts.precision,
                "command": opts.command(),
                "built": rep.built,
                "skipped": rep.skipped,
                "versions": {k: v for k, v in RuntimeEnv.current().versions.items() if v},
            },
            indent=2,
        )
        + "\n"
    )
    return rep


def _build_trtllm(opts: BuildOptions, cfg, ident: dict, extra: dict, rep: BuildReport) -> None:
    out = Path(opts.out) / "trtllm"
    if cfg.attention == "bidirectional":
        # Variant C cannot use the compiled TRT-LLM Qwen engine (causal mask hard-coded, TRT-LLM #1384); it runs
        # on the PyTorch backend straight from the checkpoint (videoitg.engines.trtllm), nothing to build.
        from videoitg.engines.libraries import import_trtllm  # noqa: PLC0415

        try:
            import_trtllm()
            note = "Variant C runs on the TensorRT-LLM PyTorch backend from the checkpoint (nothing to compile)"
            print(f"  {note}")
        except BackendUnavailable as e:
            rep.skip("trtllm (PyTorch backend, Variant C)", str(e))
        return
    prec = opts.precision  # fp8 is refused by the converter with the reason (needs ModelOpt calibration)
    t0 = time.perf_counter()
    try:
        ckpt = convert_variant_b(opts.checkpoint, out / "checkpoint", prec, opts.max_frames)
    except EngineError as e:
        rep.skip("trtllm/checkpoint", str(e))
        return
    m = EngineManifest(
        name="llm",
        kind="trtllm-checkpoint",
        file="checkpoint",
        precision=prec,
        checkpoint=ident,
        versions={},
        extra=extra,
    )
    m.write(out)
    rep.add(m, out, time.perf_counter() - t0)
    spec = TrtllmBuildSpec(opts.max_frames, cfg.vision_token_num, opts.max_text_tokens, opts.max_batch)
    t0 = time.perf_counter()
    try:
        versions = run_trtllm_build(ckpt, out / "engine", spec)
    except BackendUnavailable as e:
        rep.skip("trtllm/engine (trtllm-build)", str(e))
        return
    env = RuntimeEnv.current()
    m = EngineManifest(
        name="llm",
        kind="trtllm-engine",
        file="engine",
        precision=prec,
        checkpoint=ident,
        versions=versions,
        gpu={"name": env.gpu_name, "compute_capability": env.compute_capability},
        extra={**extra, "build_spec": spec.__dict__},
    )
    m.write(out)
    rep.add(m, out, time.perf_counter() - t0)
