"""The launcher's ports: free ones, and who holds a busy one."""

from __future__ import annotations

import contextlib
import socket

from videoitg.errors import VideoITGError
from videoitg.serving.procfs import port_holder

LOOPBACK = "127.0.0.1"


class ServerError(VideoITGError):
    """tritonserver did not start, died, or did not become ready."""


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now (the OS picks it; tiny race until the server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """`n` distinct free ports (held together while the OS picks them)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]


def check_ports_free(host: str, ports: list[int]) -> None:
    """Refuse ports another process listens on, naming it, before anything is built or loaded."""
    for port in ports:
        if not port:
            continue
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton binds: TIME_WAIT is no conflict
            try:
                s.bind((host, port))
            except OSError as e:
                holder = port_holder(port)
                raise ServerError(f"port {port} on {host} is not free ({e.strerror})"
                                  + (f": held by {holder}" if holder else "")
                                  + "; stop that process or choose other ports") from e
