"""The answer endpoint's peak memory under large videos, against the front's held-bytes budget.

    python -m benchmarks.answer.answer_memory [--file-mb 500] [--data-mb 60] [--refused-mb 380] [--budget-mb 1024]
                                              [--video-bound-mib 64]

A real front process (`python -m videoitg.front`, as `videoitg serve` starts it) with the answer endpoint on,
in front of stand-ins for tritonserver (its model config names the media root; every inference is read and
answered with one frame, or refused) and for the video-LLM (answers at once): what is measured is the front alone.
Each case's peak is the front's peak resident memory (VmHWM, reset before the case through /proc/PID/clear_refs)
less its resident memory before it; "at rest" is its resident memory after the case less that before. Cases:
- `file`: two requests at once naming a `--file-mb` MB file under the media root by `file://` (sparse: the front
  never reads it; tritonserver would, by reference);
- `data`: a `--data-mb` MB video in a data URL (within the served video bound), then two at once;
- `data-refused-server`: three `--data-mb` MB videos in data URLs refused by tritonserver one after the other;
- `data-over-bound`: a video 1 MB over the served video bound (`--video-bound-mib`, the served default 64) in a data
  URL: read, parsed, refused from its length before it is decoded;
- `data-380`: a `--refused-mb` MB video in a data URL: over the endpoint's body bound (that video bound's data URL
  and 16 MiB), refused (413) from its Content-Length before it is read.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from tritonclient.utils import np_to_triton_dtype, serialize_byte_tensor

from videoitg.contract.parameters import MEDIA_ROOTS
from videoitg.contract.protocol import OTHER_INPUTS_BYTES, TOP
from videoitg.contract.tensors import frame_outputs, result_outputs
from videoitg.launch.ports import free_ports
from videoitg.launch.procfs import memory
from videoitg.outputs import GroundingResult
from videoitg.request.limits import SERVED_MAX_VIDEO_BYTES
from videoitg.request.options import RequestOptions

MB = 1_000_000
RESULT = GroundingResult([0.5, 2.0, -1.0], [0, 25, 50], [0.0, 1.0, 2.0], duration=3.0)


def inference_answer() -> tuple[bytes, int]:
    """A KServe v2 binary answer to the grounding request: the result and one JPEG frame."""
    outputs, data = [], []
    applied = RequestOptions(top_k=1, ranking_rule="released")
    for name, a in {**result_outputs(RESULT, applied), **frame_outputs([b"\xff\xd8 a frame"], "jpeg")}.items():
        datatype = np_to_triton_dtype(a.dtype)
        raw = serialize_byte_tensor(a).item() if datatype == "BYTES" else np.ascontiguousarray(a).tobytes()
        outputs.append({"name": name, "datatype": datatype, "shape": [1, *a.shape],
                        "parameters": {"binary_data_size": len(raw)}})
        data.append(raw)
    header = json.dumps({"model_name": TOP, "outputs": outputs}).encode()
    return header + b"".join(data), len(header)


class StandIns:
    """tritonserver's HTTP endpoint (`refuse`: answer every inference 400) and the video-LLM, on loopback."""

    def __init__(self, media: Path):
        self.media, self.refuse = media, False
        self.runners: list[web.AppRunner] = []

    async def triton(self, request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/config"):
            return web.json_response({"parameters": {MEDIA_ROOTS: {"string_value": json.dumps([str(self.media)])}}})
        async for _ in request.content.iter_chunked(1 << 20):
            pass
        if self.refuse:
            return web.json_response({"error": "VIDEO: refused"}, status=400)
        body, n = inference_answer()
        return web.Response(body=body, headers={"Inference-Header-Content-Length": str(n)})

    async def llm(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"id": "c", "choices": [{"message": {"role": "assistant", "content": "ok"}}]})

    async def start(self, handler: Callable[..., Any], port: int) -> None:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.runners.append(runner)


def post(port: int, body: bytes) -> int:
    """POST /v1/chat/completions from a plain socket (the bytes sent from where they lie); the answer's status."""
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=600) as sock:
        try:
            sock.sendall(head)
            sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError):  # refused before its body was read
            pass
        got = b""
        while piece := sock.recv(1 << 16):
            got += piece
    return int(got.split(b" ", 2)[1])


def chat(url: str) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "When does the dog jump?"}]}]}
        ).encode()


async def measure(pid: int, bodies: list[bytes], port: int, settle_s: float) -> dict[str, Any]:
    """The front's peak and at-rest memory over `bodies` sent at once, and their answers' statuses."""
    await asyncio.sleep(settle_s)  # the heap trimmed after the last case (process.trim_after_release)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = memory(pid)["VmRSS"]
    t0 = time.perf_counter()
    codes = await asyncio.gather(*(asyncio.to_thread(post, port, b) for b in bodies))
    wall = time.perf_counter() - t0
    peak = memory(pid)["VmHWM"]
    await asyncio.sleep(settle_s)
    return {"statuses": list(codes), "peak_mib": (peak - before) / 2**20,
            "at_rest_mib": (memory(pid)["VmRSS"] - before) / 2**20, "wall_s": wall}


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    media = work / "media"
    media.mkdir()
    long = media / "long.mp4"
    with open(long, "wb") as f:
        f.truncate(args.file_mb * MB)
    http, grpc, metrics, triton, llm = free_ports(5)
    stand = StandIns(media.resolve())
    await stand.start(stand.triton, triton)
    await stand.start(stand.llm, llm)
    budget = args.budget_mb << 20
    bound = args.video_bound_mib << 20  # the served model's max_video_bytes
    cfg = {"host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics,
           "triton_http": f"127.0.0.1:{triton}", "triton_grpc": "127.0.0.1:1", "triton_metrics": f"127.0.0.1:{triton}",
           "models": [TOP], "max_request_bytes": 8 * bound + OTHER_INPUTS_BYTES, "held_bytes": budget,  # as served
           "answer_upstream": f"http://127.0.0.1:{llm}/v1", "max_video_bytes": bound}
    results: dict[str, Any] = {"budget_mib": args.budget_mb}
    front = subprocess.Popen([sys.executable, "-m", "videoitg.front", json.dumps(cfg)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert front.stdout is not None and "videoitg front:" in front.stdout.readline()
        results["front_rss_mib"] = memory(front.pid)["VmRSS"] / 2**20
        file_body = chat(long.resolve().as_uri())
        results["file"] = await measure(front.pid, [file_body, file_body], http, args.settle_s)
        data = chat("data:video/mp4;base64," + base64.b64encode(os.urandom(args.data_mb * MB)).decode())
        results["data"] = await measure(front.pid, [data], http, args.settle_s)
        results["data-twice"] = await measure(front.pid, [data, data], http, args.settle_s)
        stand.refuse = True
        results["data-refused-server"] = await measure(front.pid, [data], http, args.settle_s)
        for _ in range(2):
            again = await measure(front.pid, [data], http, args.settle_s)
            results["data-refused-server"]["at_rest_mib"] = again["at_rest_mib"]
            results["data-refused-server"]["statuses"] += again["statuses"]
        del data
        over = chat("data:video/mp4;base64," + base64.b64encode(os.urandom(bound + MB)).decode())
        results["data-over-bound"] = await measure(front.pid, [over], http, args.settle_s)
        del over
        big = chat("data:video/mp4;base64," + base64.b64encode(os.urandom(args.refused_mb * MB)).decode())
        results["data-380"] = await measure(front.pid, [big], http, args.settle_s)
    finally:
        front.terminate()
        front.wait(30)
        for runner in stand.runners:
            await runner.cleanup()
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--file-mb", type=int, default=500)
    p.add_argument("--data-mb", type=int, default=60)
    p.add_argument("--refused-mb", type=int, default=380)
    p.add_argument("--budget-mb", type=int, default=1024)
    p.add_argument("--video-bound-mib", type=int, default=SERVED_MAX_VIDEO_BYTES >> 20)
    p.add_argument("--settle-s", type=float, default=1.5, help="wait before and after each case (the heap trim)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    print(f"front at start: {results['front_rss_mib']:.0f} MiB resident; held-bytes budget {args.budget_mb} MiB")
    print("| case | answers | peak over before (MiB) | at rest after (MiB) | wall (s) |\n|---|---|---|---|---|")
    for case in ("file", "data", "data-twice", "data-refused-server", "data-over-bound", "data-380"):
        r = results[case]
        print(f"| {case} | {' '.join(map(str, r['statuses']))} | {r['peak_mib']:.0f} | {r['at_rest_mib']:.0f} | "
              f"{r['wall_s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
