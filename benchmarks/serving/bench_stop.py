"""SIGINT to `videoitg serve --target cpu` (embedded default) with cold requests in flight, idle keep-alive
connections and clients that sent part of a body: how long until it exits (after the signal, and after the last
answer), and what each client got.

    python -m benchmarks.serving.bench_stop [--requests 8] [--grpc 4] [--idle 2] [--partial 1] [--delay 0.3]
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.clips import write_rgb_clip
from videoitg.client.kserve import VideoITGClient
from videoitg.launch.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]


def moving_clip(path: Path, seed: int, frames: int = 900, w: int = 640, h: int = 360, gop: int | None = None) -> bytes:
    """A box moving over moving noise. PyAV decodes only the GOPs the sampled frames are in: with the encoder's
    default GOPs that is a small part of the clip. `gop`: frames from one keyframe to the next."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 64, (h, w, 3), dtype=np.uint8)
    colour = rng.integers(64, 255, 3).astype(np.uint8)

    def frame(i: int) -> np.ndarray:
        a = np.roll(noise, i * 5, axis=1)
        x = (i * 3 + seed * 7) % (w - 60)
        a[40:120, x:x + 60] = colour
        return a

    return write_rgb_clip(path, map(frame, range(frames)), codec="mpeg4", fps=30,
                          options={"g": str(gop)} if gop else None).read_bytes()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=8, help="cold requests, each on its own video")
    ap.add_argument("--grpc", type=int, default=4, help="how many of them go over gRPC (the rest over HTTP)")
    ap.add_argument("--idle", type=int, default=2, help="idle keep-alive HTTP connections held open")
    ap.add_argument("--partial", type=int, default=1,
                    help="HTTP clients that sent part of an inference body and then wait")
    ap.add_argument("--delay", type=float, default=0.3, help="seconds from sending the requests to SIGINT")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-stop-"))
    seed0 = time.time_ns() % 10_000  # distinct from any earlier run's videos
    videos = [moving_clip(tmp / f"v{i}.mp4", seed0 + i) for i in range(args.requests)]
    ports = free_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "videoitg", "serve", "--target", "cpu", "--http-port",
                             str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]),
                             "--log", str(tmp / "server.log")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    said = []
    while True:
        line = proc.stdout.readline()
        said.append(line)
        if line.startswith("ready:") or (not line and proc.poll() is not None):
            break
    if proc.poll() is not None:
        print("".join(said), file=sys.stderr)
        return 1
    idle = []
    for _ in range(args.idle):
        s = socket.create_connection(("127.0.0.1", ports[0]), timeout=60)
        s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(4096)
        idle.append(s)
    partial = []
    for _ in range(args.partial):
        s = socket.create_connection(("127.0.0.1", ports[0]), timeout=60)
        s.sendall(b"POST /v2/models/videoitg/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n{\"inputs\": [")
        partial.append(s)
    results: dict[int, tuple[str, float, str]] = {}
    n_http = args.requests - args.grpc

    def call(i: int) -> None:
        url, protocol = (f"127.0.0.1:{ports[0]}", "http") if i < n_http else (f"127.0.0.1:{ports[1]}", "grpc")
        try:
            with VideoITGClient(url, protocol=protocol, timeout_s=120) as c:
                r = c.infer(videos[i], f"when does box {i} move?")
            results[i] = (f"ok ({protocol})", time.monotonic(), f"{len(r.moments)} moments")
        except Exception as e:  # what a client got is the finding
            results[i] = (f"error ({protocol})", time.monotonic(), f"{type(e).__name__}: {str(e)[:160]}")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(args.requests)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    time.sleep(args.delay)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[0]
    exited = time.monotonic() - t0
    for t in threads:
        t.join(60)
    last = max((at for _, at, _ in results.values()), default=t0)
    print(f"serve exited {exited:.1f} s after SIGINT, {t0 + exited - last:.1f} s after the last answer "
          f"(code {proc.returncode})")
    for i in sorted(results):
        kind, at, what = results[i]
        print(f"  request {i}: {kind} at {at - t0:+.1f} s: {what}")
    for s in partial:
        s.settimeout(5)
        try:
            got = s.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace") or "closed, no answer"
        except OSError as e:
            got = f"{type(e).__name__}"
        print(f"  half-sent body: {got}")
        s.close()
    print(rest.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
