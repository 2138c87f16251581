"""Availability of ordinary requests while a client attacks the server, against `videoitg serve` (the real
tritonserver, the embedded tiny checkpoint, CPU): for each attack, `--seconds` of ordinary requests (alternately a
cached video and a new one) while the attack repeats, and the share answered.

    python -m benchmarks.serving.availability [--seconds 30] [--out availability.json]

Attacks, each sent to the public ports: `none` (baseline); `overflow`: a direct call to the grounding step whose
shape's byte size overflows to 0 (crashes a bare tritonserver 2.51's python stub before any model code);
`decode-flood`: 16 direct decode-step calls kept in flight; `http-nesting`: an HTTP inference body nested a million
levels deep; `http-chunks`: an HTTP body in 1.5 million one-byte chunks (either kills a bare tritonserver 2.51).
Hostile clients of the front: `big-json`: a 23 MiB HTTP body of valid structure with millions of empty
lists in `data`; `grpc-inputs`: a 5.7 MiB ModelInfer with 3 million empty inputs; `dup-keys`: a JSON header with
a key twice; `held-bodies`: 4 connections each declaring 500 MiB, sending 160 MiB, then waiting; `abandoned`: 64 MiB
sent, then the connection closed, repeated; `idle-conns`: 1100 connections that never send a byte. Their siblings:
`compressed`: 256 MiB of zeros gzipped (256 KiB) sent to the health route; `grpc-fields`: a ModelInfer whose one
input has 8 million shape dimensions (8 MiB); `containers`: a 1 MiB JSON header of 200 thousand `[[]]` items;
`malformed`: requests aiohttp's own parser refuses (both framings), every 10 ms; `grpc-stalls`: 6 connections of
128 ModelInfer streams each that send their headers and then wait, each opened again once ended; `grpc-held`: the
gRPC sibling of `held-bodies` (8 connections, each a ModelInfer declaring 500 MiB, 160 MiB sent, then waiting:
1.25 GiB, past the front's 1 GiB budget);
`grpc-reset`: 5000 calls opened and reset in one write (a rapid reset; every other one with its whole message sent
before its reset), on a new connection once the front closes one; `grpc-ping`: 5000 PINGs in one write, the
same way; `idle-crowd`: 1000 idle keep-alive HTTP connections (each sent a health check, then kept open,
reopened once closed) and a flood of 2000 connections a round opened and reset at once; its ordinary requests
alternate HTTP and gRPC, each on a new connection (every other phase's are gRPC, on one connection kept open). For
each phase the peak resident memory of the front and of tritonserver (`front_peak_rss_mib`,
`tritonserver_peak_rss_mib`, sampled every 0.2 s) is recorded too.
`--open-files N`: the server's open-file limit, soft and hard (the front sets its connection caps from it).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np

from benchmarks.clips import random_clip
from benchmarks.serving.h2client import H2Client, prefix
from videoitg.client.kserve import RemoteError, VideoITGClient
from videoitg.launch.ports import free_ports
from videoitg.launch.procfs import rss_mib
from videoitg.synthetic.sample import sample_video

ROOT = Path(__file__).resolve().parents[2]

ATTACKS = ("none", "overflow", "decode-flood", "http-nesting", "http-chunks", "big-json", "grpc-inputs", "dup-keys",
           "held-bodies", "abandoned", "idle-conns", "compressed", "grpc-fields", "containers", "malformed",
           "grpc-stalls", "grpc-held", "grpc-reset", "grpc-ping", "idle-crowd")
HTTP_ORDINARY = ("idle-crowd",)  # phases whose ordinary requests alternate HTTP and gRPC, each on a new connection
HEAD = b"POST /v2/models/videoitg/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def video_upload_head(video_bytes: int) -> bytes:
    """An inference request's HTTP head and valid JSON header, announcing a binary VIDEO of `video_bytes` bytes to
    follow: the front checks the header and passes the body on as it arrives."""
    header = json.dumps({"inputs": [{"name": "VIDEO", "datatype": "BYTES", "shape": [1, 1],
                                     "parameters": {"binary_data_size": video_bytes}}]}).encode()
    return HEAD + b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n%s" % (
        len(header), len(header) + video_bytes, header)


def overflow(grpc_url: str, stop: threading.Event) -> int:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    sent = 0
    while not stop.is_set():
        with grpc.insecure_channel(grpc_url) as ch:
            req = service_pb2.ModelInferRequest(model_name="videoitg_grounding")
            f = req.inputs.add(name="FEATURES", datatype="FP32")
            f.shape.extend([1, 2**27, 2**35, 1])  # 2^64 bytes: 0 in Triton's int64 size check
            i = req.inputs.add(name="INSTRUCTION", datatype="BYTES")
            i.shape.extend([1, 1])
            req.raw_input_contents.extend([b"", b"\x01\x00\x00\x00a"])
            try:
                service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=5)
            except grpc.RpcError:
                pass
            sent += 1
        stop.wait(0.5)
    return sent


def decode_flood(grpc_url: str, stop: threading.Event, video: bytes, width: int = 16) -> int:
    import tritonclient.grpc as g

    sent = 0
    while not stop.is_set():
        done = threading.Semaphore(0)
        try:
            c = g.InferenceServerClient(grpc_url)
            c.start_stream(callback=lambda result, error, done=done: done.release())
            for _ in range(width):
                t = g.InferInput("VIDEO", [1, 1], "BYTES")
                t.set_data_from_numpy(np.array([[video]], dtype=object))
                c.async_stream_infer("videoitg_decode", [t])
                sent += 1
            for _ in range(width):  # keep `width` in flight: one more per answer
                if stop.is_set() or not done.acquire(timeout=5):
                    break
                t = g.InferInput("VIDEO", [1, 1], "BYTES")
                t.set_data_from_numpy(np.array([[video]], dtype=object))
                c.async_stream_infer("videoitg_decode", [t])
                sent += 1
            c.stop_stream(cancel_requests=True)
            c.close()
        except Exception:  # the server restarting: try again
            stop.wait(0.5)
    return sent


def http_nesting(http_url: str, stop: threading.Event, chunked: bool = False) -> int:
    if chunked:
        request = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"1\r\n[\r\n" * 1_500_000 + b"0\r\n\r\n"
    else:
        body = b'{"inputs":' + b"[" * 1_000_000
        request = HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body
    return send_repeatedly(http_url, stop, request, 0.5)


def send_repeatedly(http_url: str, stop: threading.Event, request: bytes, pause_s: float = 0.2) -> int:
    """`request` on a new connection, the answer's first bytes read, again until `stop`."""
    host, port = http_url.rsplit(":", 1)
    sent = 0
    while not stop.is_set():
        try:
            with socket.create_connection((host, int(port)), timeout=30) as s:
                s.sendall(request)
                s.recv(100)
            sent += 1
        except OSError:
            pass
        stop.wait(pause_s)
    return sent


def big_json(http_url: str, stop: threading.Event) -> int:
    body = b'{"inputs":[{"name":"INSTRUCTION","datatype":"BYTES","shape":[1,1],"data":[' + b"[]," * 8_000_000 + \
        b'[]]}]}'
    return send_repeatedly(http_url, stop, HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def dup_keys(http_url: str, stop: threading.Event) -> int:
    body = b'{"inputs": 5, "inputs": [{"name": "INSTRUCTION", "datatype": "BYTES", "shape": [1, 1], "data": ["a"]}]}'
    return send_repeatedly(http_url, stop, HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body, 0.01)


def compressed(http_url: str, stop: threading.Event) -> int:
    body = gzip.compress(b"\0" * (256 << 20), compresslevel=9)
    head = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
    return send_repeatedly(http_url, stop, head % len(body) + body)


def containers(http_url: str, stop: threading.Event) -> int:
    body = b'{"inputs":[{"name":"INSTRUCTION","datatype":"BYTES","shape":[1,1],"data":[' + b"[[]]," * 200_000 + \
        b'[]]}]}'
    return send_repeatedly(http_url, stop, HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def malformed(http_url: str, stop: threading.Event) -> int:
    request = HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    return send_repeatedly(http_url, stop, request, 0.01)


def grpc_inputs(grpc_url: str, stop: threading.Event, fields: bool = False) -> int:
    """A ModelInfer of 3 million empty inputs, or (`fields`) of one input with 8 million shape dimensions."""
    import grpc
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name="videoitg")
    if fields:
        req.inputs.add(name="VIDEO", datatype="BYTES").shape.extend([1] * 8_000_000)
    else:
        for _ in range(3_000_000):
            req.inputs.add()
    raw = req.SerializeToString()
    sent = 0
    with grpc.insecure_channel(grpc_url, options=[("grpc.max_send_message_length", -1)]) as ch:
        call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        while not stop.is_set():
            try:
                call(raw, timeout=30)
            except grpc.RpcError:
                pass
            sent += 1
            stop.wait(0.2)
    return sent


def grpc_stalls(grpc_url: str, stop: threading.Event, conns: int = 6, streams: int = 128) -> int:
    """`conns` connections with `streams` ModelInfer calls each that send their headers (grpcio's client sends a
    streaming call's at once) and then wait until `stop`; a call the server ends is opened again at once."""
    import asyncio

    import grpc

    opened = 0

    async def run() -> None:
        async def never() -> AsyncIterator[bytes]:
            while not stop.is_set():
                await asyncio.sleep(0.2)
            yield b""

        async def hold(channel: grpc.aio.Channel) -> None:
            nonlocal opened
            while not stop.is_set():
                opened += 1
                try:
                    await channel.stream_unary("/inference.GRPCInferenceService/ModelInfer")(never())
                except grpc.aio.AioRpcError:
                    pass

        channels = [grpc.aio.insecure_channel(grpc_url, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(conns)]
        holders = [asyncio.create_task(hold(ch)) for ch in channels for _ in range(streams)]
        while not stop.is_set():
            await asyncio.sleep(0.2)
        for task in holders:
            task.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
        for ch in channels:
            await ch.close()

    asyncio.run(run())
    return opened


def grpc_held(grpc_url: str, stop: threading.Event, conns: int = 8, declared: int = 500 << 20,
              sent_bytes: int = 160 << 20) -> int:
    """`conns` connections each open a ModelInfer declaring a `declared`-byte message, send `sent_bytes` of it,
    then wait until the front ends the call; then again."""
    import asyncio

    opened = 0
    chunk = b"\0" * (1 << 20)

    async def one() -> None:
        nonlocal opened
        while not stop.is_set():
            client = None
            try:
                client = await H2Client().connect(grpc_url)
                opened += 1
                sid = client.open()
                await client.send(sid, prefix(declared))
                for _ in range(sent_bytes >> 20):
                    if "grpc-status" in client.trailers.get(sid, {}):
                        break
                    await client.send(sid, chunk)
                while not stop.is_set() and (await client.status(sid, 0.5))[0] == "open":
                    pass
            except Exception:  # the front ended the call or the connection mid-send: open another
                await asyncio.sleep(0.2)
            finally:
                if client is not None:
                    await client.close()

    async def run() -> None:
        await asyncio.gather(*(one() for _ in range(conns)))

    asyncio.run(run())
    return opened


def grpc_flood(grpc_url: str, stop: threading.Event, kind: str, frames: int = 5000) -> int:
    """`frames` PINGs (`kind` "ping") or calls opened and reset ("reset", every other one with its whole message
    sent first) in one write; again on a new connection once the front closes this one."""
    import asyncio

    sent = 0

    async def run() -> None:
        nonlocal sent
        while not stop.is_set():
            try:
                client = await H2Client().connect(grpc_url)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            for i in range(frames):
                if kind == "ping":
                    client.h2.ping(i.to_bytes(8, "big"))
                else:
                    sid = client.open("ServerLive")
                    if i % 2:  # its whole message first: the front starts its answer, then cancels it unrun
                        client.h2.send_data(sid, prefix(0), end_stream=True)
                    client.h2.reset_stream(sid)
            client.flush()
            sent += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(client.task), 5)
            await client.close()

    asyncio.run(run())
    return sent


def held_bodies(http_url: str, stop: threading.Event, conns: int = 4, declared: int = 500 << 20,
                sent_bytes: int = 160 << 20) -> int:
    """`conns` connections each declare `declared` bytes (a valid JSON header, then the video's bytes), send
    `sent_bytes`, then wait; reopened when closed."""
    host, port = http_url.rsplit(":", 1)
    chunk = b"\0" * (1 << 20)
    opened = 0

    def one() -> None:
        nonlocal opened
        while not stop.is_set():
            try:
                with socket.create_connection((host, int(port)), timeout=5) as s:
                    opened += 1
                    s.sendall(video_upload_head(declared))
                    for _ in range(sent_bytes >> 20):
                        s.sendall(chunk)
                    while not stop.is_set() and s.recv(4096):
                        pass
            except OSError:
                stop.wait(0.2)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return opened


def abandoned(http_url: str, stop: threading.Event, sent_bytes: int = 64 << 20) -> int:
    host, port = http_url.rsplit(":", 1)
    chunk, n = b"\0" * (1 << 20), 0
    while not stop.is_set():
        try:
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(video_upload_head(2 * sent_bytes))
                for _ in range(sent_bytes >> 20):
                    s.sendall(chunk)
            n += 1
        except OSError:
            stop.wait(0.2)
    return n


def still_open(opened: list[socket.socket]) -> list[socket.socket]:
    """The connections the server has not closed (what each sent us read and dropped); the closed ones closed here."""
    alive = []
    for s in opened:
        try:
            s.setblocking(False)
            if s.recv(1 << 16) == b"":
                s.close()
                continue
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            continue
        alive.append(s)
    return alive


def topped_up(opened: list[socket.socket], count: int, connect: Callable[[], socket.socket],
              stop: threading.Event) -> tuple[list[socket.socket], int]:
    """`opened` less the connections the server closed, topped up to `count` with `connect` (until it fails or
    `stop`), and how many were opened."""
    opened, added = still_open(opened), 0
    while len(opened) < count and not stop.is_set():
        try:
            opened.append(connect())
            added += 1
        except OSError:
            break
    return opened, added


def idle_conns(http_url: str, stop: threading.Event, count: int = 1100) -> int:
    """`count` connections that never send a byte, kept open (reopened once closed) until `stop`."""
    host, port = http_url.rsplit(":", 1)
    opened: list[socket.socket] = []
    total = 0
    while not stop.is_set():
        opened, added = topped_up(opened, count, lambda: socket.create_connection((host, int(port)), timeout=5),
                                  stop)
        total += added
        stop.wait(1.0)
    for s in opened:
        s.close()
    return total


def idle_crowd(http_url: str, stop: threading.Event, idle: int = 1000, flood: int = 2000) -> int:
    """`idle` keep-alive connections, each having had a health check answered, kept open (reopened once the server
    closes one), and each round `flood` connections opened and reset at once (SO_LINGER 0), until `stop`."""
    host, port = http_url.rsplit(":", 1)
    check = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
    reset = struct.pack("ii", 1, 0)
    def checked() -> socket.socket:
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(check)
        s.recv(1 << 16)
        return s

    opened: list[socket.socket] = []
    total = 0
    while not stop.is_set():
        opened, added = topped_up(opened, idle, checked, stop)
        total += added
        for _ in range(flood):
            if stop.is_set():
                break
            try:
                s = socket.create_connection((host, int(port)), timeout=5)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)
                s.close()
                total += 1
            except OSError:
                pass
        stop.wait(0.5)
    for s in opened:
        s.close()
    return total


def child_pid(serve_pid: int, front: bool) -> int | None:
    """The front (a child running videoitg.front) or tritonserver started by `videoitg serve`."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        mine = b"videoitg.front" in cmd if front else cmd.split(b"\0")[0].endswith(b"tritonserver")
        if mine and ppid == serve_pid:
            return int(proc.name)
    return None


def ordinary(urls: list[tuple[str, str]], seconds: float, sample: bytes, work: Path, seed0: int,
             fresh: bool = False) -> dict:
    """`seconds` of ordinary requests, alternately a cached video and a new one, each on the next of `urls`
    ((address, protocol)) in turn; `fresh`: each on a connection of its own (its latency includes connecting),
    else on one kept open for the phase."""
    ok = failed = 0
    lat: list[float] = []
    errors: dict[str, int] = {}
    end, i = time.monotonic() + seconds, 0
    with contextlib.ExitStack() as stack:
        kept = [] if fresh else [stack.enter_context(VideoITGClient(u, p, timeout_s=30)) for u, p in urls]
        while time.monotonic() < end:
            video = sample if i % 2 == 0 else random_clip(work / "c.mp4", seed=seed0 + i, seconds=2)
            k = i // 2 % len(urls)
            i += 1
            t0 = time.monotonic()
            try:
                with contextlib.nullcontext(kept[k]) if kept else VideoITGClient(*urls[k], timeout_s=30) as client:
                    client.infer(video, "a person walks")
                ok += 1
                lat.append(time.monotonic() - t0)
            except (RemoteError, OSError) as e:
                failed += 1
                key = str(e).splitlines()[0][:90]
                errors[key] = errors.get(key, 0) + 1
                time.sleep(0.2)
    lat.sort()
    return {"requests": ok + failed, "answered": ok, "availability": round(ok / max(1, ok + failed), 3),
            "p50_s": round(lat[len(lat) // 2], 3) if lat else None,
            "p99_s": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3) if lat else None,
            "max_s": round(lat[-1], 3) if lat else None, "errors": errors}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--attacks", nargs="*", default=list(ATTACKS), choices=ATTACKS)
    ap.add_argument("--out", type=Path, default=Path("availability.json"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/videoitg-availability"))
    ap.add_argument("--open-files", type=int, default=None, help="the server's open-file limit (soft and hard)")
    args = ap.parse_args()
    files = args.open_files
    args.work.mkdir(parents=True, exist_ok=True)
    ports = free_ports(3)
    serve = subprocess.Popen([sys.executable, "-m", "videoitg", "serve", "--target", "cpu",
                              "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
                              "--metrics-port", str(ports[2]), "--log", str(args.work / "server.log")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                             preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (files, files)))
                             if files else None)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(serve.stdout.readline, "")), daemon=True)
    reader.start()
    http_url, grpc_url = f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}"
    deadline = time.monotonic() + 300
    while not any(x.startswith("ready:") for x in lines):
        if serve.poll() is not None or time.monotonic() > deadline:
            print("".join(lines), file=sys.stderr)
            return 1
        time.sleep(0.5)
    path, _ = sample_video()
    sample = path.read_bytes()
    flood_clip = random_clip(args.work / "flood.mp4", seed=999, seconds=6)
    results = []
    try:
        for n, attack in enumerate(args.attacks):
            print(f"[{attack}] {args.seconds:.0f} s of ordinary requests ...", flush=True)
            stop = threading.Event()
            count: list[int] = []
            attacker = {"overflow": (overflow, (grpc_url, stop)),
                        "decode-flood": (decode_flood, (grpc_url, stop, flood_clip)),
                        "http-nesting": (http_nesting, (http_url, stop)),
                        "http-chunks": (http_nesting, (http_url, stop, True)),
                        "big-json": (big_json, (http_url, stop)), "grpc-inputs": (grpc_inputs, (grpc_url, stop)),
                        "dup-keys": (dup_keys, (http_url, stop)), "held-bodies": (held_bodies, (http_url, stop)),
                        "abandoned": (abandoned, (http_url, stop)),
                        "idle-conns": (idle_conns, (http_url, stop)),
                        "compressed": (compressed, (http_url, stop)),
                        "grpc-fields": (grpc_inputs, (grpc_url, stop, True)),
                        "containers": (containers, (http_url, stop)), "malformed": (malformed, (http_url, stop)),
                        "grpc-stalls": (grpc_stalls, (grpc_url, stop)),
                        "grpc-held": (grpc_held, (grpc_url, stop)),
                        "grpc-reset": (grpc_flood, (grpc_url, stop, "reset")),
                        "grpc-ping": (grpc_flood, (grpc_url, stop, "ping")),
                        "idle-crowd": (idle_crowd, (http_url, stop))}.get(attack)
            t = None
            if attacker:
                t = threading.Thread(target=lambda fn, a, out: out.append(fn(*a)), args=(*attacker, count), daemon=True)
            if t:
                t.start()
            pids = (child_pid(serve.pid, front=True), child_pid(serve.pid, front=False))
            peak, sampling = [0.0, 0.0], threading.Event()

            def sample_rss(pids: tuple[int | None, ...] = pids, peak: list[float] = peak,
                           done: threading.Event = sampling) -> None:
                while not done.wait(0.2):
                    peak[:] = [max(p, rss_mib(pid)) for p, pid in zip(peak, pids, strict=True)]

            sampler = threading.Thread(target=sample_rss, daemon=True)
            sampler.start()
            urls = [(http_url, "http"), (grpc_url, "grpc")] if attack in HTTP_ORDINARY else [(grpc_url, "grpc")]
            r = ordinary(urls, args.seconds, sample, args.work, seed0=1000 * n, fresh=attack in HTTP_ORDINARY)
            stop.set()
            if t:
                t.join(30)
            sampling.set()
            sampler.join(5)
            r = {"attack": attack, "attack_requests": count[0] if count else 0,
                 "ordinary_over": "+".join(p for _, p in urls), **r,
                 "front_peak_rss_mib": round(peak[0], 1), "tritonserver_peak_rss_mib": round(peak[1], 1)}
            print(json.dumps(r), flush=True)
            results.append(r)
            # Back to ready before the next phase (a restart or a stub reload may still be running).
            for _ in range(600):
                try:
                    with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=2):
                        break
                except OSError:
                    time.sleep(0.5)
    finally:
        serve.send_signal(2)
        serve.wait(60)
    restarts = [x.strip() for x in lines if "restart" in x]
    log = (args.work / "server.log").read_text(errors="replace").splitlines()
    ready = next((x.strip() for x in reversed(log) if x.startswith("videoitg front:")), "")
    out = {"date": time.strftime("%Y-%m-%d"), "seconds": args.seconds, "open_files": files, "front": ready,
           "results": results, "supervisor": restarts}
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}; supervisor lines: {len(restarts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
