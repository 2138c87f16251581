"""The front's process: its HTTP, gRPC and metrics ports sharing one held-bytes budget and one record of the
inferences in flight (answered at the launcher's notice on stdin when their model's process died: `lost.py`), until
SIGINT or SIGTERM.

    python -m videoitg.front CONFIG_JSON    # started and stopped by `TritonServer` (server.py)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys

from videoitg.front.answer import answer_routes
from videoitg.front.bounds import ByteBudget
from videoitg.front.config import (
    INFER_KEY_ENV,
    METRICS_CONNECTIONS,
    FrontConfig,
    FrontCounters,
    held_budget,
)
from videoitg.front.grpc import GrpcPort
from videoitg.front.http import HttpPort, MetricsPort
from videoitg.front.lost import InFlight
from videoitg.front.process import (
    connection_cap,
    raise_open_file_limit,
    return_freed_memory,
    trim_after_release,
)
from videoitg.front.webpage import page_routes


def http_port(cfg: FrontConfig, counters: FrontCounters, budget: ByteBudget,
              in_flight: InFlight | None = None) -> HttpPort:
    """The public HTTP port with the routes `cfg` turns on: the answer endpoint's (--answer-upstream) and the
    page's (`FrontConfig.serves_page`); `in_flight`: its inferences, shared with the gRPC port (lost.py)."""
    routes, closers = answer_routes(cfg)
    return HttpPort(cfg, counters, budget, routes, closers, page_routes(cfg), in_flight)


async def serve(cfg: FrontConfig, open_files: int) -> None:
    """The ports until SIGINT or SIGTERM; `open_files`: the open-file limit in force, named in the ready line."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    counters = FrontCounters()
    budget = held_budget(cfg)
    in_flight = InFlight()  # both ports' inferences, by model: the launcher's notices end those a model lost
    http = http_port(cfg, counters, budget, in_flight)
    metrics, grpc = MetricsPort(cfg, counters), GrpcPort(cfg, counters, budget, in_flight)
    for port in (http, metrics, grpc):
        await port.start()
    trimmer = asyncio.ensure_future(trim_after_release(budget))
    notices = asyncio.ensure_future(in_flight.read_notices(sys.stdin)) if cfg.launcher_notices else None
    print(f"videoitg front: http {cfg.host}:{cfg.http_port} grpc {cfg.host}:{cfg.grpc_port} metrics "
          f"{cfg.host}:{cfg.metrics_port} -> tritonserver {cfg.triton_http}; models {', '.join(cfg.models)}; "
          f"open files {open_files}; connections http {cfg.max_connections} grpc {cfg.max_connections} metrics "
          f"{METRICS_CONNECTIONS}; page {'on' if http.pages else 'off'}", flush=True)
    await stop.wait()
    trimmer.cancel()
    if notices is not None:
        notices.cancel()
    await asyncio.gather(grpc.stop(cfg.shutdown_s), http.stop(), metrics.stop())


def main(argv: list[str]) -> int:
    raw = json.loads(argv[0])
    key = os.environ.pop(INFER_KEY_ENV, "")  # the environment's: never the command line's
    cfg = FrontConfig(**{**raw, "models": tuple(raw["models"]), "infer_key": key})
    return_freed_memory()
    open_files = raise_open_file_limit()
    cfg = dataclasses.replace(cfg, max_connections=connection_cap(open_files, cfg.max_connections))
    asyncio.run(serve(cfg, open_files))
    return 0
