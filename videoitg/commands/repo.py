"""`videoitg repo build`: write a Triton model repository for a checkpoint (and engines, if built)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from videoitg.decoders import DECODERS, SERVED
from videoitg.precision import PRECISION_HELP, PRECISIONS
from videoitg.sampling import SamplingParams

if TYPE_CHECKING:
    from videoitg.repository.generator import RepoSpec

HELP = "write the Triton model repository (config.pbtxt files) for a checkpoint"


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-frames", type=int, default=512, help="frames sampled per video (default 512)")
    p.add_argument("--target-fps", type=float, default=1.0, help="sampling rate before subsampling (default 1)")
    p.add_argument("--sampling-rule", choices=["eval", "train"], default="eval")
    p.add_argument("--cache-bytes", type=int, default=1 << 30,
                   help="visual-feature cache bound in bytes (default 1 GiB; 0 disables it)")


def add_deployment_arguments(p: argparse.ArgumentParser) -> None:
    """The repository's shape and serving defaults (`videoitg.repository.generator.RepoSpec`)."""
    from videoitg.outputs import DEFAULT_RANKING_RULE, DEFAULT_TOP_K, RANKING_RULES

    p.add_argument("--mode", choices=["bls", "ensemble"], default="bls",
                   help="bls: top-level BLS model with the feature cache (a new instruction on a cached video skips "
                        "decode and vision); ensemble: a Triton ensemble decode -> vision -> grounding -> select, no "
                        "cache, cpu target only (docs/repository.md)")
    p.add_argument("--decoder", choices=SERVED, default="",
                   help="the decode step's decoder: " + "; ".join(f"{n}: {DECODERS[n].summary}" for n in SERVED)
                   + " (default: pyav on the cpu target, dali on the gpu target; dali is self-tested before the "
                     "server starts: docs/deploy-gpu.md, GPU decode step)")
    p.add_argument("--ranking-rule", choices=RANKING_RULES, default=DEFAULT_RANKING_RULE,
                   help="the deployment's ranking rule when a request sends none (default: released)")
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K,
                   help=f"top-K frames when a request sends no TOP_K (default {DEFAULT_TOP_K}, as `score`)")
    p.add_argument("--dtype", default="auto",
                   help="auto (float16 on a GPU as released, float32 on CPU) | float32 | float16 | bfloat16")
    p.add_argument("--precision", choices=PRECISIONS, default="default", help=PRECISION_HELP)
    p.add_argument("--max-batch", type=int, default=8, help="requests Triton hands a model at once (default 8)")
    p.add_argument("--decode-instances", type=int, default=1,
                   help="instances of the decode step (pyav: more only pay with spare CPU cores; dali: per GPU)")
    p.add_argument("--vision-instances", type=int, default=1,
                   help="instances of the vision step (SigLIP + projector; on a gpu target per GPU, each with its own "
                        "copy of the tower)")
    p.add_argument("--grounding-instances", type=int, default=1,
                   help="instances of the grounding step (the LLM; on a gpu target per GPU, each with its own copy)")
    p.add_argument("--media-root", action="append", default=[], metavar="DIR",
                   help="a directory under which a request may name its video by path (VIDEO_URI) instead of sending "
                        "its bytes; repeatable; none by default (references refused). Long videos: docs/limits.md")
    p.add_argument("--stream-frames", type=int, default=64,
                   help="bls: the decode step streams a video's frames to the vision step "
                        "in chunks of this many, so the tower encodes while the rest decode (default 64; 0: one "
                        "answer with every frame)")


def add_limit_arguments(p: argparse.ArgumentParser) -> None:
    """`--max-video-bytes`, `--max-instruction-tokens`, `--max-in-flight`, ...: written into the repository's model
    parameters (docs/limits.md; default: $VIDEOITG_<NAME>, else the built-in value)."""
    from videoitg.request.limit_names import add_arguments as add_limits

    add_limits(p)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="repo_command", required=True)
    b = sub.add_parser("build", help="generate the repository", description=HELP)
    b.add_argument("--target", choices=["cpu", "gpu"], default="cpu",
                   help="cpu: every step on the CPU; gpu: vision and grounding on the GPU, tensors between them on "
                        "the device")
    b.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the embedded tiny one)")
    b.add_argument("--vision-tower", default=None,
                   help="local SigLIP directory, if the checkpoint does not embed one or name a local one")
    b.add_argument("--engines", default=None, help="engine directory from `videoitg build` (optional)")
    b.add_argument("--out", required=True, type=Path, help="repository directory to write")
    b.add_argument("--no-bundle", action="store_true",
                   help="name the checkpoint, tower and engines by absolute path instead of copying them into the "
                        "repository (copies are hard links where the filesystem allows)")
    b.add_argument("--skip-runtime-check", action="store_true",
                   help="write the repository even where the engines' runtimes (or the dali decoder) cannot run on "
                        "this machine (a repository for another machine); `videoitg serve` checks again where it runs")
    add_deployment_arguments(b)
    add_sampling_arguments(b)
    add_limit_arguments(b)


def spec_from_args(args: argparse.Namespace, target: str):
    from videoitg.paths import MediaRoots
    from videoitg.repository.generator import DEFAULT_CHECKPOINT, RepoSpec
    from videoitg.request.limits import Limits, served_defaults

    return RepoSpec(
        target=target,
        mode=args.mode,
        decoder=args.decoder,
        ranking_rule=args.ranking_rule,
        default_top_k=args.top_k,
        dtype="" if args.dtype == "auto" else args.dtype,
        precision=args.precision,
        max_batch=args.max_batch,
        decode_instances=args.decode_instances,
        vision_instances=args.vision_instances,
        grounding_instances=args.grounding_instances,
        stream_frames=args.stream_frames,
        checkpoint=str(Path(args.checkpoint).resolve()) if args.checkpoint else DEFAULT_CHECKPOINT,
        vision_tower=str(Path(args.vision_tower).resolve()) if args.vision_tower else "",
        engines=str(Path(args.engines).resolve()) if args.engines else "",
        sampling=SamplingParams(args.num_frames, args.target_fps, args.sampling_rule),
        cache_bytes=args.cache_bytes,
        limits=Limits.from_args(args, base=served_defaults()),  # flags > $VIDEOITG_* > served defaults
        media_roots=MediaRoots.of(args.media_root).roots,
    )


def check_runtimes_for(spec: RepoSpec) -> None:
    """The runtime each step will serve with (`build.json`, `step_runtimes`) can run here: its library installed,
    importable and at the version that built the engine, a plan's GPU this one (`videoitg.engines.preflight`);
    refused in one line before a server starts or a repository is written."""
    if not spec.engines:
        return
    from videoitg.engines.preflight import check_runtimes
    from videoitg.repository.generator import step_runtimes

    check_runtimes(spec.engines, step_runtimes(spec.engines, spec.target))


def check_decoder_for(spec: RepoSpec) -> None:
    """The dali decoder on a gpu target decodes the package's H.264 clip on NVDEC and matches PyAV before a server
    starts (`videoitg.decode.selftest.self_test_in_child`); refused in one line naming `--decoder pyav` otherwise."""
    if spec.decoder != "dali" or spec.target != "gpu":
        return
    from videoitg.decode.selftest import self_test_in_child

    self_test_in_child("mixed")  # in a child process, bounded in time


def run(args: argparse.Namespace) -> int:
    from videoitg.repository.generator import DEFAULT_CHECKPOINT, build_repository, step_runtimes

    spec = spec_from_args(args, args.target)
    if not args.skip_runtime_check:
        check_runtimes_for(spec)
        if spec.decoder == "dali" and spec.target == "gpu":
            import torch

            if torch.cuda.is_available():  # NVDEC checked where there is a GPU; the step checks again when it loads
                check_decoder_for(spec)
    out = build_repository(spec, args.out, bundle=not args.no_bundle)
    runtimes = ", ".join(f"{k} {v}" for k, v in step_runtimes(spec.engines, spec.target).items())
    if spec.checkpoint == DEFAULT_CHECKPOINT:
        held = "the embedded default checkpoint"
    else:
        held = f"checkpoint {spec.checkpoint}, " + ("named by absolute path" if args.no_bundle else "copied into it")
    print(f"wrote {spec.target} {spec.mode} repository to {out} ({held}; runtimes: {runtimes})")
    return 0
