"""`videoitg score VIDEO --instruction TEXT`: score one video, in-process or through a running server (`--server`),
print the picked frames and moments; optionally append the results.jsonl record, draw the timeline PNG and export
the picked frames as images."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from videoitg.decode.structs import SampledFrames

import argparse
import sys
from pathlib import Path

from videoitg.contract.access import access_from_args, add_client_flags
from videoitg.decoders import DECODERS
from videoitg.errors import InputError
from videoitg.outputs import DEFAULT_TOP_K, GroundingResult, doc_id_problems, write_results_jsonl
from videoitg.precision import PRECISION_HELP, PRECISIONS
from videoitg.request.options import SELECTION, add_flags, from_args, select
from videoitg.sampling import SamplingParams

# Imports that need torch, the pipeline or an optional extra sit inside the functions that use them: `videoitg --help`
# answers without them (videoitg/commands/cli.py).

HELP = ("score one video for an instruction, in-process or through a running server (--server), and print the "
        "picked frames and moments")
OPTIONS = (*SELECTION, "frame_size")  # the request's options as flags (videoitg.request.options)
SERVER_DEFAULT = {"top_k": f"the deployment's: {DEFAULT_TOP_K}, or with --server the server's --top-k",
                  "ranking_rule": "released, or with --server the server's --ranking-rule",
                  "frame_size": "with --export-frames, the video's own size"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file (a local path; URLs are not fetched)")
    p.add_argument("--instruction", "-i", required=True)
    p.add_argument("--checkpoint", help="checkpoint directory (default: the embedded tiny checkpoint)")
    p.add_argument("--vision-tower", help="local SigLIP directory, if the checkpoint does not embed one")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (float16 on a GPU as released, float32 on CPU) | float32 | "
                   "bfloat16 | float16")
    p.add_argument("--precision", choices=PRECISIONS, default="default", help=PRECISION_HELP)
    p.add_argument("--truncate-instruction", action="store_true",
                   help="cut an instruction over the model's length budget as the released model does (default: "
                   "refuse it; in-process only)")
    p.add_argument("--num-frames", type=int, default=512, help="at most this many sampled frames")
    p.add_argument("--target-fps", type=float, default=1.0)
    p.add_argument("--sampling", choices=["eval", "train"], default="eval")
    p.add_argument("--decoder", default="auto", choices=DECODERS,
                   help="; ".join(f"{d.name}: {d.summary}" for d in DECODERS.values()) + " (default auto)")
    p.add_argument("--doc-id", default=None, help="the lmms-eval task's doc_id, stored with the record")
    p.add_argument("--output", help="append the result to this results.jsonl (lmms-eval's frame_indices_jsonl)")
    p.add_argument("--plot", help="write a score-timeline PNG here")
    p.add_argument("--export-frames", metavar="DIR",
                   help="write the picked frames to DIR as JPEG images (decoded from the video at its own size, or "
                   "--frame-size; with --server, by the server) with index.json: frame number, timestamp, score, "
                   "rank, in chronological order")
    add_flags(p, OPTIONS, SERVER_DEFAULT)
    p.add_argument("--server", action="append", metavar="HOST:PORT",
                   help="a running `videoitg serve`: score there instead of in-process (checkpoint, device, dtype "
                   "and sampling are then the server's); repeat for several: the video's server by its digest, "
                   "the next one if it is down")
    p.add_argument("--protocol", choices=["grpc", "http"], default="grpc", help="with --server (default grpc)")
    add_client_flags(p, "the --server")


def print_result(result: GroundingResult, picked: list[int],
                 moments: list[tuple[float, float, float]] | None = None) -> None:
    """`picked`: positions of the picked frames, chronological; `moments`: the server's, when it answered them; else
    the result's own (the same rule)."""
    print(f"{len(result.logits)} sampled frames; top-{len(picked)} in chronological order:")
    print(f"  {'frame':>7} {'time (s)':>9} {'score':>7}")
    scores = result.scores
    for i in picked:
        print(f"  {result.frame_indices[i]:>7} {result.timestamps[i]:>9.2f} {scores[i]:>7.3f}")
    print(f"moments (best first; rule: docs/moments.md):\n  {'start (s)':>9} {'end (s)':>9} {'score':>7}")
    for start, end, score in (moments if moments is not None else [tuple(m) for m in result.moments]):
        print(f"  {start:>9.2f} {end:>9.2f} {score:>7.3f}")


def _doc_id_value(doc_id: str | None) -> int | str | None:
    """lmms-eval doc_ids are integers: keep "12" as 12 in the record, anything else as given."""
    try:
        return int(doc_id) if doc_id is not None else None
    except ValueError:
        return doc_id


def check_args(args: argparse.Namespace) -> None:
    """What can be refused before any model loads or request is sent."""
    from videoitg.paths import local_video

    args.options = from_args(args, OPTIONS, {"frames": "--export-frames DIR"},
                             frames="jpeg" if args.export_frames else None)
    args.video = str(local_video(args.video))
    if not Path(args.video).is_file():
        raise InputError(f"video {args.video} does not exist or is not a file")
    if not args.server and (args.api_key_file or args.ca_file or args.tls):
        raise InputError("--api-key-file, --ca-file and --tls are a server's: give --server too")
    args.access = access_from_args(args) if args.server else None


def run_remote(args: argparse.Namespace) -> int:
    """Score through a running server; the record and plot are built exactly as in-process."""
    from videoitg.client.kserve import VideoITGClient
    from videoitg.client.routing import ServerPool
    from videoitg.defaults import served_demo_notice
    from videoitg.synthetic.sample import is_sample_video

    with ServerPool(args.server, args.protocol, backoff_s=(), access=args.access) as pool:  # each server tried once
        served, url = pool.infer(Path(args.video), args.instruction, args.options)
    result = served.result
    if served.cache_hit:
        hit = "yes: the server had the video's features, decode and vision were skipped" + (
            "; only the video's digest was sent" if not served.sent_video and not served.by_reference else "")
    else:
        hit = "no: the server decoded the video and ran the vision tower"
    sent = "; the video was named by its path (the server read it under its media root)" if served.by_reference else ""
    print(f"server: {url} ({args.protocol}); cache hit: {hit}{sent}")
    with VideoITGClient(url, args.protocol, access=args.access) as c:
        checkpoint = c.served_checkpoint()
    if checkpoint is not None and served_demo(checkpoint) and not is_sample_video(args.video):
        print(served_demo_notice(url), file=sys.stderr)
    picked = served.picked()  # what the server picked, under its defaults

    def thumbnail_frames():
        from videoitg.decode import decode_video

        # Thumbnails only: decode the same sampled frames locally at a small size.
        return decode_video(args.video, image_size=160,
                            params=SamplingParams(args.num_frames, args.target_fps, args.sampling))

    jpegs = None
    if served.frames is not None:  # the server's picked frames, decoded from the video there: paired by frame number
        jpegs = list(zip(picked, served.frames, strict=True))
    return report(args, result, picked, thumbnail_frames, [tuple(m) for m in served.moments], jpegs)


def served_demo(checkpoint: str) -> bool:
    """Whether a server's `checkpoint` parameter names the embedded tiny checkpoint."""
    from videoitg.defaults import is_demo_checkpoint
    from videoitg.repository.generator import DEFAULT_CHECKPOINT

    return checkpoint == DEFAULT_CHECKPOINT or is_demo_checkpoint(checkpoint)


def report(args: argparse.Namespace, result: GroundingResult, picked: list[int],
           thumbnail_frames: Callable[[], SampledFrames], moments: list[tuple[float, float, float]] | None = None,
           jpegs: list[tuple[int, bytes]] | None = None) -> int:
    """Print the picked frames (`picked`: positions, chronological), append the results.jsonl record, draw the
    timeline, export the frames: the same for both paths. `moments`: the server's, when it answered them; `jpegs`:
    the picked frames the server answered (position, JPEG), written instead of decoding them here."""
    print_result(result, picked, moments)
    if args.output:
        rec = result.to_record(_doc_id_value(args.doc_id), args.video, picked=picked)
        for problem in doc_id_problems([rec], args.output):
            print(f"videoitg score: warning: {problem}", file=sys.stderr)
        torn = write_results_jsonl(args.output, [rec])
        if torn:
            print(f"videoitg score: warning: {args.output} ended in a torn line ({torn} bytes, from an interrupted "
                  f"write): set aside in {args.output}.torn", file=sys.stderr)
        print(f"appended to {args.output}")
    if args.plot:
        from videoitg.commands.plot import display_aspect, plot_timeline, thumbnails_from_pixels

        frames = thumbnail_frames()
        thumbs = thumbnails_from_pixels(frames.pixel_values, display_aspect(frames.info))
        png = plot_timeline(result, Path(args.plot), picked, thumbs)
        print(f"plot: {png}")
    if args.export_frames:
        from videoitg.decode.export import INDEX, export_frames, write_frames

        size = args.options.frame_size or None
        entries = (export_frames(args.video, result, args.export_frames, picked, size) if jpegs is None
                   else write_frames(args.video, result, args.export_frames, jpegs, size))
        size_text = "the video's size" if size is None else f"longer side {size} px"
        print(f"exported {len(entries)} frames ({size_text}) to {args.export_frames}/, listed in "
              f"{Path(args.export_frames) / INDEX}")
    return 0


def run(args: argparse.Namespace) -> int:
    check_args(args)
    if args.server:
        return run_remote(args)
    from videoitg.defaults import default_checkpoint
    from videoitg.pipeline.scorer import Scorer

    sampling = SamplingParams(args.num_frames, args.target_fps, args.sampling)
    scorer = Scorer(args.checkpoint or default_checkpoint(), device=args.device, dtype=args.dtype,
                    precision=args.precision, sampling=sampling, decoder=args.decoder, vision_tower=args.vision_tower,
                    truncate=args.truncate_instruction)
    ids = scorer.encode(args.instruction)  # a bad instruction is refused before the decode
    frames = scorer.load_video(args.video)
    result = scorer.score_visual([(scorer.video_features(frames), args.instruction)], video=args.video, ids=[ids],
                                 options=args.options)[0]
    print(f"decoder: {frames.decoder}")
    return report(args, result, select(result, args.options), lambda: frames)
