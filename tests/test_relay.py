"""benchmarks/relay.py, the byte relay that `bench_front.py --relay` measures as the floor under any front: what it
passes on arrives unchanged, both ways, and a half-close reaches the other side."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from videoitg.serving.ports import LOOPBACK, free_ports

RELAY = Path(__file__).resolve().parents[1] / "benchmarks" / "relay.py"


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
    relay = subprocess.Popen([sys.executable, str(RELAY), str(port), f"{LOOPBACK}:{listener.getsockname()[1]}"])
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
