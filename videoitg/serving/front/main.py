"""The front's process: its HTTP, gRPC and metrics ports sharing one held-bytes budget, until SIGINT or SIGTERM.

    python -m videoitg.serving.front CONFIG_JSON    # started and stopped by `TritonServer` (server.py)
"""

from __future__ import annotations

import asyncio
import json
import signal

from videoitg.serving.front.answer import answer_routes
from videoitg.serving.front.config import FrontConfig, FrontCounters, held_budget
from videoitg.serving.front.grpc import GrpcPort
from videoitg.serving.front.http import HttpPort, MetricsPort
from videoitg.serving.front.process import raise_open_file_limit, return_freed_memory, trim_after_release


async def serve(cfg: FrontConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    counters = FrontCounters()
    budget = held_budget(cfg)
    http = HttpPort(cfg, counters, budget, answer_routes(cfg))
    metrics, grpc = MetricsPort(cfg, counters), GrpcPort(cfg, counters, budget)
    for port in (http, metrics, grpc):
        await port.start()
    trimmer = asyncio.ensure_future(trim_after_release(budget))
    print(f"videoitg front: http {cfg.host}:{cfg.http_port} grpc {cfg.host}:{cfg.grpc_port} metrics "
          f"{cfg.host}:{cfg.metrics_port} -> tritonserver {cfg.triton_http}; models {', '.join(cfg.models)}",
          flush=True)
    await stop.wait()
    trimmer.cancel()
    await asyncio.gather(grpc.stop(cfg.shutdown_s), http.stop(), metrics.stop())


def main(argv: list[str]) -> int:
    raw = json.loads(argv[0])
    cfg = FrontConfig(**{**raw, "models": tuple(raw["models"])})
    return_freed_memory()
    raise_open_file_limit()
    asyncio.run(serve(cfg))
    return 0
