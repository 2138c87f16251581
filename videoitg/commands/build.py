"""`videoitg build --checkpoint DIR --out ENGINES`: ONNX graphs, TensorRT plans and TensorRT-LLM artefacts, each
with a manifest; parts needing a library this machine lacks are skipped with the reason (see docs/engines.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from videoitg.request.limits import Limits

# Imports that need torch, the pipeline or an optional extra sit inside the functions that use them: `videoitg --help`
# answers without them (videoitg/commands/cli.py).

HELP = "build ONNX / TensorRT / TensorRT-LLM engines (with manifests) from a checkpoint"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="checkpoint directory (default: the embedded tiny checkpoint)")
    p.add_argument("--vision-tower", help="local SigLIP directory, if the checkpoint does not embed one")
    p.add_argument("--out", required=True, help="engines directory to write")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "fp16", "bf16", "fp8"],
        default="auto",
        help="precision of the ONNX graphs and the TensorRT plans built from them (auto: fp16 where CUDA is "
             "available, fp32 elsewhere; fp8 needs a graph with Q/DQ nodes and is refused without them)",
    )
    p.add_argument("--max-frames", type=int, default=512, help="largest request (frames) the engines must take")
    p.add_argument("--vision-chunk", type=int, default=128, help="frames per vision-engine call (profile max)")
    p.add_argument("--max-text-tokens", type=int, default=Limits.max_instruction_tokens,
                   help="instruction tokens the grounding plan's profile takes (default: what serving admits)")
    p.add_argument("--targets", default="onnx,tensorrt,trtllm", help="comma list of onnx, tensorrt, trtllm")
    p.add_argument("--steps", default="vision,grounding",
                   help="comma list of the serving steps to build engines for: vision (SigLIP), grounding (the LLM); "
                        "`--steps vision` builds the SigLIP graph and plan without reading or exporting the LLM")
    p.add_argument("--workspace-gib", type=float, default=8.0, help="TensorRT builder workspace")
    p.add_argument("--trtllm-unfused-rope", action="store_true",
                   help="serve the trtllm grounding with RoPE outside the fused attention kernel (docs/engines.md)")


def run(args: argparse.Namespace) -> int:
    from videoitg.defaults import default_checkpoint
    from videoitg.engine_build.build import BuildOptions, run_build
    from videoitg.engines.summary import summary_path

    opts = BuildOptions(
        checkpoint=Path(args.checkpoint) if args.checkpoint else default_checkpoint(),
        out=Path(args.out),
        precision=args.precision,
        max_frames=args.max_frames,
        vision_chunk=args.vision_chunk,
        max_text_tokens=args.max_text_tokens,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
        steps=tuple(s.strip() for s in args.steps.split(",") if s.strip()),
        workspace_gib=args.workspace_gib,
        vision_tower=Path(args.vision_tower) if args.vision_tower else None,
        trtllm_unfused_rope=args.trtllm_unfused_rope,
    )
    rep = run_build(opts)
    print(f"{len(rep.built)} built, {len(rep.skipped)} skipped; summary in {summary_path(opts.out)}")
    return 0
