"""How long the answer endpoint's event loop waits while a large request is parsed in worker threads.

    python -m benchmarks.answer.answer_parse [--video-mb 42] [--reps 5]

A chat request holding a video of `--video-mb` MB (random bytes) as a data URL, arriving in 256 KiB chunks gathered
in one buffer, goes through the endpoint's three steps that touch its bytes, each in a worker thread: the body read
into JSON (`answer.load_body`), its video decoded (`answer.video_source(...).decode()`) and the grounding request's
body built (`client.http_request_body`: the video one of its pieces, not copied; the endpoint builds it on the
loop). Meanwhile a coroutine asks to wake every millisecond; the longest it waited past that is the loop's longest
wait (each step's C code holds the GIL). Prints, for each step, the median over `--reps` of its wall time and of the
loop's longest wait.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from videoitg.answer.chat import load_body, parse_chat, video_source
from videoitg.client.kserve import http_request_body
from videoitg.request.options import RequestOptions

CHUNK = 256 << 10  # the front's read buffer (front/http.py READ_BUFSIZE)


async def loop_wait(step: Callable[[], Any]) -> tuple[float, float, Any]:
    """(the step's wall time, the loop's longest wait past a 1 ms sleep while it ran in a thread, its result)."""
    longest, done = 0.0, False

    async def tick() -> None:
        nonlocal longest
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            longest = max(longest, time.perf_counter() - t - 0.001)

    ticker = asyncio.ensure_future(tick())
    t0 = time.perf_counter()
    result = await asyncio.to_thread(step)
    wall = time.perf_counter() - t0
    done = True
    await ticker
    return wall, longest, result


async def one(body: bytes) -> dict[str, tuple[float, float]]:
    gathered = bytearray()  # as the endpoint gathers a body: its chunks copied into one buffer as they arrive
    for i in range(0, len(body), CHUNK):
        gathered += body[i:i + CHUNK]
    chunks = [gathered]
    del gathered
    out: dict[str, tuple[float, float]] = {}
    *out["load_body"], value = await loop_wait(lambda: load_body(chunks))
    q = parse_chat(value)
    *out["video_source"], video = await loop_wait(lambda: video_source(q.video_url, None).decode())
    options = RequestOptions(top_k=32, frames="jpeg", frame_size=448)
    *out["http_request_body"], _ = await loop_wait(lambda: http_request_body(video, q.question, options))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--video-mb", type=float, default=42.0)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    video = os.urandom(int(args.video_mb * 1e6))
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "data:video/mp4;base64," + base64.b64encode(video).decode()}},
        {"type": "text", "text": "When does the dog jump?"}]}]}).encode()
    runs = [asyncio.run(one(body)) for _ in range(args.reps)]
    print(f"video {len(video) / 1e6:.1f} MB, body {len(body) / 2**20:.1f} MiB in {CHUNK >> 10} KiB chunks, "
          f"medians of {args.reps}:")
    print("| step | wall (ms) | loop's longest wait (ms) |\n|---|---|---|")
    for step in runs[0]:
        wall = statistics.median(r[step][0] for r in runs) * 1e3
        wait = statistics.median(r[step][1] for r in runs) * 1e3
        print(f"| {step} | {wall:.0f} | {wait:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
