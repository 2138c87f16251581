"""`videoitg demo`: the main job on the embedded default (tiny checkpoint + generated sample video), through a
real Triton server: generate the model repository, start tritonserver on free loopback ports, score the sample
video over gRPC, print the picked frames with timestamps, write results.jsonl and the score-timeline PNG, stop the
server. `--in-process` skips the server (same numbers, see tests/client/test_kserve.py)."""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from videoitg.outputs import DEFAULT_TOP_K, write_results_jsonl
from videoitg.request.options import SELECTION, RequestOptions, add_flags, from_args, select
from videoitg.sampling import SamplingParams

# Imports that need torch, the pipeline or an optional extra sit inside the functions that use them: `videoitg --help`
# answers without them (videoitg/commands/cli.py).

HELP = ("score the built-in sample video with the embedded tiny checkpoint through a real Triton server; "
        "print the picked frames, write results.jsonl and a timeline PNG")
# The sample clip has only 24 sampled frames: the default top_k (`score`'s, the server's) would pick all of them.
DEMO_TOP_K = 8


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flags(p, SELECTION, {"top_k": f"{DEMO_TOP_K}: the sample clip has only 24 sampled frames, and `score`'s "
                             f"and the server's default of {DEFAULT_TOP_K} would pick all of them"})
    p.add_argument("--out", default="artifacts/demo", help="folder for results.jsonl and timeline.png")
    p.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    p.add_argument("--server", default=None, help="use this running server (HOST:PORT) instead of starting one")
    p.add_argument("--in-process", action="store_true", help="score in this process, without a server")


def _score_served(args: argparse.Namespace, ckpt: Path, video: Path, instruction: str, options: RequestOptions):
    from videoitg.client.kserve import VideoITGClient

    if args.server:
        with VideoITGClient(args.server, args.protocol) as c:
            return c.score(video, instruction, options)

    from videoitg.launch.server import TritonServer
    from videoitg.repository.generator import RepoSpec, build_repository

    with tempfile.TemporaryDirectory(prefix="videoitg-demo-") as tmp:
        repo = build_repository(RepoSpec(target="cpu", checkpoint=str(ckpt)), Path(tmp) / "repo")
        server = TritonServer(repo, log_path=Path(tmp) / "tritonserver.log")
        print(f"starting tritonserver ({server.install.kind}) on 127.0.0.1 ...", flush=True)
        t0 = time.perf_counter()
        with server:
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
            print(f"ready in {time.perf_counter() - t0:.1f} s: {args.protocol} {url}, metrics {server.metrics_url}")
            with VideoITGClient(url, args.protocol) as c:
                t0 = time.perf_counter()
                served = c.infer(video, instruction, options)
                print(f"served in {1e3 * (time.perf_counter() - t0):.0f} ms (cache hit: {served.cache_hit})")
        print("tritonserver stopped")
        return served.result


def run(args: argparse.Namespace) -> int:
    from videoitg.commands.plot import display_aspect, plot_timeline, thumbnails_from_pixels
    from videoitg.commands.score import print_result
    from videoitg.decode import decode_video
    from videoitg.defaults import default_checkpoint
    from videoitg.model.files import load_config
    from videoitg.synthetic.sample import sample_video, sample_video_meta
    options = from_args(args, SELECTION)
    options = options if options.top_k is not None else replace(options, top_k=DEMO_TOP_K)
    ckpt = default_checkpoint()
    video, instruction = sample_video()
    print(f"checkpoint: {ckpt}\nvideo: {video}\ninstruction: {instruction!r}")
    if args.in_process:
        from videoitg.pipeline.scorer import Scorer

        scorer = Scorer(ckpt)
        frames = scorer.load_video(video)
        result = scorer.score_visual([(scorer.video_features(frames), instruction)], video=str(video),
                                     options=options)[0]
    else:
        result = _score_served(args, ckpt, video, instruction, options)
        result.video = str(video)
        # Thumbnails for the plot: the same sampled frames, decoded here (the server returns scores, not pixels).
        cfg, _ = load_config(ckpt)
        frames = decode_video(video, image_size=cfg.vision.image_size, params=SamplingParams())
    picked = select(result, options)
    print_result(result, picked)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_results_jsonl(out / "results.jsonl", [result.to_record(0, str(video), picked=picked)], append=False)
    thumbs = thumbnails_from_pixels(frames.pixel_values, display_aspect(frames.info))
    png = plot_timeline(result, out / "timeline.png", picked, thumbs,
                        truth_segments=sample_video_meta().get("segments"))
    print(f"wrote {out / 'results.jsonl'} and {png}")
    return 0
