"""What the front costs: the same requests through the public ports (the front) and straight to tritonserver's own
ports, interleaved in one run, on the CPU repository of the embedded tiny checkpoint.

    python benchmarks/bench_front.py [--reps 40] [--upload-mib 32] [--json out.json]

- `cached`: the sample video scored again (a feature-cache hit: the smallest full request), HTTP and gRPC.
- `upload`: `--upload-mib` MiB of fresh random bytes as VIDEO (refused as not a video after the server hashed and
  opened them): what moving a large body through one more process costs.
Reports p50 of each, the ratio front / direct, and the front's own CPU time per request (its process's, read
around each request through the front).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from videoitg.defaults import sample_video  # noqa: E402
from videoitg.serving.procfs import cpu_s  # noqa: E402
from videoitg.serving.protocol import TOP  # noqa: E402
from videoitg.serving.repository import RepoSpec, build_repository  # noqa: E402
from videoitg.serving.server import TritonServer  # noqa: E402


def request(client, mod, video: bytes, instruction: str) -> None:
    ins = []
    for name, value in (("VIDEO", video), ("INSTRUCTION", instruction.encode())):
        t = mod.InferInput(name, [1, 1], "BYTES")
        t.set_data_from_numpy(np.array([[value]], dtype=object))
        ins.append(t)
    try:
        client.infer(TOP, ins)
    except Exception as e:  # the upload case is refused by design
        if "NotAVideoError" not in str(e) and "NoVideoStreamError" not in str(e):
            raise


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--upload-mib", type=int, default=32)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import tritonclient.grpc as g
    import tritonclient.http as h

    path, instruction = sample_video()
    sample = path.read_bytes()
    tmp = Path(tempfile.mkdtemp(prefix="videoitg-bench-front-"))
    repo = build_repository(RepoSpec(target="cpu"), tmp / "repo")
    times: dict[str, list[float]] = {}
    front_cpu: dict[str, list[float]] = {}
    with TritonServer(repo, log_path=tmp / "server.log") as srv:
        clients = {}
        for route, (hu, gu) in {"front": (srv.http_url, srv.grpc_url),
                                "direct": (srv.internal_http_url, srv.internal_grpc_url)}.items():
            clients[("http", route)] = (h.InferenceServerClient(hu, network_timeout=600), h)
            clients[("grpc", route)] = (g.InferenceServerClient(gu), g)
        for (_, _), (c, mod) in clients.items():
            request(c, mod, sample, instruction)  # warm: the features are cached from here on
        for i in range(args.reps):
            for (proto, route), (c, mod) in clients.items():
                for case, video in (("cached", sample), ("upload", None)):
                    if case == "upload":
                        if i % 4:  # fewer large uploads than small requests
                            continue
                        video = os.urandom(args.upload_mib << 20)
                    c0, t0 = cpu_s(srv.front_pid), time.perf_counter()
                    request(c, mod, video, instruction)
                    times.setdefault(f"{case} {proto} {route}", []).append(time.perf_counter() - t0)
                    if route == "front":
                        front_cpu.setdefault(f"{case} {proto}", []).append(cpu_s(srv.front_pid) - c0)
            print(f"\r{i + 1}/{args.reps}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    rows = []
    for case in ("cached", "upload"):
        for proto in ("http", "grpc"):
            front, direct = (statistics.median(times[f"{case} {proto} {r}"]) for r in ("front", "direct"))
            rows.append({"case": case, "protocol": proto, "n": len(times[f"{case} {proto} front"]),
                         "front_p50_ms": round(front * 1e3, 2), "direct_p50_ms": round(direct * 1e3, 2),
                         "ratio": round(front / direct, 2),
                         "front_cpu_ms": round(statistics.mean(front_cpu[f"{case} {proto}"]) * 1e3, 2)})
            print(json.dumps(rows[-1]))
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "upload_mib": args.upload_mib,
                                         "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
