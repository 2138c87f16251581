"""`videoitg synth`: write a synthetic grounding dataset (VideoITG-40K layout) or the fixed demo clip."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Imports that need torch, the pipeline or an optional extra sit inside the functions that use them: `videoitg --help`
# answers without them (videoitg/commands/cli.py).

HELP = "generate synthetic shape videos with grounding instructions and exact labels"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from videoitg.synthetic.task import CODECS, INSTRUCTION_KINDS  # numpy + PyAV: only when this command runs

    parser.add_argument("out", type=Path, help="output folder (dataset) or file (with --sample)")
    parser.add_argument("--videos", type=int, default=100, help="number of videos (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed; same seed, same data (default 0)")
    parser.add_argument("--codec", choices=sorted(CODECS), default="h264", help="h264 (.mp4) or vp9 (.webm)")
    parser.add_argument("--per-video", type=int, default=6, help="instructions per video (default 6)")
    parser.add_argument(
        "--kinds", default=",".join(INSTRUCTION_KINDS),
        help=f"comma-separated instruction kinds (default all: {','.join(INSTRUCTION_KINDS)})",
    )
    parser.add_argument("--fps", type=int, default=4, help="frames per second of the clips (default 4)")
    parser.add_argument("--size", type=int, default=128, help="frame width = height in pixels (default 128)")
    parser.add_argument("--annotation", default="annotations.json", help="annotation file name")
    parser.add_argument("--sample", action="store_true", help="write only the fixed demo clip to OUT")


def run(args: argparse.Namespace) -> int:
    from videoitg.synthetic.task import make_sample_video, write_dataset

    if args.sample:
        info = make_sample_video(args.out)
        info.pop("scene")
        info.pop("labels")
        print(json.dumps(info))
        return 0
    ann = write_dataset(
        args.out, args.videos, seed=args.seed, codec=args.codec, instructions_per_video=args.per_video,
        kinds=[k for k in args.kinds.split(",") if k], annotation_name=args.annotation, progress=True,
        fps=args.fps, width=args.size, height=args.size,
    )
    n = len(json.loads(ann.read_text()))
    print(f"wrote {n} instructions over {args.videos} videos: {ann} (videos in {args.out / 'videos'})")
    return 0
