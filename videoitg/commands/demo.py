"""`videoitg demo`: the main job on the embedded default (tiny checkpoint + generated sample video)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "score the built-in sample video with the embedded tiny checkpoint; print top-K, write a timeline PNG"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--out", default="artifacts/demo", help="folder for results.jsonl and timeline.png")


def run(args: argparse.Namespace) -> int:
    from videoitg.commands.score import print_result
    from videoitg.defaults import default_checkpoint, sample_video, sample_video_meta
    from videoitg.outputs import write_results_jsonl
    from videoitg.pipeline import Scorer
    from videoitg.plot import plot_timeline, thumbnails_from_pixels

    ckpt = default_checkpoint()
    video, instruction = sample_video()
    print(f"checkpoint: {ckpt}\nvideo: {video}\ninstruction: {instruction!r}")
    scorer = Scorer(ckpt)
    frames = scorer.load_video(video)
    result = scorer.score_visual([(scorer.video_features(frames), instruction)], video=str(video))[0]
    print(f"decoder: {frames.decoder}")
    print_result(result, args.top_k)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_results_jsonl(out / "results.jsonl", [result.to_record(0, str(video), top_k=args.top_k)], append=False)
    png = plot_timeline(result, out / "timeline.png", args.top_k, thumbnails_from_pixels(frames.pixel_values),
                        truth_segments=sample_video_meta().get("segments"))
    print(f"wrote {out / 'results.jsonl'} and {png}")
    return 0
