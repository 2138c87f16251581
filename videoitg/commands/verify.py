"""`videoitg verify --checkpoint DIR --engines ENGINES`: every backend available here vs the PyTorch fp32
reference on the same inputs: max |logit difference|, top-32 overlap, Spearman; exit 1 if one misses its target."""

from __future__ import annotations

import argparse

# Imports that need torch, the pipeline or an optional extra sit inside the functions that use them: `videoitg --help`
# answers without them (videoitg/commands/cli.py).

HELP = "compare every available backend (torch, onnxruntime, tensorrt, trtllm) with the PyTorch reference"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="checkpoint directory (default: the embedded tiny checkpoint)")
    p.add_argument("--engines", help="engines directory written by `videoitg build`")
    p.add_argument(
        "--frames", default="8,40,64,512", help="comma list of frame counts T to check (tokens per frame change with T)"
    )
    p.add_argument("--instruction", default=None, help="instruction text (default: a fixed sample)")
    p.add_argument("--instruction-tokens", type=int, default=None,
                   help="the instruction's tokens repeated or cut to this many (default: 30, a typical instruction, "
                        "so T = 512 is a 512-frame request's real sequence length; 0: as the text encodes)")
    p.add_argument(
        "--backends",
        default=None,
        help="comma list among torch-bf16, torch-fp16, torch-fp8 (--precision fp8: check it on your checkpoint "
             "before serving with it), onnxruntime, tensorrt, trtllm, trtllm-bf16, trtllm-unfused-rope",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    p.add_argument("--json", help="also write the results here")


def run(args: argparse.Namespace) -> int:
    from videoitg.defaults import default_checkpoint
    from videoitg.engine_build.verify import (
        DEFAULT_INSTRUCTION,
        DEFAULT_INSTRUCTION_TOKENS,
        format_table,
        verify,
        write_json,
    )
    from videoitg.errors import InputError

    try:
        frames = [int(x) for x in args.frames.split(",") if x.strip()]
    except ValueError as e:
        raise InputError(f"--frames must be a comma list of integers, got {args.frames!r}") from e
    if not frames or min(frames) < 1:
        raise InputError(f"--frames needs positive frame counts, got {args.frames!r}")
    if args.instruction_tokens is not None and args.instruction_tokens < 0:
        raise InputError(f"--instruction-tokens needs a count of 0 or more, got {args.instruction_tokens}")
    backends = [b.strip() for b in args.backends.split(",")] if args.backends else None
    results = verify(
        args.checkpoint or default_checkpoint(),
        args.engines,
        frames,
        args.instruction or DEFAULT_INSTRUCTION,
        args.seed,
        backends,
        args.threads,
        DEFAULT_INSTRUCTION_TOKENS if args.instruction_tokens is None else args.instruction_tokens or None,
    )
    print(format_table(results, frames))
    if args.json:
        write_json(results, args.json)
    ran = [r for r in results if r.status in ("pass", "fail")]
    if not ran:
        print("no backend could run here")
        return 1
    return 1 if any(r.status == "fail" for r in ran) else 0
