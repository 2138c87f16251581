"""`videoitg answer VIDEO -q TEXT --upstream URL`: pick the frames for the question (in-process, or through a running
server with `--server`), send them to a video-LLM's OpenAI-compatible API, print its answer and the frames it was
given; `--plot` draws the timeline with those frames. The request is built and forwarded by the same policy as
the served endpoint (`videoitg.answer.chat`, docs/answer.md)."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

from videoitg.contract.access import access_from_args, add_client_flags
from videoitg.errors import InputError
from videoitg.outputs import DEFAULT_TOP_K, GroundingResult
from videoitg.request.options import CHAT, RequestOptions, add_flags, from_args, select

# Imports that need torch, the pipeline or an optional extra sit inside the functions that use them: `videoitg --help`
# answers without them (videoitg/commands/cli.py).

HELP = ("ask a video-LLM about a video from the frames VideoITG picks for the question (in-process or through a "
        "running server), print its answer and the frames it was given")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from videoitg.answer.chat import DEFAULT_FRAME_SIZE

    p.add_argument("video", help="video file (a local path; URLs are not fetched)")
    p.add_argument("--question", "-q", required=True, help="the question: also the instruction frames are picked by")
    p.add_argument("--upstream", required=True, metavar="URL",
                   help="base URL of the video-LLM's OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1 (vLLM, "
                   "SGLang, trtllm-serve, transformers serve)")
    p.add_argument("--model", help="the model name the upstream serves (default: the first it lists)")
    add_flags(p, CHAT, {"top_k": f"{DEFAULT_TOP_K}; with --server: the server's default",
                        "frame_size": f"{DEFAULT_FRAME_SIZE}, as the answer endpoint's"})
    p.add_argument("--max-tokens", type=int, default=None, help="max_tokens of the request (default: the upstream's)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="the upstream's answer bound in seconds (default 300)")
    p.add_argument("--server", metavar="HOST:PORT",
                   help="a running `videoitg serve`: pick the frames there (its checkpoint, sampling and decoder)")
    p.add_argument("--protocol", choices=["grpc", "http"], default="grpc", help="with --server (default grpc)")
    add_client_flags(p, "the --server")
    p.add_argument("--upstream-api-key-file", metavar="PATH",
                   help="the video-LLM's own API key: the first line of this file, sent as `Authorization: Bearer`")
    p.add_argument("--checkpoint", help="in-process: checkpoint directory (default: the embedded tiny checkpoint)")
    p.add_argument("--vision-tower", help="in-process: local SigLIP directory, if the checkpoint embeds none")
    p.add_argument("--device", default="cpu", help="in-process: cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", help="in-process: auto | float32 | bfloat16 | float16")
    p.add_argument("--plot", help="write the score timeline with the frames sent to the video-LLM to this PNG")
    p.add_argument("--json", action="store_true", help="print the upstream's whole answer (with the `videoitg` "
                   "field) as JSON instead of the summary")


def chat_body(video: Path, question: str, model: str, options: dict[str, Any], max_tokens: int | None
              ) -> dict[str, Any]:
    """The request a client of the served endpoint sends for this video and question, `options` its `videoitg`
    object (the options given: the endpoint's defaults for the rest)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": video.as_uri()}},
                                                  {"type": "text", "text": question}]}],
        "videoitg": options,
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def select_here(args: argparse.Namespace, question: str, options: RequestOptions) -> tuple[GroundingResult, Any]:
    """The frames picked in-process (the same Scorer and JPEG export as `videoitg score --export-frames`)."""
    from videoitg.answer.chat import selection_of
    from videoitg.decode.export import picked_images
    from videoitg.defaults import default_checkpoint
    from videoitg.pipeline.scorer import Scorer

    scorer = Scorer(args.checkpoint or default_checkpoint(), device=args.device, dtype=args.dtype,
                    vision_tower=args.vision_tower)
    t0 = time.perf_counter()
    result = scorer.score(args.video, question, options)
    images = picked_images(args.video, result, select(result, options), options.frame_size or None, jpeg=True)
    frames = [result.frame_indices[pos] for pos, _ in images]
    return result, selection_of(result, frames, [j for _, j in images], [tuple(m) for m in result.moments],
                                time.perf_counter() - t0)


def select_remote(args: argparse.Namespace, question: str, options: RequestOptions) -> tuple[GroundingResult, Any]:
    """The frames picked by a running server, decoded and encoded there (FRAMES=jpeg)."""
    from videoitg.answer.chat import selection_of
    from videoitg.client.kserve import VideoITGClient

    t0 = time.perf_counter()
    with VideoITGClient(args.server, args.protocol, access=args.access) as c:
        served = c.infer(args.video, question, options)
    return served.result, selection_of(served.result, served.top_k_frames, served.frames, served.moments,
                                       time.perf_counter() - t0)


async def ask(upstream_url: str, q: Any, selection: Any, timeout_s: float, model_given: bool,
              key_file: str | None = None) -> dict[str, Any]:
    from videoitg.answer.chat import forwarded_bytes
    from videoitg.answer.videollm import ChatUpstream

    up = ChatUpstream(upstream_url, timeout_s=timeout_s, key_file=key_file)
    try:
        model = None if model_given else await up.first_model()
        return await up.complete(forwarded_bytes(q, selection, model), selection)
    finally:
        await up.close()


def plot(result: GroundingResult, selection: Any, out: str) -> Path:
    """The timeline with the frames sent as its thumbnails."""
    import numpy as np
    from PIL import Image

    from videoitg.commands.plot import plot_timeline

    picked = result.positions(selection.frames)
    thumbs = {}
    for p, jpeg in zip(picked, selection.jpegs, strict=True):
        with Image.open(io.BytesIO(jpeg)) as im:
            im.thumbnail((240, 240))
            thumbs[p] = np.asarray(im.convert("RGB"))
    return plot_timeline(result, Path(out), picked, thumbs)


def run(args: argparse.Namespace) -> int:
    from videoitg.answer.chat import parse_chat
    from videoitg.answer.videollm import check_base_url
    from videoitg.paths import local_video

    video = Path(str(local_video(args.video))).resolve()
    if not video.is_file():
        raise InputError(f"video {args.video} does not exist or is not a file")
    args.video = str(video)
    check_base_url(args.upstream)
    if not args.server and (args.api_key_file or args.ca_file or args.tls):
        raise InputError("--api-key-file, --ca-file and --tls are the grounding server's: give --server too "
                         "(the video-LLM's key: --upstream-api-key-file)")
    args.access = access_from_args(args) if args.server else None
    if args.upstream_api_key_file is not None:
        from videoitg.answer.videollm import ChatUpstream

        ChatUpstream(args.upstream, key_file=args.upstream_api_key_file)  # read now: a file that fails is named
    # Each bound checked here, naming its flag; the frames are always JPEG (what the endpoint sends upstream).
    given = {n: v for n, v in from_args(args, CHAT, frames="jpeg").given().items() if n in CHAT}
    body = chat_body(video, args.question, args.model or "", given, args.max_tokens)
    q = parse_chat(body)  # the endpoint's checks: the question and the options (--top-k, --frame-size, ...)
    if args.server:
        result, selection = select_remote(args, q.question, q.options)
    else:
        result, selection = select_here(args, q.question, q.options)
    answer = asyncio.run(ask(args.upstream, q, selection, args.timeout, args.model is not None,
                             args.upstream_api_key_file))
    if args.json:
        json.dump(answer, sys.stdout, indent=1)
        print()
    else:
        print_answer(answer, selection, "server " + args.server if args.server else "in-process")
    if args.plot:
        print(f"plot: {plot(result, selection, args.plot)}")
    return 0


def print_answer(answer: dict[str, Any], selection: Any, where: str) -> None:
    choices = answer.get("choices") or [{}]
    message = choices[0].get("message") or {}
    usage = answer.get("usage") or {}
    tokens = f"; prompt tokens: {usage['prompt_tokens']}" if "prompt_tokens" in usage else ""
    print(f"answer ({answer.get('model', '?')}{tokens}):\n{message.get('content')}")
    print(f"frames sent ({len(selection.frames)}, chronological; picked {where} in {selection.select_s:.2f} s):")
    print(f"  {'frame':>7} {'time (s)':>9} {'score':>7}")
    for n, t, s in zip(selection.frames, selection.timestamps, selection.scores, strict=True):
        print(f"  {n:>7} {t:>9.2f} {s:>7.3f}")
