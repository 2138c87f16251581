"""The public face of a launched server: the only ports a client reaches.

tritonserver listens on loopback ports that only the launcher knows. This front listens on the public HTTP, gRPC
and metrics ports and passes on what the public API allows: health, server metadata, every model's metadata,
readiness, config and statistics (read-only; the metrics page names every model anyway), inference of the public
models, and the metrics page. Everything else, inference of an internal step and the model-repository,
shared-memory, logging and trace APIs, is answered here (HTTP 404, gRPC UNIMPLEMENTED or NOT_FOUND) and never
reaches Triton.

Each inference request is checked before it is passed on, by the pure functions below:
- its size is bounded (HTTP 413, gRPC RESOURCE_EXHAUSTED);
- HTTP: no content encoding (refused before the body is read: it would be inflated before these checks), and the
  JSON header parses, nests at most `MAX_JSON_DEPTH` levels and has the structure of an inference request (400
  naming what is wrong; Triton 2.51 answers some malformed bodies with 500 and is killed by a deeply nested one);
- every input's shape has at most `MAX_ELEMENTS` elements (a shape whose byte size overflows passes Triton 2.51's
  size check and aborts the python-backend stub before any model code runs).
A body reaches Triton whole, with a Content-Length: Triton 2.51 overflows its stack decoding a body sent in many
small chunks (CVE-2025-23310 / CVE-2025-23311).

    python -m videoitg.serving.front CONFIG_JSON    # started and stopped by `TritonServer` (server.py)
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videoitg.jsonio import nesting_over
from videoitg.limits import SERVED_MAX_VIDEO_BYTES

MAX_JSON_DEPTH = 16  # an inference request's JSON nests 4 levels (object, inputs, input, data), plus data's dims
MAX_ELEMENTS = 1 << 40  # per input; far beyond any real request, far below an int64 byte-size overflow
OTHER_INPUTS_BYTES = 16 << 20  # a request's bound beyond its videos: instruction, options, JSON
SERVICE = "inference.GRPCInferenceService"
PASS_HEADERS = ("Content-Type", "Content-Encoding", "Inference-Header-Content-Length")
_NAME = r"[A-Za-z0-9_.-]{1,256}"
_MODEL_PATH = re.compile(rf"/v2/models/(?P<model>{_NAME})(?:/versions/(?P<version>[0-9]{{1,19}}))?"
                         r"(?P<action>/infer|/ready|/config|/stats)?")
_SERVER_PATHS = ("/v2", "/v2/health/live", "/v2/health/ready")


@dataclass(frozen=True)
class FrontConfig:
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    triton_http: str  # host:port of tritonserver's own endpoints
    triton_grpc: str
    triton_metrics: str
    models: tuple[str, ...]  # the models a client may use
    max_request_bytes: int
    shutdown_s: float = 10.0  # in-flight requests get this long on SIGTERM


# ---- policy (pure, unit-tested without a server) ----------------------------------------------------------------
def request_bytes_bound(repository: Path, model: str) -> int:
    """The largest request body the front accepts for `model`: its served MAX_VIDEO_BYTES (the repository's
    parameter, else the served default) per video of its largest batch, plus OTHER_INPUTS_BYTES."""
    try:
        text = (repository / model / "config.pbtxt").read_text()
    except OSError:
        text = ""
    video = re.search(r'key: "MAX_VIDEO_BYTES"\s*value\s*\{\s*string_value: "(\d+)"', text)
    batch = re.search(r"^max_batch_size:\s*(\d+)", text, re.MULTILINE)
    per_video = int(video[1]) if video else SERVED_MAX_VIDEO_BYTES
    return per_video * max(1, int(batch[1]) if batch else 1) + OTHER_INPUTS_BYTES


def http_route(method: str, path: str, models: tuple[str, ...]) -> tuple[str, str] | str:
    """('pass' | 'infer', path to send Triton) for an allowed HTTP request, else the reason it is refused. The path
    sent on is rebuilt from what was matched, so an encoded or doubled segment cannot name another model."""
    method = method[:16]
    if path in _SERVER_PATHS:
        return ("pass", path) if method == "GET" else f"{method} {path} is not served (GET only)"
    m = _MODEL_PATH.fullmatch(path)
    if m is None:
        return f"{path[:80]} is not served: this server answers health, metadata and inference of {', '.join(models)}"
    action = m["action"] or ""
    # Every model's metadata, readiness, config and statistics are read-only (an ensemble's client, perf_analyzer,
    # reads its steps'; the metrics page names them anyway); inference is the public models' only.
    if action == "/infer" and (err := model_error(m["model"], models)) is not None:
        return err
    want = "POST" if action == "/infer" else "GET"
    if method != want:
        return f"{method} {path} is not served ({want} only)"
    version = f"/versions/{m['version']}" if m["version"] else ""
    return ("infer" if action == "/infer" else "pass"), f"/v2/models/{m['model']}{version}{action}"


def shape_error(name: str, shape: Any) -> str | None:
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                       for d in shape):
        return f"input '{name}': shape must be a list of integers"
    quoted = str(list(shape[:8]))[:80]  # a JSON integer may have thousands of digits
    if any(d < 0 for d in shape):
        return f"input '{name}': shape {quoted} has a negative dimension"
    if math.prod(shape) > MAX_ELEMENTS:
        return f"input '{name}': shape {quoted} has more than 2^40 elements"
    return None


def infer_header_error(header: Any) -> str | None:
    """What is wrong with a parsed HTTP inference header (None: Triton may have it)."""
    if not isinstance(header, dict):
        return "request body must be a JSON object"
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return "request body must have a non-empty 'inputs' list"
    for i, inp in enumerate(inputs):
        if not isinstance(inp, dict):
            return f"inputs[{i}] must be an object"
        name = inp.get("name")
        if not isinstance(name, str) or not isinstance(inp.get("datatype"), str):
            return f"inputs[{i}] must have a string 'name' and 'datatype'"
        if (err := shape_error(name[:64], inp.get("shape"))) is not None:
            return err
    for key in ("outputs", "parameters"):
        if key in header and not isinstance(header[key], list if key == "outputs" else dict):
            return f"'{key}' must be a {'list' if key == 'outputs' else 'JSON object'}"
    if any(not isinstance(o, dict) or not isinstance(o.get("name"), str) for o in header.get("outputs", [])):
        return "each of 'outputs' must be an object with a string 'name'"
    return None


def encoding_error(encoding: str | None) -> str | None:
    if encoding in (None, "", "identity"):
        return None
    return f"Content-Encoding {encoding[:32]!r} is not accepted: send the request body uncompressed"


def http_infer_error(body: bytes, header_length: str | None) -> str | None:
    """Why an HTTP inference body (its Content-Encoding checked by `encoding_error`) is refused (400), or None."""
    n = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            return f"Inference-Header-Content-Length {header_length[:24]!r} is not a length within the body"
        n = int(header_length)
    try:
        header = json.loads(body[:n])
    except RecursionError:
        return f"request JSON nests more than {MAX_JSON_DEPTH} levels"
    except ValueError as e:
        return f"request body is not valid JSON ({str(e)[:120]})"
    if nesting_over(header, MAX_JSON_DEPTH):
        return f"request JSON nests more than {MAX_JSON_DEPTH} levels"
    return infer_header_error(header)


def model_error(name: str, models: tuple[str, ...]) -> str | None:
    if name in models:
        return None
    return f"model '{name[:64]}' is not served: the public model is {', '.join(models)}"


def grpc_infer_error(request: Any, models: tuple[str, ...]) -> str | None:
    """Why a parsed `ModelInferRequest` is refused, or None."""
    if (err := model_error(request.model_name, models)) is not None:
        return err
    for inp in request.inputs:
        if (err := shape_error(inp.name[:64], list(inp.shape))) is not None:
            return err
    return None


# ---- the servers ----------------------------------------------------------------------------------------------
async def _http_app(cfg: FrontConfig):  # -> aiohttp.web.Application
    import aiohttp
    from aiohttp import web

    # A connection per request, as a direct client's: Triton serves each HTTP connection on one of its threads, and
    # a model load or unload holds its thread, so a pooled connection would wait behind one (health during a reload).
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True), auto_decompress=False,
                                    timeout=aiohttp.ClientTimeout(total=None))

    async def forward(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> web.Response:
        try:
            async with session.request(method, url, data=body, headers=headers) as r:
                data = await r.read()
                return web.Response(status=r.status, body=data,
                                    headers={k: r.headers[k] for k in PASS_HEADERS if k in r.headers})
        except aiohttp.ClientError as e:
            return web.json_response({"error": f"server unavailable ({type(e).__name__}); try again"}, status=503)

    async def handle(request: web.Request) -> web.StreamResponse:
        route = http_route(request.method, request.path, cfg.models)
        if isinstance(route, str):  # the body, if any, is not read: the connection closes
            return web.json_response({"error": route}, status=404, headers={"Connection": "close"})
        kind, path = route
        headers = {k: request.headers[k] for k in ("Content-Type", "Inference-Header-Content-Length", "Accept-Encoding")
                   if k in request.headers}
        if kind == "pass":
            return await forward("GET", f"http://{cfg.triton_http}{path}", None, headers)
        # Before the body is read: aiohttp would inflate a compressed one while reading it.
        if (err := encoding_error(request.headers.get("Content-Encoding"))) is not None:
            return web.json_response({"error": err}, status=400, headers={"Connection": "close"})
        if request.content_length is not None and request.content_length > cfg.max_request_bytes:
            return _too_large(request.content_length, cfg)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(None, cfg)
        err = http_infer_error(body, request.headers.get("Inference-Header-Content-Length"))
        if err is not None:
            return web.json_response({"error": err}, status=400)
        return await forward("POST", f"http://{cfg.triton_http}{path}", body, headers)

    def _too_large(n: int | None, cfg: FrontConfig) -> web.Response:
        size = f"of {n} bytes " if n is not None else ""
        why = f"the served --max-video-bytes per video of a batch, plus {OTHER_INPUTS_BYTES >> 20} MiB"
        err = f"request body {size}is over the server's limit of {cfg.max_request_bytes} bytes ({why})"
        return web.json_response({"error": err}, status=413, headers={"Connection": "close"})

    app = web.Application(client_max_size=cfg.max_request_bytes)
    app.router.add_route("*", "/{tail:.*}", handle)

    async def close(_app: web.Application) -> None:
        await session.close()

    app.on_cleanup.append(close)
    return app


async def _metrics_app(cfg: FrontConfig):
    import aiohttp
    from aiohttp import web

    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def metrics(request: web.Request) -> web.Response:
        try:
            async with session.get(f"http://{cfg.triton_metrics}/metrics") as r:
                return web.Response(status=r.status, body=await r.read(), content_type="text/plain")
        except aiohttp.ClientError as e:
            return web.Response(status=503, text=f"metrics unavailable ({type(e).__name__})\n")

    app = web.Application(client_max_size=1024)
    app.router.add_get("/metrics", metrics)

    async def close(_app: web.Application) -> None:
        await session.close()

    app.on_cleanup.append(close)
    return app


def _grpc_server(cfg: FrontConfig):  # -> grpc.aio.Server
    import grpc
    from tritonclient.grpc import service_pb2

    limit = min(cfg.max_request_bytes, 2**31 - 1)  # gRPC's message sizes are int32
    channel = grpc.aio.insecure_channel(cfg.triton_grpc, options=[("grpc.max_send_message_length", -1),
                                                                   ("grpc.max_receive_message_length", -1)])

    def handler(method: str):
        call = channel.unary_unary(f"/{SERVICE}/{method}")  # raw bytes both ways

        async def forward(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            if method == "ModelInfer":
                try:
                    req = service_pb2.ModelInferRequest.FromString(raw)
                except Exception as e:  # protobuf's DecodeError
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {method} request ({e})")
                if (err := grpc_infer_error(req, cfg.models)) is not None:
                    code = grpc.StatusCode.NOT_FOUND if "is not served" in err else grpc.StatusCode.INVALID_ARGUMENT
                    await context.abort(code, err)
            try:
                return await call(raw, timeout=context.time_remaining())
            except grpc.aio.AioRpcError as e:
                await context.abort(e.code(), e.details() or "")

        return grpc.unary_unary_rpc_method_handler(forward)

    methods = ("ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata", "ModelConfig",
               "ModelStatistics", "ModelInfer")
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {m: handler(m) for m in methods}),))
    server.add_insecure_port(f"{'[::]' if cfg.host in ('', '::') else cfg.host}:{cfg.grpc_port}")
    return server


async def serve(cfg: FrontConfig) -> None:
    from aiohttp import web

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runners = []
    for app, port in ((await _http_app(cfg), cfg.http_port), (await _metrics_app(cfg), cfg.metrics_port)):
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=cfg.shutdown_s)
        await runner.setup()
        await web.TCPSite(runner, cfg.host, port).start()
        runners.append(runner)
    grpc_server = _grpc_server(cfg)
    await grpc_server.start()
    print(f"videoitg front: http {cfg.host}:{cfg.http_port} grpc {cfg.host}:{cfg.grpc_port} metrics "
          f"{cfg.host}:{cfg.metrics_port} -> tritonserver {cfg.triton_http}; models {', '.join(cfg.models)}",
          flush=True)
    await stop.wait()
    # Idle keep-alive connections are closed at once, requests in flight get `shutdown_s`.
    await asyncio.gather(grpc_server.stop(cfg.shutdown_s), *(r.cleanup() for r in runners))


def main(argv: list[str]) -> int:
    raw = json.loads(argv[0])
    cfg = FrontConfig(**{**raw, "models": tuple(raw["models"])})
    asyncio.run(serve(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
