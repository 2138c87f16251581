"""The launcher's ports: free ones, and who holds a busy one."""

from __future__ import annotations

import contextlib
import random
import socket

from videoitg.errors import VideoITGError
from videoitg.launch.procfs import first_ephemeral_port, port_holder

LOOPBACK = "127.0.0.1"


class ServerError(VideoITGError):
    """tritonserver did not start, died, or did not become ready."""


class PortBusyError(ServerError):
    """A public port another process listens on (`check_ports_free`)."""


class StartCancelled(ServerError):
    """A stop was asked for (SIGINT, SIGTERM) while tritonserver was starting: the start was given up."""


PORT_FLOOR = 10000  # free ports are picked from here up to the kernel's ephemeral range


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now (see `free_ports`)."""
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """`n` distinct ports nothing listens on right now, held together while they are picked. They come from below
    the kernel's ephemeral range: a port the OS hands out itself (to any process's outgoing connection, or its bind
    to port 0) could be taken in the moment before our server binds it. Random picks from the OS's own randomness,
    so processes with a seeded `random` do not pick alike; the OS picks where that range is too small."""
    lo = first_ephemeral_port()
    pick = random.SystemRandom()
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(50 * n):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                s.bind((host, pick.randrange(PORT_FLOOR, lo) if lo - PORT_FLOOR >= 1000 else 0))
            except OSError:
                continue
            ports.append(s.getsockname()[1])  # distinct: the sockets picked before still hold theirs
            if len(ports) == n:
                return ports
    raise ServerError(f"found only {len(ports)} of {n} free ports on {host}")


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
                raise PortBusyError(f"port {port} on {host} is not free ({e.strerror})"
                                  + (f": held by {holder}" if holder else "")
                                  + "; stop that process or choose other ports") from e
