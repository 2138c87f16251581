"""The front's process: its HTTP, gRPC and metrics ports sharing one held-bytes budget and one record of the
inferences in flight (answered at the launcher's notice on stdin when their model's process died: `lost.py`), the
API keys and the TLS certificate (looked at every KEYS_EVERY_S and read again when their files changed, or at
once on SIGHUP), until SIGINT or SIGTERM.

    python -m videoitg.front CONFIG_JSON    # started and stopped by `TritonServer` (server.py)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys

from videoitg.contract.access import SERVER_KEYS_ENV, KeyStore
from videoitg.errors import InputError
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
from videoitg.front.tls import Certificates
from videoitg.front.webpage import page_routes

KEYS_EVERY_S = 1.0  # how often the key file's and the certificate's files are looked at for a change


def http_port(cfg: FrontConfig, counters: FrontCounters, budget: ByteBudget,
              in_flight: InFlight | None = None, keys: KeyStore | None = None,
              certs: Certificates | None = None) -> HttpPort:
    """The public HTTP port with the routes `cfg` turns on: the answer endpoint's (--answer-upstream) and the
    page's (`FrontConfig.serves_page`); `in_flight`: its inferences, shared with the gRPC port (lost.py); `keys`:
    the clients' keys (the answer endpoint then passes no caller's Authorization on); `certs`: TLS."""
    routes, closers = answer_routes(cfg, callers_key_passes=keys is None)
    return HttpPort(cfg, counters, budget, routes, closers, page_routes(cfg, keys is not None), in_flight, keys, certs)


def say(line: str) -> None:
    print(f"videoitg front: {line}", flush=True)


async def watch_access(keys: KeyStore | None, certs: Certificates | None, every_s: float = KEYS_EVERY_S) -> None:
    """The key file and the certificate's files read again when they change (a rotation: requests in flight are
    not checked again); each change said in the log, never a key."""
    while True:
        await asyncio.sleep(every_s)
        for watched in (keys, certs):
            if watched is not None and (said := watched.refresh()) is not None:
                say(said)


def reload_access(keys: KeyStore | None, certs: Certificates | None) -> None:
    """SIGHUP: the key file and the certificate read again now."""
    for watched in (keys, certs):
        if watched is not None:
            say(watched.reload())


async def serve(cfg: FrontConfig, open_files: int, keys: KeyStore | None = None,
                certs: Certificates | None = None) -> None:
    """The ports until SIGINT or SIGTERM; `open_files`: the open-file limit in force, named in the ready line;
    `keys`, `certs`: who may use them (None: anyone, plain TCP)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if keys is not None or certs is not None:
        loop.add_signal_handler(signal.SIGHUP, reload_access, keys, certs)
    counters = FrontCounters()
    budget = held_budget(cfg)
    in_flight = InFlight()  # both ports' inferences, by model: the launcher's notices end those a model lost
    http = http_port(cfg, counters, budget, in_flight, keys, certs)
    metrics, grpc = MetricsPort(cfg, counters, certs), GrpcPort(cfg, counters, budget, in_flight, keys, certs)
    for port in (http, metrics, grpc):
        await port.start()
    watcher = asyncio.ensure_future(watch_access(keys, certs)) if keys is not None or certs is not None else None
    trimmer = asyncio.ensure_future(trim_after_release(budget))
    notices = asyncio.ensure_future(in_flight.read_notices(sys.stdin)) if cfg.launcher_notices else None
    print(f"videoitg front: http {cfg.host}:{cfg.http_port} grpc {cfg.host}:{cfg.grpc_port} metrics "
          f"{cfg.host}:{cfg.metrics_port} -> tritonserver {cfg.triton_http}; models {', '.join(cfg.models)}; "
          f"open files {open_files}; connections http {cfg.max_connections} grpc {cfg.max_connections} metrics "
          f"{METRICS_CONNECTIONS}; page {'on' if http.pages else 'off'}"
          + (f"; API keys {len(keys)}" if keys is not None else "") + ("; TLS" if certs is not None else ""),
          flush=True)
    await stop.wait()
    trimmer.cancel()
    if watcher is not None:
        watcher.cancel()
    if notices is not None:
        notices.cancel()
    await asyncio.gather(grpc.stop(cfg.shutdown_s), http.stop(), metrics.stop())


def main(argv: list[str]) -> int:
    try:
        return run(argv)
    except InputError as e:  # a key or certificate file that changed since the launcher checked it
        print(f"videoitg front: {e}", file=sys.stderr, flush=True)
        return 2


def run(argv: list[str]) -> int:
    raw = json.loads(argv[0])
    key = os.environ.pop(INFER_KEY_ENV, "")  # the environment's: never the command line's
    cfg = FrontConfig(**{**raw, "models": tuple(raw["models"]), "infer_key": key})
    keys = KeyStore.configured(cfg.api_key_file, os.environ)  # an InputError: the launcher checked them just before
    os.environ.pop(SERVER_KEYS_ENV, None)
    certs = Certificates(cfg.tls_cert_file, cfg.tls_key_file) if cfg.tls_cert_file and cfg.tls_key_file else None
    return_freed_memory()
    open_files = raise_open_file_limit()
    cfg = dataclasses.replace(cfg, max_connections=connection_cap(open_files, cfg.max_connections))
    asyncio.run(serve(cfg, open_files, keys, certs))
    return 0
