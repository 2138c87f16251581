"""What the front costs: the same requests through the public ports (the front) and straight to tritonserver's own
ports, interleaved in one run (each rep in its own shuffled order of routes), on the CPU repository of the embedded
tiny checkpoint.

    python -m benchmarks.serving.bench_front [--reps 40] [--upload-mib 32] [--small-pages] [--relay] [--haproxy]
                                             [--baseline DIR] [--json out.json]

- `cached`: the sample video scored again (a feature-cache hit: the smallest full request), HTTP and gRPC.
- `upload`: `--upload-mib` MiB of fresh random bytes as VIDEO (refused as not a video after the server hashed and
  opened them): what moving a large body through one more process costs.
Reports p50 of each, the ratio front / direct, the front's own CPU time per request (its process's, read
around each request through the front), and the resident memory of each route's process after the warm-up and
1 s after the last request. `--small-pages`: also a second front, started as the first but without the
huge-page tunable (`front.process.environment`), on ports of its own: the route `front-4k`, interleaved with the others.
`--baseline DIR`: also the front of another checkout of this project (say `git worktree add DIR REV`), started as
the first from DIR's code, to the same tritonserver: the route `baseline`, a change to the front measured against
what it changes, interleaved in one run (DIR's front must pass on the inference key tritonserver takes).
The routes that reach tritonserver's ports without a front (`direct`, `relay`, `grpcio`, `haproxy`) send its
inference key themselves (`TritonServer.inference_headers`), passed through unread.
`--relay`: also the route `relay`, a byte relay (relay.py) to tritonserver's ports: what one more process costs
by itself, the floor under any front; and the route `grpcio` (gRPC only), grpcio's pass-through without the front's
checks (grpc_relay.py): the floor under any front built on grpcio.
`--haproxy`: also the route `haproxy`, HAProxy (the `haproxy` on PATH) passing both ports on to tritonserver's
unread, HTTP/1.1 and gRPC over HTTP/2 (`HAPROXY`): what a compiled proxy costs without the front's checks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from videoitg.contract.protocol import TOP
from videoitg.front.process import environment as front_environment
from videoitg.launch.ports import LOOPBACK, free_ports
from videoitg.launch.procfs import cpu_s, rss_mib
from videoitg.launch.server import TritonServer
from videoitg.repository.generator import RepoSpec, build_repository
from videoitg.synthetic.sample import sample_video

# HAProxy's configuration for the route `haproxy`: every request passed on unread, no bound of its own in the way.
HAPROXY = """global
  maxconn 2000
defaults
  mode http
  timeout connect 5s
  timeout client 600s
  timeout server 600s
frontend http_in
  bind {host}:{http_port}
  default_backend triton_http
backend triton_http
  server triton {triton_http}
frontend grpc_in
  bind {host}:{grpc_port} proto h2
  default_backend triton_grpc
backend triton_grpc
  server triton {triton_grpc} proto h2
"""
FRONTS = ("front", "front-4k", "baseline")  # the routes through a front; the others reach tritonserver directly
# What random bytes are refused as (a client's fault, 400): a decode error of the bytes themselves.
BYTES_REFUSED = ("NotAVideoError", "NoVideoStreamError", "NoFramesError", "UnsupportedCodecError",
                 "TruncatedVideoError")


def request(client, mod, video: bytes, instruction: str, headers: dict[str, str] | None = None) -> None:
    ins = []
    for name, value in (("VIDEO", video), ("INSTRUCTION", instruction.encode())):
        t = mod.InferInput(name, [1, 1], "BYTES")
        t.set_data_from_numpy(np.array([[value]], dtype=object))
        ins.append(t)
    try:
        client.infer(TOP, ins, headers=headers)
    except Exception as e:  # the upload case is refused by design: random bytes are not a video, or now and then
        if not any(name in str(e) for name in BYTES_REFUSED):  # probe as a container that does not decode
            raise


@contextlib.contextmanager
def _route(name: str, command: list[str], env: dict[str, str], http_port: int | None, grpc_port: int,
           cwd: Path | None = None) -> Iterator[tuple[tuple[str | None, str], int]]:
    """((http url, grpc url), pid) of the route `name`'s process, started with `command`, once its HTTP port (or,
    for a gRPC-only route, `http_port` None, its gRPC port) answers."""
    import tritonclient.grpc as g
    import tritonclient.http as h

    # A session of its own, as the launcher starts the front: Linux's autogroup scheduling would otherwise share
    # this process's CPU with the benchmark's client
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
    try:
        urls = (f"{LOOPBACK}:{http_port}" if http_port else None, f"{LOOPBACK}:{grpc_port}")
        deadline = time.monotonic() + 30
        while not (_live(h, urls[0]) if urls[0] else _live(g, urls[1])):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {name} route did not start")
            time.sleep(0.2)
        yield urls, proc.pid
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def extra_routes(srv: TritonServer, small_pages: bool, relay: bool, haproxy: Path | None,
                 baseline: Path | None) -> Iterator[dict[str, tuple[tuple[str | None, str], int]]]:
    """The routes beside `front` and `direct`, each to `srv`'s tritonserver: `front-4k`, a second front without the
    huge-page tunable; `baseline`, the front of the checkout `baseline`; `relay`, a byte relay (relay.py), and
    `grpcio`, grpcio's pass-through without the front's checks (grpc_relay.py, gRPC only); `haproxy`, HAProxy with
    its configuration written to `haproxy`. Route name -> ((http url or None, grpc url), pid)."""
    with contextlib.ExitStack() as stack:
        routes = {}
        for name, wanted in (("front-4k", small_pages), ("baseline", baseline is not None)):
            if not wanted:
                continue
            command = srv.front_command()
            cfg = json.loads(command[-1])
            cfg["http_port"], cfg["grpc_port"], cfg["metrics_port"] = free_ports(3)
            if name == "front-4k":
                env, cwd = {k: v for k, v in srv.front_environment().items() if k != "GLIBC_TUNABLES"}, None
            else:  # `python -m` imports the package from its working directory first
                env, cwd = {**srv.front_environment(), "PYTHONPATH": str(baseline)}, baseline
            routes[name] = stack.enter_context(_route(name, [*command[:-1], json.dumps(cfg)], env, cfg["http_port"],
                                                      cfg["grpc_port"], cwd))
        if relay:
            http_port, grpc_port = free_ports(2)
            command = [sys.executable, str(Path(__file__).with_name("relay.py")), str(http_port),
                       srv.internal_http_url, str(grpc_port), srv.internal_grpc_url]
            routes["relay"] = stack.enter_context(_route("relay", command, dict(os.environ), http_port, grpc_port))
            (grpc_port,) = free_ports(1)
            command = [sys.executable, str(Path(__file__).with_name("grpc_relay.py")), str(grpc_port),
                       srv.internal_grpc_url]
            routes["grpcio"] = stack.enter_context(_route("grpcio", command, front_environment(dict(os.environ)),
                                                          None, grpc_port))
        if haproxy is not None:
            http_port, grpc_port = free_ports(2)
            haproxy.write_text(HAPROXY.format(host=LOOPBACK, http_port=http_port, grpc_port=grpc_port,
                                              triton_http=srv.internal_http_url, triton_grpc=srv.internal_grpc_url))
            routes["haproxy"] = stack.enter_context(_route("haproxy", ["haproxy", "-db", "-f", str(haproxy)],
                                                           dict(os.environ), http_port, grpc_port))
        yield routes


def _live(h: Any, url: str) -> bool:
    try:
        return h.InferenceServerClient(url).is_server_live()
    except Exception:  # not listening yet
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--upload-mib", type=int, default=32)
    ap.add_argument("--small-pages", action="store_true", help="also a front without the huge-page tunable")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="also the front of this checkout of the project (e.g. a git worktree of another commit)")
    ap.add_argument("--relay", action="store_true",
                    help="also a byte relay (relay.py) and grpcio's pass-through (grpc_relay.py)")
    ap.add_argument("--haproxy", action="store_true",
                    help="also HAProxy (on PATH) passing both ports on unread: a compiled proxy without the checks")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.haproxy and shutil.which("haproxy") is None:
        ap.error("--haproxy: no haproxy on PATH (Debian and Ubuntu: apt-get install haproxy)")
    import tritonclient.grpc as g
    import tritonclient.http as h

    path, instruction = sample_video()
    sample = path.read_bytes()
    tmp = Path(tempfile.mkdtemp(prefix="videoitg-bench-front-"))
    repo = build_repository(RepoSpec(target="cpu"), tmp / "repo")
    times: dict[str, list[float]] = {}
    front_cpu: dict[str, list[float]] = {}
    haproxy = tmp / "haproxy.cfg" if args.haproxy else None
    with TritonServer(repo, log_path=tmp / "server.log") as srv, extra_routes(srv, args.small_pages, args.relay,
                                                                              haproxy, args.baseline) as extra:
        routes = {"front": (srv.http_url, srv.grpc_url), "direct": (srv.internal_http_url, srv.internal_grpc_url)}
        pids = {"front": srv.front_pid}
        for name, (urls, pid) in extra.items():
            routes[name], pids[name] = urls, pid
        clients = {}
        for route, (hu, gu) in routes.items():
            if hu is not None:
                clients[("http", route)] = (h.InferenceServerClient(hu, network_timeout=600), h)
            clients[("grpc", route)] = (g.InferenceServerClient(gu), g)
        # The routes that reach tritonserver's own ports (not through a front) carry the inference key it takes
        keyed = {(proto, route): srv.inference_headers(proto) for proto, route in clients if route not in FRONTS}
        for key, (c, mod) in clients.items():
            request(c, mod, sample, instruction, keyed.get(key))  # warm: the features are cached from here on
        rss = {route: [rss_mib(pid)] for route, pid in pids.items()}
        for i in range(args.reps):
            order = list(clients.items())
            random.Random(i).shuffle(order)  # no route always follows the same one
            for (proto, route), (c, mod) in order:
                for case, video in (("cached", sample), ("upload", None)):
                    if case == "upload":
                        if i % 4:  # fewer large uploads than small requests
                            continue
                        video = os.urandom(args.upload_mib << 20)
                    pid = pids.get(route)
                    c0, t0 = cpu_s(pid) if pid else 0.0, time.perf_counter()
                    request(c, mod, video, instruction, keyed.get((proto, route)))
                    times.setdefault(f"{case} {proto} {route}", []).append(time.perf_counter() - t0)
                    if pid:
                        front_cpu.setdefault(f"{case} {proto} {route}", []).append(cpu_s(pid) - c0)
            print(f"\r{i + 1}/{args.reps}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        time.sleep(1.0)
        for route, pid in pids.items():
            rss[route].append(rss_mib(pid))
            print(json.dumps({"route": route, "rss_mib_before": round(rss[route][0]),
                              "rss_mib_after": round(rss[route][1])}))
    rows = []
    for case in ("cached", "upload"):
        for proto in ("http", "grpc"):
            direct = statistics.median(times[f"{case} {proto} direct"])
            for route in pids:
                if f"{case} {proto} {route}" not in times:  # a gRPC-only route
                    continue
                front = statistics.median(times[f"{case} {proto} {route}"])
                n = len(times[f"{case} {proto} {route}"])
                rows.append({"case": case, "protocol": proto, "route": route, "n": n,
                             "front_p50_ms": round(front * 1e3, 2), "direct_p50_ms": round(direct * 1e3, 2),
                             "ratio": round(front / direct, 2),
                             "front_cpu_ms": round(statistics.mean(front_cpu[f"{case} {proto} {route}"]) * 1e3, 2)})
                print(json.dumps(rows[-1]))
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "upload_mib": args.upload_mib,
                                         "rows": rows, "rss_mib": rss}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
