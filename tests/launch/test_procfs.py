"""What the launcher reads of other processes in /proc (`videoitg.launch.procfs`)."""

from __future__ import annotations

import os
import resource
import socket
import threading

from videoitg.launch import procfs


def test_the_holder_of_a_port_is_found_while_its_descriptors_come_and_go() -> None:
    """Catches: a descriptor of the holder closed between listing its descriptors and reading one of them ended the
    reading of that whole process, so a busy holder (a test worker, a server opening files) was not named."""
    stop = threading.Event()

    def churn() -> None:  # descriptors below the socket's, opened and closed in bursts
        while not stop.is_set():
            for fd in [os.open(os.devnull, os.O_RDONLY) for _ in range(32)]:
                os.close(fd)

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    port = listening.getsockname()[1]
    high = min(1000, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 1)  # read after every churned descriptor
    os.dup2(listening.fileno(), high)
    listening.close()
    workers = [threading.Thread(target=churn) for _ in range(2)]
    with socket.socket(fileno=high):
        for w in workers:
            w.start()
        try:
            found = [procfs.port_holder(port) for _ in range(200)]
        finally:
            stop.set()
            for w in workers:
                w.join()
    missed = sum(not f.startswith(f"pid {os.getpid()} ") for f in found)
    assert missed == 0, f"the holder was not named in {missed} of 200 looks"
