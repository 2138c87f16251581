"""The front's process (`python -m videoitg.front`, before tritonserver on the public ports): what it lets clients
call and how large a request may be, from the repository; its command line, environment and start; and the
launcher's notices on its stdin (`front.lost`: a model's requests in flight lost with its process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from videoitg.contract.protocol import OTHER_INPUTS_BYTES, RepoSummary
from videoitg.front.config import INFER_KEY_ENV, FrontConfig
from videoitg.front.lost import RESTARTED, RESTARTING, notice
from videoitg.front.policy import DEFAULT_MAX_TENSORS
from videoitg.front.process import environment
from videoitg.launch.options import ServerOptions
from videoitg.launch.ports import LOOPBACK
from videoitg.launch.processes import start_child
from videoitg.launch.server_log import ServerLog
from videoitg.request.limits import SERVED_MAX_VIDEO_BYTES


def public_models(repository: Path) -> tuple[str, ...]:
    """A generated repository's public model (its steps stay internal); in a repository without a summary, which an
    operator wrote, every model in it."""
    summary = RepoSummary.find(repository)
    if summary is not None:
        return (summary.public,)
    return tuple(sorted(p.parent.name for p in repository.glob("*/config.pbtxt")))


def request_bounds(repository: Path, models: tuple[str, ...]) -> tuple[int, int, int]:
    """(body bytes, inputs, outputs): the most a request to any of `models` may hold, from the repository summary;
    for a repository without one, the served video bound and DEFAULT_MAX_TENSORS."""
    summary = RepoSummary.find(repository)
    if summary is None:
        return SERVED_MAX_VIDEO_BYTES + OTHER_INPUTS_BYTES, DEFAULT_MAX_TENSORS, DEFAULT_MAX_TENSORS
    n_in, n_out = summary.signature_bound(models)
    return max(summary.request_bytes_bound(m) for m in models), n_in, n_out


def video_bound(repository: Path, models: tuple[str, ...]) -> int:
    """The largest video any of `models` takes as bytes, from the repository summary; for a repository without one,
    the served video bound."""
    summary = RepoSummary.find(repository)
    if summary is None:
        return SERVED_MAX_VIDEO_BYTES
    return max(summary.video_bytes_bound(m) for m in models)


def front_command(repository: Path, options: ServerOptions, public: tuple[int, int, int],
                  triton: tuple[int, int, int]) -> tuple[list[str], tuple[str, ...]]:
    """The front's command line, on the `public` ports (HTTP, gRPC, metrics) before tritonserver's own `triton`
    ones, and the models it lets clients call (`options.models`, else the repository's `public_models`)."""
    o = options
    models = o.models or public_models(repository)
    max_bytes, max_inputs, max_outputs = request_bounds(repository, models)
    cfg = FrontConfig(host=o.host, http_port=public[0], grpc_port=public[1], metrics_port=public[2],
                      triton_http=f"{LOOPBACK}:{triton[0]}", triton_grpc=f"{LOOPBACK}:{triton[1]}",
                      triton_metrics=f"{LOOPBACK}:{triton[2]}", models=models, max_request_bytes=max_bytes,
                      max_inputs=max_inputs, max_outputs=max_outputs, shutdown_s=float(o.exit_timeout_s),
                      answer_upstream=o.answer_upstream, answer_model=o.answer_model,
                      answer_timeout_s=o.answer_timeout_s, max_video_bytes=video_bound(repository, models),
                      page=o.page, launcher_notices=True, api_key_file=_absolute(o.api_key_file),
                      tls_cert_file=_absolute(o.tls_cert_file), tls_key_file=_absolute(o.tls_key_file),
                      answer_api_key_file=_absolute(o.answer_api_key_file))
    return [sys.executable, "-m", "videoitg.front", json.dumps(cfg.__dict__)], models


def _absolute(path: str | None) -> str | None:
    """A file the front reads again later, named as it was (links unresolved: a Kubernetes Secret's file is a link
    swapped at each update), from the root."""
    return None if path is None else os.path.abspath(path)


def start_front(command: list[str], env: dict[str, str], log: ServerLog) -> subprocess.Popen:
    """The front's process. Its output reaches the log through this process (`ServerLog.copy_from`): a print of the
    front's to a full disk would end it (tritonserver's own writes fail quietly), so a write the log cannot take is
    dropped there instead. Its stdin is a pipe for the launcher's notices (`Notices`), never blocking a writer."""
    front = start_child(command, env, subprocess.PIPE, subprocess.PIPE)
    assert front.stdin is not None
    os.set_blocking(front.stdin.fileno(), False)
    threading.Thread(target=log.copy_from, args=(front.stdout,), name="videoitg-front-output", daemon=True).start()
    return front


def front_environment(infer_key: str) -> dict[str, str]:
    """The front's process environment: this one's, with its memory settings and the inference key."""
    return {**environment(dict(os.environ)), INFER_KEY_ENV: infer_key}


class Notices:
    """The launcher's notices to the front, lines on its stdin (a pipe set not to block: a front that reads nothing
    never holds up a writer); a notice and the pipe's close never interleave."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def requests_lost(self, front: subprocess.Popen | None, model: str, note: Callable[[str], None]) -> None:
        """Tell the `front` that `model`'s requests in flight were lost with its process (it answers each of them
        503 / UNAVAILABLE). A notice the front cannot take now (gone, or reading nothing) is said by `note`, never
        waited for."""
        if (e := self._write(front, notice(model))) is not None:
            note(f"the front was not told that '{model}' lost its requests in flight ({e})")
            return
        note(f"the front answers the requests of '{model}' that were in flight: its process died with them")

    def tritonserver_restarting(self, front: subprocess.Popen | None, restarting: bool,
                                note: Callable[[str], None]) -> None:
        """Tell the `front` that tritonserver is being started again under supervision (`restarting`), or that it
        is ready again: meanwhile the front answers liveness itself (`lost.InFlight.restarting`)."""
        if (e := self._write(front, RESTARTING if restarting else RESTARTED)) is not None:
            note(f"the front was not told that tritonserver {'is starting again' if restarting else 'is ready'} "
                 f"({e})")

    def _write(self, front: subprocess.Popen | None, line: bytes) -> OSError | ValueError | None:
        """`line` written to the front's stdin, never waited for: None, or why it could not be."""
        with self._lock:
            try:
                if front is None or front.stdin is None or front.poll() is not None:
                    raise ProcessLookupError("the front is not running")
                os.write(front.stdin.fileno(), line)
            except (OSError, ValueError) as e:  # ValueError: its pipe closed by a stop
                return e
        return None

    def close(self, front: subprocess.Popen) -> None:
        if front.stdin is not None:
            with self._lock:
                front.stdin.close()
