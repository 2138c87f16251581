"""Memory of the real tritonserver (and its python stubs) before, during and after large and hostile requests.

    python -m benchmarks.serving.bench_server_memory upload:48 upload:256 gzip:1 [--max-video-bytes 64M]
                                                     [--json out.json]

One server on the CPU repository of the embedded tiny checkpoint. Each step is `upload:MIB` (the sample video
padded to MIB MiB with an MP4 `free` box: a valid video, sent over HTTP) or `gzip:GIB` (an HTTP infer request
whose `Content-Encoding: gzip` body expands to GIB GiB of JSON whitespace). Sampled every 0.1 s: anonymous RSS and
shared RSS of the server and its stubs, and the `/dev/shm` bytes of its python-backend regions; "after" is read
2 s after the request ends.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from videoitg.client.kserve import VideoITGClient
from videoitg.launch.server import TritonServer
from videoitg.repository.generator import RepoSpec, build_repository
from videoitg.request.limits import Limits, served_defaults
from videoitg.synthetic.sample import sample_video


def processes(srv: TritonServer) -> list[int]:
    """tritonserver, its stubs and the front (which holds each request body while it checks it)."""
    out = [srv.pid, srv.front_pid]
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == srv.pid:
                out.append(int(p.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def memory(srv: TritonServer) -> dict[str, int]:
    anon = shared = 0
    for pid in processes(srv):
        try:
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        anon += int(status["RssAnon"].split()[0])
        shared += int(status["RssShmem"].split()[0])
    shm = sum(f.stat().st_blocks * 512 for f in Path("/dev/shm").glob(f"{srv.shm_prefix}*"))
    return {"anon_mb": anon // 1024, "rss_shared_mb": shared // 1024, "dev_shm_mb": shm >> 20}


def gzip_bomb(srv: TritonServer, gib: int) -> str:
    head = json.dumps({"inputs": [{"name": "VIDEO", "shape": [1, 1], "datatype": "BYTES", "data": ["x"]},
                                  {"name": "INSTRUCTION", "shape": [1, 1], "datatype": "BYTES", "data": ["hi"]}]})
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    body = z.compress(head[:-1].encode())
    chunk = b" " * (1 << 24)
    for _ in range(gib * 64):
        body += z.compress(chunk)
    body += z.compress(b"}") + z.flush()
    req = urllib.request.Request(f"http://{srv.http_url}/v2/models/videoitg/infer", data=body,
                                 headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return f"HTTP {r.status} ({len(body)} bytes sent)"
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code} {e.read()[:120]!r} ({len(body)} bytes sent)"


def upload(srv: TritonServer, mib: int) -> str:
    path, instruction = sample_video()
    data = path.read_bytes()
    pad = (mib << 20) - len(data)
    video = data + pad.to_bytes(4, "big") + b"free" + bytes(pad - 8)  # a top-level MP4 box players skip
    with VideoITGClient(srv.http_url, "http", timeout_s=600) as c:
        try:
            c.score(video, instruction)
            return f"served ({len(video)} bytes)"
        except Exception as e:  # a refusal is a result here
            return f"{type(e).__name__}: {str(e)[:160]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("steps", nargs="+", help="upload:MIB or gzip:GIB")
    ap.add_argument("--max-video-bytes", default=None, help="served limit (default: the served default, 64 MiB)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    limits = served_defaults()
    if args.max_video_bytes:
        limits = Limits.from_mapping({"MAX_VIDEO_BYTES": args.max_video_bytes}, limits)
    tmp = Path(tempfile.mkdtemp(prefix="videoitg-bench-mem-"))
    repo = build_repository(RepoSpec(target="cpu", limits=limits), tmp / "repo")
    rows = []
    with TritonServer(repo, log_path=tmp / "server.log") as srv:
        path, instruction = sample_video()
        with VideoITGClient(srv.http_url, "http") as c:
            c.score(path.read_bytes(), instruction)  # warm: every model has run once
        rows.append({"step": "idle", **memory(srv)})
        print(rows[-1], flush=True)
        for step in args.steps:
            kind, n = step.split(":")
            peak: dict[str, int] = {}
            done = threading.Event()

            def sample(peak: dict[str, int] = peak, done: threading.Event = done) -> None:
                while not done.is_set():
                    for k, v in memory(srv).items():
                        peak[k] = max(peak.get(k, 0), v)
                    time.sleep(0.1)

            th = threading.Thread(target=sample)
            th.start()
            t0 = time.monotonic()
            outcome = gzip_bomb(srv, int(n)) if kind == "gzip" else upload(srv, int(n))
            seconds = time.monotonic() - t0
            done.set()
            th.join()
            time.sleep(2)
            after = memory(srv)
            rows.append({"step": step, "outcome": outcome, "seconds": round(seconds, 1),
                         **{f"peak_{k}": v for k, v in peak.items()}, **{f"after_{k}": v for k, v in after.items()}})
            print(rows[-1], flush=True)
        prefix = srv.shm_prefix
    left = sorted(f.name for f in Path("/dev/shm").glob(f"{prefix}*"))
    rows.append({"step": "stopped", "dev_shm_regions_left": len(left)})
    print(rows[-1])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
