"""`videoitg score VIDEO --instruction TEXT`: score one video in-process and print the top-K frames."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from videoitg.errors import InputError
from videoitg.outputs import (
    DEFAULT_RANKING_RULE,
    RANKING_RULES,
    GroundingResult,
    doc_id_problems,
    write_results_jsonl,
)
from videoitg.sampling import SamplingParams

HELP = "score one video for an instruction (in-process) and print the top-K frames"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file (a local path; URLs are not fetched)")
    p.add_argument("--instruction", "-i", required=True)
    p.add_argument("--checkpoint", help="checkpoint directory (default: the embedded tiny checkpoint)")
    p.add_argument("--vision-tower", help="local SigLIP directory, if the checkpoint does not embed one")
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (float16 on a GPU as released, float32 on CPU) | float32 | "
                   "bfloat16 | float16")
    p.add_argument("--truncate-instruction", action="store_true",
                   help="cut an instruction over the model's length budget as the released model does (default: "
                   "refuse it; in-process only)")
    p.add_argument("--ranking-rule", choices=RANKING_RULES, default=None,
                   help="released (default: fp16 sigmoid, ties to the earlier frame, as the released code ranks) | "
                   "exact (by the fp32 logit); with --server the default is the server's")
    p.add_argument("--num-frames", type=int, default=512, help="at most this many sampled frames")
    p.add_argument("--target-fps", type=float, default=1.0)
    p.add_argument("--sampling", choices=["eval", "train"], default="eval")
    p.add_argument("--decoder", default="auto", help="auto | pyav | dali")
    p.add_argument("--doc-id", default=None, help="the lmms-eval task's doc_id, stored with the record")
    p.add_argument("--output", help="append the result to this results.jsonl (lmms-eval's frame_indices_jsonl)")
    p.add_argument("--plot", help="write a score-timeline PNG here")
    p.add_argument("--server", action="append", metavar="HOST:PORT",
                   help="a running `videoitg serve`: score there instead of in-process (checkpoint, device, dtype "
                   "and sampling are then the server's); repeat for several: the video's server by its digest, "
                   "the next one if it is down")
    p.add_argument("--protocol", choices=["grpc", "http"], default="grpc", help="with --server (default grpc)")


def print_result(result: GroundingResult, k: int) -> None:
    print(f"{len(result.logits)} sampled frames; top-{min(k, len(result.logits))} in chronological order:")
    print(f"  {'frame':>7} {'time (s)':>9} {'score':>7}")
    scores = result.scores
    for i in result.top_k_positions(k):
        print(f"  {result.frame_indices[i]:>7} {result.timestamps[i]:>9.2f} {scores[i]:>7.3f}")
    moments = result.moments
    print(f"moments (best first; rule: docs/moments.md):\n  {'start (s)':>9} {'end (s)':>9} {'score':>7}")
    for m in moments:
        print(f"  {m.start:>9.2f} {m.end:>9.2f} {m.score:>7.3f}")


def _doc_id_value(doc_id: str | None) -> int | str | None:
    """lmms-eval doc_ids are integers: keep "12" as 12 in the record, anything else as given."""
    try:
        return int(doc_id) if doc_id is not None else None
    except ValueError:
        return doc_id


def check_args(args: argparse.Namespace) -> None:
    """What can be refused before any model loads or request is sent."""
    from videoitg.paths import local_video

    if args.top_k < 1:
        raise InputError(f"--top-k must be >= 1, got {args.top_k} (the server refuses it the same way)")
    args.video = str(local_video(args.video))
    if not Path(args.video).is_file():
        raise InputError(f"video {args.video} does not exist or is not a file")


def run_remote(args: argparse.Namespace) -> int:
    """Score through a running server; the record and plot are built exactly as in-process."""
    from videoitg.serving.routing import ServerPool

    with ServerPool(args.server, args.protocol, backoff_s=()) as pool:  # no waiting: each server is tried once
        served, url = pool.infer(Path(args.video), args.instruction, top_k=args.top_k,
                                 ranking_rule=args.ranking_rule)
    result = served.result
    print(f"server: {url} ({args.protocol})")

    def thumbnail_frames():
        from videoitg.decode import decode_video

        # Thumbnails only: decode the same sampled frames locally at a small size.
        return decode_video(args.video, image_size=160,
                            params=SamplingParams(args.num_frames, args.target_fps, args.sampling))

    return report(args, result, thumbnail_frames)


def report(args: argparse.Namespace, result: GroundingResult, thumbnail_frames) -> int:
    """Print the top-K, append the results.jsonl record, draw the timeline: the same for both paths."""
    print_result(result, args.top_k)
    if args.output:
        rec = result.to_record(_doc_id_value(args.doc_id), args.video, top_k=args.top_k)
        for problem in doc_id_problems([rec], args.output):
            print(f"videoitg score: warning: {problem}", file=sys.stderr)
        write_results_jsonl(args.output, [rec])
        print(f"appended to {args.output}")
    if args.plot:
        from videoitg.plot import display_aspect, plot_timeline, thumbnails_from_pixels

        frames = thumbnail_frames()
        thumbs = thumbnails_from_pixels(frames.pixel_values, display_aspect(frames.info))
        png = plot_timeline(result, Path(args.plot), args.top_k, thumbs)
        print(f"plot: {png}")
    return 0


def run(args: argparse.Namespace) -> int:
    check_args(args)
    if args.server:
        return run_remote(args)
    from videoitg.defaults import default_checkpoint
    from videoitg.pipeline import Scorer

    sampling = SamplingParams(args.num_frames, args.target_fps, args.sampling)
    scorer = Scorer(args.checkpoint or default_checkpoint(), device=args.device, dtype=args.dtype,
                    sampling=sampling, decoder=args.decoder, vision_tower=args.vision_tower,
                    ranking_rule=args.ranking_rule or DEFAULT_RANKING_RULE, truncate=args.truncate_instruction)
    ids = scorer.encode(args.instruction)  # a bad instruction is refused before the decode
    frames = scorer.load_video(args.video)
    result = scorer.score_visual([(scorer.video_features(frames), args.instruction)], video=args.video, ids=[ids])[0]
    print(f"decoder: {frames.decoder}")
    return report(args, result, lambda: frames)
