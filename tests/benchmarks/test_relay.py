"""benchmarks/serving/relay.py, the byte relay that `bench_front.py --relay` measures as the floor under any front: what
it passes on arrives unchanged, both ways, and a half-close reaches the other side; and grpc_relay.py, grpcio's
pass-through, the floor under a front built on grpcio."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from tests.support import ROOT
from videoitg.front.grpc_policy import SERVICE
from videoitg.launch.ports import LOOPBACK, free_ports

RELAY = [sys.executable, "-m", "benchmarks.serving.relay"]  # run from ROOT, as the benchmarks run
GRPC_RELAY = [sys.executable, "-m", "benchmarks.serving.grpc_relay"]


def _digest_server(listener: socket.socket) -> None:
    """Per connection: read to the client's half-close, answer the SHA-256 of what came and its length, close."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            h, n = hashlib.sha256(), 0
            while chunk := conn.recv(1 << 16):
                h.update(chunk)
                n += len(chunk)
            conn.sendall(h.digest() + n.to_bytes(8, "big"))


def _connect(port: int, deadline_s: float = 10.0) -> socket.socket:
    end = time.monotonic() + deadline_s
    while True:
        try:
            return socket.create_connection((LOOPBACK, port), timeout=30)
        except ConnectionRefusedError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def test_bytes_pass_unchanged_both_ways_and_a_half_close_reaches_the_server() -> None:
    listener = socket.create_server((LOOPBACK, 0))
    threading.Thread(target=_digest_server, args=(listener,), daemon=True).start()
    (port,) = free_ports(1)
    relay = subprocess.Popen([*RELAY, str(port), f"{LOOPBACK}:{listener.getsockname()[1]}"], cwd=ROOT)
    try:
        for size in (0, 11, 24 << 20):  # nothing, a small request, more than the relay queues before pausing
            payload = os.urandom(size)
            with _connect(port) as s:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                answer = b""
                while chunk := s.recv(64):
                    answer += chunk
            assert answer == hashlib.sha256(payload).digest() + size.to_bytes(8, "big"), size
    finally:
        relay.kill()
        relay.wait()
        listener.close()


def test_grpc_relay_passes_each_call_on_unread_and_its_refusal_back() -> None:
    """benchmarks/serving/grpc_relay.py, the `grpcio` route: a message reaches the server byte for byte, the answer
    comes back, and a refusal keeps its code and text."""
    grpc = pytest.importorskip("grpc", reason="the serve extra (grpcio) is not installed")
    from concurrent import futures

    def infer(raw: bytes, context: Any) -> bytes:
        return hashlib.sha256(raw).digest()

    def live(raw: bytes, context: Any) -> bytes:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused here")

    methods = {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer),
               "ServerLive": grpc.unary_unary_rpc_method_handler(live)}
    server = grpc.server(futures.ThreadPoolExecutor(2), options=[("grpc.max_receive_message_length", -1)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
    up = server.add_insecure_port(f"{LOOPBACK}:0")
    server.start()
    (port,) = free_ports(1)
    relay = subprocess.Popen([*GRPC_RELAY, str(port), f"{LOOPBACK}:{up}"], cwd=ROOT)
    try:
        with grpc.insecure_channel(f"{LOOPBACK}:{port}", options=[("grpc.max_send_message_length", -1)]) as ch:
            grpc.channel_ready_future(ch).result(timeout=30)
            for size in (0, 11, 8 << 20):
                payload = os.urandom(size)
                assert ch.unary_unary(f"/{SERVICE}/ModelInfer")(payload, timeout=30) == \
                    hashlib.sha256(payload).digest(), size
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary(f"/{SERVICE}/ServerLive")(b"", timeout=30)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details() == "refused here"
    finally:
        relay.kill()
        relay.wait()
        server.stop(0)
