"""`videoitg score VIDEO --instruction TEXT`: score one video in-process and print the top-K frames."""

from __future__ import annotations

import argparse
from pathlib import Path

from videoitg.outputs import GroundingResult, write_results_jsonl
from videoitg.sampling import SamplingParams

HELP = "score one video for an instruction (in-process) and print the top-K frames"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file")
    p.add_argument("--instruction", "-i", required=True)
    p.add_argument("--checkpoint", help="checkpoint directory (default: the embedded tiny checkpoint)")
    p.add_argument("--vision-tower", help="local SigLIP directory, if the checkpoint does not embed one")
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    p.add_argument("--num-frames", type=int, default=512, help="at most this many sampled frames")
    p.add_argument("--target-fps", type=float, default=1.0)
    p.add_argument("--sampling", choices=["eval", "train"], default="eval")
    p.add_argument("--decoder", default="auto", help="auto | pyav | dali")
    p.add_argument("--doc-id", default=None)
    p.add_argument("--output", help="append the result to this results.jsonl")
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


def _doc_id_int(doc_id: str | None) -> int | None:
    try:
        return int(doc_id) if doc_id is not None else None
    except ValueError:
        return None  # the server's DOC_ID is an integer; the record keeps the string as given


def run_remote(args: argparse.Namespace) -> int:
    """Score through a running server; the record and plot are built exactly as in-process."""
    from videoitg.serving.routing import ServerPool

    with ServerPool(args.server, args.protocol, backoff_s=()) as pool:  # no waiting: each server is tried once
        served, url = pool.infer(Path(args.video), args.instruction, top_k=args.top_k, doc_id=_doc_id_int(args.doc_id))
    result = served.result
    print(f"server: {url} ({args.protocol})")

    def thumbnails_pixels():
        from videoitg.decode import decode_video

        # Thumbnails only: decode the same sampled frames locally at a small size.
        return decode_video(args.video, image_size=160,
                            params=SamplingParams(args.num_frames, args.target_fps, args.sampling)).pixel_values

    return report(args, result, thumbnails_pixels)


def report(args: argparse.Namespace, result: GroundingResult, thumbnail_pixels) -> int:
    """Print the top-K, append the results.jsonl record, draw the timeline: the same for both paths."""
    print_result(result, args.top_k)
    if args.output:
        write_results_jsonl(args.output, [result.to_record(args.doc_id, args.video, top_k=args.top_k)])
        print(f"appended to {args.output}")
    if args.plot:
        from videoitg.plot import plot_timeline, thumbnails_from_pixels

        png = plot_timeline(result, Path(args.plot), args.top_k, thumbnails_from_pixels(thumbnail_pixels()))
        print(f"plot: {png}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.server:
        return run_remote(args)
    from videoitg.defaults import default_checkpoint
    from videoitg.pipeline import Scorer

    sampling = SamplingParams(args.num_frames, args.target_fps, args.sampling)
    scorer = Scorer(args.checkpoint or default_checkpoint(), device=args.device, dtype=args.dtype,
                    sampling=sampling, decoder=args.decoder, vision_tower=args.vision_tower)
    ids = scorer.encode(args.instruction)  # a bad instruction is refused before the decode
    frames = scorer.load_video(args.video)
    result = scorer.score_visual([(scorer.video_features(frames), args.instruction)], video=args.video, ids=[ids])[0]
    print(f"decoder: {frames.decoder}")
    return report(args, result, lambda: frames.pixel_values)
