"""Launch a real `tritonserver` behind the public front (`front/`) on loopback ports of its own, wait until it is
ready, and stop both in order; the restricted admin APIs open only with a key this object generates."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videoitg.contract.protocol import OTHER_INPUTS_BYTES, RepoSummary
from videoitg.front.config import GRPC_INFER_KEY_HEADER, INFER_KEY_ENV, INFER_KEY_HEADER, FrontConfig
from videoitg.front.lost import notice
from videoitg.front.policy import DEFAULT_MAX_TENSORS
from videoitg.front.process import environment as front_environment
from videoitg.launch import binaries
from videoitg.launch.ports import LOOPBACK, ServerError, StartCancelled, check_ports_free, free_ports
from videoitg.launch.procfs import group_alive, group_cpu_s
from videoitg.launch.shm import SHM_PREFIX, launcher_tag, remove_stale_shared_memory
from videoitg.launch.supervise import StubWatchdog
from videoitg.request.limits import SERVED_MAX_VIDEO_BYTES

# Restricted to requests that carry the launcher's key (Triton 2.51 `--http-restricted-api` /
# `--grpc-restricted-protocol`). model-repository: loading a model whose files come in the request runs code in the
# server; shared-memory: registering a region the server uses itself (a python stub's) crashed it; logging and
# trace: a client could fill the disk or silence the log. Inference takes a key of its own, which only the front (and
# this object) holds (`front.config.INFER_KEY_HEADER`); health, metadata, config and statistics stay open.
ADMIN_APIS = ("model-repository", "shared-memory", "logging", "trace")
ADMIN_HEADER = "videoitg-admin-key"
GRPC_ADMIN_HEADER = "triton-grpc-protocol-" + ADMIN_HEADER  # Triton prefixes restricted gRPC headers with this
PR_SET_PDEATHSIG = 1


@dataclass
class StartProgress:
    """When a starting server counts as stalled: no growth of its log and no CPU time used by its processes for
    `stall_s` seconds (a 7B checkpoint takes minutes to load, a hung load shows neither), or `max_s` in all (None:
    no bound while it progresses)."""

    stall_s: float
    max_s: float | None = None
    started: float = field(default_factory=time.monotonic)
    last_change: float = field(default=0.0)
    _seen: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        self.last_change = self.started

    def observe(self, log_bytes: int, cpu_s: float, now: float) -> None:
        seen = (log_bytes, round(cpu_s, 2))
        if self._seen is not None and seen != self._seen:
            self.last_change = now
        self._seen = seen

    def expired(self, now: float) -> str | None:
        """Why the wait ends (None: keep waiting)."""
        if self.max_s is not None and now - self.started >= self.max_s:
            return f"not ready after {self.max_s:.0f} s"
        if now - self.last_change >= self.stall_s:
            return f"not ready, and neither its log nor its CPU time moved for {self.stall_s:.0f} s"
        return None


_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: the child only calls it
_launch_queue: queue.SimpleQueue = queue.SimpleQueue()
_launcher_lock = threading.Lock()
_launcher: threading.Thread | None = None


def _launch_loop() -> None:
    while True:
        fn, done = _launch_queue.get()
        try:
            done.set_result(fn())
        except BaseException as e:  # handed to the caller
            done.set_exception(e)


def in_launcher_thread(fn: Callable[[], Any]) -> Any:
    """Run `fn` (a Popen) in one thread that lives as long as the process, so PR_SET_PDEATHSIG fires when the
    process dies, not when the caller's thread ends."""
    global _launcher
    with _launcher_lock:
        if _launcher is None:
            _launcher = threading.Thread(target=_launch_loop, name="videoitg-launcher", daemon=True)
            _launcher.start()
    done: Future = Future()
    _launch_queue.put((fn, done))
    return done.result()


def _die_with_parent(parent: int) -> None:
    """In the child before exec: SIGTERM when the thread that started us ends (even by kill -9), so Triton shuts
    down in order (in-flight requests, stubs, shared memory) instead of holding the ports as an orphan. That
    thread is `_launcher`'s, which lives as long as the process: a server started from a short-lived thread must
    not be stopped when that thread returns."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the launcher died before prctl took effect
        os._exit(1)


@dataclass
class ServerOptions:
    host: str = LOOPBACK
    http_port: int = 0  # 0 = pick a free port
    grpc_port: int = 0
    metrics_port: int = 0
    log_verbose: int = 0
    gpu: bool = False
    # Python backend shared-memory region per model instance; grown on demand up to the /dev/shm size.
    shm_default_bytes: int = 16 << 20
    cuda_pool_bytes: int = 1 << 30  # per GPU, holds tensors passed between models on device (DLPack)
    # How long a stop gives requests in flight and the models' unloading (`stop()`); it kills the process group
    # `STOP_GRACE_S` later.
    exit_timeout_s: int = 15
    extra_args: list[str] = field(default_factory=list)
    # Seconds between the stub watchdog's looks (`videoitg.launch.supervise`; 0: off).
    stub_watchdog_s: float = 1.0
    # The models the front lets clients use (None: `public_models` of the repository).
    models: tuple[str, ...] | None = None
    # The answer endpoint on the front's HTTP port (docs/answer.md): the video-LLM's OpenAI-compatible base URL (None:
    # off), the model name forwarded requests get (None: the client's), the bound on its answers.
    answer_upstream: str | None = None
    answer_model: str | None = None
    answer_timeout_s: float = 300.0
    # The page at / of the HTTP port (docs/page.md): on, off, or None: on where `host` is a loopback address.
    page: bool | None = None


def _signal(proc: subprocess.Popen | None, sig: int) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def _wait(proc: subprocess.Popen | None, until: float) -> bool:
    """Wait for `proc` to exit until the monotonic time `until`; whether it has (True when there is none)."""
    if proc is None:
        return True
    try:
        proc.wait(timeout=max(0.0, until - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


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


STOP_GRACE_S = 5.0  # after the exit timeout, before SIGKILL
WATCH_TIMEOUT_S = 2.0  # a readiness, metrics or index request to a server that should answer in milliseconds
_PENDING = re.compile(r'^nv_inference_pending_request_count\{[^}]*model="([^"]+)"[^}]*\} (\S+)$', re.M)
PORT_TRIES = 3  # starts when another process takes a port of tritonserver's before it binds it
# tritonserver's own exit timeout, the last part of `exit_timeout_s`: it answers what is still in flight, then
# unloads the models; `benchmarks/bench_stop.py` saw it stop in 3.0-4.0 s on the 2-core CPU box (RESULTS.md,
# "Stop with requests in flight").
UNLOAD_S = 8


def unload_s(options: ServerOptions) -> int:
    """tritonserver's `--exit-timeout-secs`: what it has to unload, once the front has answered what was in flight."""
    return min(options.exit_timeout_s, UNLOAD_S)


class TritonServer:
    def __init__(self, model_repository: str | Path, options: ServerOptions | None = None,
                 log_path: str | Path | None = None):
        self.repository = Path(model_repository).resolve()
        self.options = options or ServerOptions()
        self.install = binaries.find_tritonserver()
        self.watchdog: StubWatchdog | None = None
        self.server_id = f"videoitg-{secrets.token_hex(8)}"  # `GET /v2` names it: proves the answering server is ours
        self._admin_key = secrets.token_urlsafe(32)
        self._infer_key = secrets.token_urlsafe(32)
        self.shm_prefix = f"{SHM_PREFIX}{launcher_tag()}_{secrets.token_hex(4)}_"
        self._log_path = Path(log_path) if log_path else None
        self._proc: subprocess.Popen | None = None
        self._front: subprocess.Popen | None = None
        self._public: tuple[str, ...] = ()  # the models the front lets clients call
        self._notices = threading.Lock()  # the front's stdin: a notice written, or the pipe closed
        self.restarts = 0  # times `restart` started the server again
        self._log_file = None
        self.http_port = self.grpc_port = self.metrics_port = 0
        self._triton_ports = (0, 0, 0)  # tritonserver's own http, grpc, metrics ports, on loopback

    @property
    def _loads_every_model(self) -> bool:
        """Whether the launcher chooses the model control (explicit, every model loaded at start): the operator's
        extra arguments name none."""
        return not any(a.startswith("--model-control-mode") for a in self.options.extra_args)

    # ---- addresses ------------------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{self._client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.metrics_port}/metrics"

    @property
    def internal_http_url(self) -> str:
        """tritonserver's own HTTP endpoint, behind the front: every model and (with `admin_headers`) the admin
        APIs. For the launcher and its tests only."""
        return f"{LOOPBACK}:{self._triton_ports[0]}"

    @property
    def internal_grpc_url(self) -> str:
        return f"{LOOPBACK}:{self._triton_ports[1]}"

    @property
    def _internal_metrics_url(self) -> str:
        """tritonserver starts its metrics service last: once it answers, tritonserver started all it serves."""
        return f"http://{LOOPBACK}:{self._triton_ports[2]}/metrics"

    @property
    def _client_host(self) -> str:
        return LOOPBACK if self.options.host in ("0.0.0.0", "") else self.options.host

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def front_pid(self) -> int | None:
        return self._front.pid if self._front else None

    def admin_headers(self, protocol: str = "http") -> dict[str, str]:
        """Headers that unlock the restricted APIs: for the launcher itself (the watchdog) and its tests only."""
        return {(GRPC_ADMIN_HEADER if protocol == "grpc" else ADMIN_HEADER): self._admin_key}

    def inference_headers(self, protocol: str = "http") -> dict[str, str]:
        """Headers that let an inference reach tritonserver's own ports: for callers that go there on purpose
        (tests of the steps, benchmarks of the front's cost); every other caller goes through the front."""
        return {(GRPC_INFER_KEY_HEADER if protocol == "grpc" else INFER_KEY_HEADER): self._infer_key}

    def front_environment(self) -> dict[str, str]:
        """The front's process environment: this one's, with its memory settings and the inference key."""
        return {**front_environment(dict(os.environ)), INFER_KEY_ENV: self._infer_key}

    def command(self, backend_dir: Path) -> list[str]:
        o = self.options
        restricted = f"{','.join(ADMIN_APIS)}:{ADMIN_HEADER}={self._admin_key}"
        inference = f"inference:{INFER_KEY_HEADER}={self._infer_key}"
        args = [
            str(self.install.binary),
            f"--id={self.server_id}",
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir}",
            f"--http-address={LOOPBACK}", f"--http-port={self._triton_ports[0]}",
            f"--grpc-address={LOOPBACK}", f"--grpc-port={self._triton_ports[1]}",
            f"--metrics-address={LOOPBACK}", f"--metrics-port={self._triton_ports[2]}",
            "--allow-metrics=true",
            f"--allow-gpu-metrics={'true' if o.gpu else 'false'}",
            "--strict-readiness=true",
            # Every config.pbtxt is written whole (`repository.py`): without this, the python backend starts each
            # model's stub once more only to ask it to complete its config, importing torch twice per model
            "--disable-auto-complete-config",
            f"--exit-timeout-secs={unload_s(o)}",
            f"--log-verbose={o.log_verbose}",
            f"--backend-config=python,shm-default-byte-size={o.shm_default_bytes}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--http-restricted-api={restricted}",
            f"--grpc-restricted-protocol={restricted}",
            f"--http-restricted-api={inference}",
            f"--grpc-restricted-protocol={inference}",
        ]
        if o.stub_watchdog_s > 0 and self._loads_every_model:
            # Explicit control (every model loaded at start) so the watchdog may reload one model.
            args += ["--model-control-mode=explicit", "--load-model=*"]
        if o.gpu:  # one pool per GPU (a flag sizes one; `visible_gpus`)
            from videoitg.engines.runtimes import visible_gpus  # here: torch, which a CPU launcher never loads

            args += [f"--cuda-memory-pool-byte-size={i}:{o.cuda_pool_bytes}" for i in range(max(1, visible_gpus()))]
        else:
            # No pinned host memory without a GPU: skips a failing allocation attempt on CPU machines.
            args.append("--pinned-memory-pool-byte-size=0")
        return args + list(o.extra_args)

    def front_command(self) -> list[str]:
        o = self.options
        t = self._triton_ports
        models = self._public = o.models or public_models(self.repository)
        max_bytes, max_inputs, max_outputs = request_bounds(self.repository, models)
        cfg = FrontConfig(host=o.host, http_port=self.http_port, grpc_port=self.grpc_port,
                          metrics_port=self.metrics_port, triton_http=f"{LOOPBACK}:{t[0]}",
                          triton_grpc=f"{LOOPBACK}:{t[1]}", triton_metrics=f"{LOOPBACK}:{t[2]}", models=models,
                          max_request_bytes=max_bytes,
                          max_inputs=max_inputs, max_outputs=max_outputs, shutdown_s=float(o.exit_timeout_s),
                          answer_upstream=o.answer_upstream, answer_model=o.answer_model,
                          answer_timeout_s=o.answer_timeout_s, max_video_bytes=video_bound(self.repository, models),
                          page=o.page, launcher_notices=True)
        return [sys.executable, "-m", "videoitg.front", json.dumps(cfg.__dict__)]

    # ---- lifecycle ------------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 180.0, max_s: float | None = None,
              cancelled: Callable[[], bool] | None = None) -> TritonServer:
        """Launch and wait until ready. `timeout_s`: how long the start may stall (no log growth, no CPU time in
        tritonserver's processes) before it is given up; `max_s`: a bound on the whole wait (None: none);
        `cancelled`: polled while it waits, True gives the start up (StartCancelled; a SIGINT of `videoitg serve`)."""
        if self._proc is not None:
            raise ServerError("server already started")
        if not self.repository.is_dir():
            raise ServerError(f"model repository {self.repository} does not exist")
        o = self.options
        check_ports_free(o.host, [o.http_port, o.grpc_port, o.metrics_port])
        picked = iter(free_ports(3, self._client_host))  # held together: three distinct ports
        self.http_port = o.http_port or next(picked)
        self.grpc_port = o.grpc_port or next(picked)
        self.metrics_port = o.metrics_port or next(picked)
        return self._launch(timeout_s, max_s, cancelled)

    def restart(self, timeout_s: float = 180.0, max_s: float | None = None,
                cancelled: Callable[[], bool] | None = None) -> TritonServer:
        """Start again on the same ports after the server exited (or stop it first): what a client knew still
        works. Counted in `restarts` and noted in the server log."""
        self.stop()
        self.restarts += 1
        self._open_log()
        self.note(f"restarting tritonserver on the same ports (restart {self.restarts})", who="supervisor")
        check_ports_free(self.options.host, [self.http_port, self.grpc_port, self.metrics_port])
        return self._launch(timeout_s, max_s, cancelled)

    def _open_log(self) -> None:
        """The server log, opened for appending, unbuffered: a write that fails (a full disk) leaves nothing behind
        to fail again. A log that cannot be opened is said on stderr and tritonserver's output discarded: the
        server runs without its log rather than not at all."""
        if self._log_file is not None:
            return
        try:
            if self._log_path is None:
                fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
                os.close(fd)
                self._log_path = Path(name)
            self._log_file = open(self._log_path, "ab", buffering=0)  # closed in stop()
        except OSError as e:
            print(f"videoitg launcher: cannot open the server log {self._log_path or 'in ' + tempfile.gettempdir()}"
                  f" ({e.strerror or e}); tritonserver's output is discarded", file=sys.stderr, flush=True)

    def _internal_ports(self) -> tuple[int, int, int]:
        """tritonserver's three loopback ports: free now, and none of the public ones, which the front binds while
        tritonserver starts (a public port the OS handed back once may be handed out again)."""
        public = {self.http_port, self.grpc_port, self.metrics_port}
        while True:
            ports = free_ports(3)
            if public.isdisjoint(ports):
                return ports[0], ports[1], ports[2]

    def _launch(self, timeout_s: float, max_s: float | None = None,
                cancelled: Callable[[], bool] | None = None) -> TritonServer:
        """Start tritonserver and the front. A port of tritonserver's own that another process took between its
        pick and tritonserver's bind is picked again, up to `PORT_TRIES` times."""
        for _ in range(PORT_TRIES - 1):
            start = self._log_bytes()
            try:
                return self._launch_once(timeout_s, max_s, cancelled)
            except StartCancelled:
                raise
            except ServerError:
                lost = self._lost_port(start)
                if lost is None:
                    raise
            self._open_log()
            self.note(f"port {lost} was taken before tritonserver could bind it; starting on other ports")
        return self._launch_once(timeout_s, max_s, cancelled)

    def _lost_port(self, since: int) -> int | None:
        """One of tritonserver's own ports it found in use, from the log written since byte `since`."""
        log = self._log_since(since)
        for m in re.finditer(r"Socket '[^']*:(\d+)' already in use", log):
            if int(m.group(1)) in self._triton_ports:
                return int(m.group(1))
        return None

    def _launch_once(self, timeout_s: float, max_s: float | None,
                     cancelled: Callable[[], bool] | None = None) -> TritonServer:
        o = self.options
        remove_stale_shared_memory()
        self._open_log()
        backend_dir = binaries.prepare_backend_dir(self.install, notice=lambda msg: self.note(msg, who="launcher"))
        self._triton_ports = self._internal_ports()
        # Own sessions: a Ctrl-C in the terminal reaches only us, and we shut the server down in order.
        parent = os.getpid()
        log = self._log_file if self._log_file is not None else subprocess.DEVNULL

        def popen(cmd: list[str], env: dict[str, str] | None, out: Any, stdin: Any = None) -> subprocess.Popen:
            return in_launcher_thread(lambda: subprocess.Popen(
                cmd, stdin=stdin, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                preexec_fn=lambda: _die_with_parent(parent),
            ))

        front = self.front_command()  # a repository the front cannot read fails here, before anything starts
        self._proc = popen(self.command(backend_dir), binaries.server_env(self.install), log)
        # The front's output reaches the log through this process: a print of the front's to a full disk would
        # end it (tritonserver's own writes fail quietly), so a write the log cannot take is dropped here instead.
        # Its stdin is a pipe for the launcher's notices (`requests_lost`), never blocking a writer.
        self._front = popen(front, self.front_environment(), subprocess.PIPE, subprocess.PIPE)
        assert self._front.stdin is not None
        os.set_blocking(self._front.stdin.fileno(), False)
        threading.Thread(target=self._relay, args=(self._front.stdout,), name="videoitg-front-output",
                         daemon=True).start()
        try:
            self.wait_ready(timeout_s, max_s, cancelled)
        except BaseException:
            self.stop()
            raise
        if o.stub_watchdog_s > 0:
            self.watchdog = StubWatchdog(self, o.stub_watchdog_s, loads_unloaded=self._loads_every_model)
        return self

    def _admin(self, model: str, action: str) -> None:
        """Over gRPC: tritonserver serves a model load on the thread of the connection that asked, and its HTTP
        threads also carry the front's pooled connections (health checks would wait behind a reload)."""
        # the serve extra; `videoitg serve --help` runs without it
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        with grpcclient.InferenceServerClient(self.internal_grpc_url) as client:
            call = client.load_model if action == "load" else client.unload_model
            try:
                call(model, headers=self.admin_headers("grpc"), client_timeout=600)
            except InferenceServerException as e:
                raise ServerError(f"{action} of '{model}' failed: {e.message()}") from None

    def unload(self, model: str) -> None:
        self._admin(model, "unload")

    def load(self, model: str) -> None:
        """Load a model that is not loaded (unloaded, or a load that failed)."""
        self._admin(model, "load")

    def requests_lost(self, model: str) -> None:
        """`model`'s instance was unloaded for a repair, its stub dead or killed: tritonserver 2.51 never answers the
        requests that instance held. For a model clients call, the front is told (a line on its stdin:
        `front.lost`), and answers each of those still in flight 503 / UNAVAILABLE; a step has no client there. A
        notice the front cannot take now (gone, or reading nothing) is said in the log, never waited for."""
        if model not in self._public:
            return
        with self._notices:
            front = self._front
            try:
                if front is None or front.stdin is None or front.poll() is not None:
                    raise ProcessLookupError("the front is not running")
                os.write(front.stdin.fileno(), notice(model))
            except (OSError, ValueError) as e:  # ValueError: its pipe closed by a stop
                self.note(f"the front was not told that '{model}' lost its requests in flight ({e})")
                return
        self.note(f"the front answers the requests of '{model}' that were in flight: its process died with them")

    def _internal_get(self, url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}),
                                    timeout=WATCH_TIMEOUT_S) as r:
            return r.read()

    def waiting(self) -> dict[str, int]:
        """Requests waiting in each model's queue, not yet executing (tritonserver's
        `nv_inference_pending_request_count`, summed over versions); {} when its metrics do not answer."""
        try:
            text = self._internal_get(self._internal_metrics_url).decode(errors="replace")
        except (OSError, ValueError):
            return {}
        out: dict[str, int] = {}
        for m in _PENDING.finditer(text):
            out[m.group(1)] = out.get(m.group(1), 0) + int(float(m.group(2)))
        return out

    def model_states(self) -> dict[str, str]:
        """Every model of the repository and its state (READY, LOADING, UNLOADING, UNAVAILABLE; '' for one never
        loaded), from tritonserver's repository index (with the launcher's key); {} when it does not answer."""
        try:
            index = json.loads(self._internal_get(f"http://{self.internal_http_url}/v2/repository/index", b"{}",
                                                  self.admin_headers()))
        except (OSError, ValueError):
            return {}
        return {m["name"]: m.get("state", "") for m in index if isinstance(m, dict) and "name" in m}

    def _relay(self, pipe: Any) -> None:
        """Copy the front's output into the log until the front ends; what the log cannot take is dropped."""
        fd = pipe.fileno()
        try:
            while chunk := os.read(fd, 1 << 16):
                log = self._log_file
                if log is not None:
                    with contextlib.suppress(OSError, ValueError):  # ValueError: closed by a stop
                        log.write(chunk)
        except OSError:
            pass
        finally:
            pipe.close()

    def note(self, msg: str, who: str = "watchdog") -> None:
        """A line in the server log. Supervision never depends on it: a line the log cannot take (a full disk, a
        file-size limit) goes to stderr instead."""
        line = f"videoitg {who}: {msg}\n"
        try:
            if self._log_file is None:
                raise OSError("it could not be opened")
            self._log_file.write(line.encode())
        except (OSError, ValueError) as e:  # ValueError: closed under us by a stop
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"{line.rstrip()} (the server log {self._log_path} did not take it: "
                                 f"{getattr(e, 'strerror', None) or e})\n")
                sys.stderr.flush()

    def wait_ready(self, timeout_s: float, max_s: float | None = None,
                   cancelled: Callable[[], bool] | None = None) -> None:
        """Wait while tritonserver is alive and progressing (`StartProgress`: its log grows or its processes use
        CPU) until it is ready through the front and its own metrics port answers; give up after `timeout_s` without
        progress or `max_s` in all, or with StartCancelled as soon as `cancelled()` says so."""
        progress = StartProgress(stall_s=timeout_s, max_s=max_s)
        url = f"http://{self.http_url}/v2/health/ready"
        while True:
            if cancelled is not None and cancelled():
                raise StartCancelled("a stop was asked for while tritonserver was starting")
            for name, proc in (("tritonserver", self._proc), ("the front", self._front)):
                if proc is None or proc.poll() is not None:
                    code = None if proc is None else proc.returncode
                    raise ServerError(f"{name} exited with code {code} while starting:\n{self.log_tail()}")
            if self._ready(url) and self._answered_by_us() and self._ready(self._internal_metrics_url):
                return
            now = time.monotonic()
            progress.observe(self._log_bytes(), group_cpu_s(self._proc.pid), now)
            why = progress.expired(now)
            if why is not None:
                raise ServerError(f"tritonserver {why}:\n{self.log_tail()}")
            time.sleep(0.2)

    def _log_bytes(self) -> int:
        try:
            return self._log_path.stat().st_size if self._log_path is not None else 0
        except OSError:
            return 0

    def _answered_by_us(self) -> bool:
        """Another server on our port (an orphan of an earlier run) must not pass for ours."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2", timeout=2) as r:
                return json.loads(r.read()).get("name") == self.server_id
        except (OSError, ValueError):
            return False

    @staticmethod
    def _ready(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=WATCH_TIMEOUT_S) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def is_ready(self) -> bool:
        return self.running and self._ready(f"http://{self.http_url}/v2/health/ready")

    @property
    def running(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self._proc, self._front))

    @property
    def exited(self) -> str:
        """Which process exited on its own ('tritonserver', 'front'; `exit_code` says how); '' while both run."""
        for name, proc in (("tritonserver", self._proc), ("front", self._front)):
            if proc is not None and proc.poll() is not None:
                return name
        return ""

    @property
    def exit_code(self) -> int | None:
        """The exit status of the process that exited on its own (None while both run, and after `stop`)."""
        proc = {"tritonserver": self._proc, "front": self._front}.get(self.exited)
        return proc.poll() if proc is not None else None

    def stop(self) -> int | None:
        """Stop in order, within `exit_timeout_s + STOP_GRACE_S` (plus the watchdog's current reload, if one is
        running): the front first (it accepts nothing new, closes idle connections at once and answers the requests
        in flight), then tritonserver with SIGINT (as Ctrl-C would) once the front is done, or `unload_s` before the
        exit timeout; then SIGKILL of the server's own process group. Shared memory the server or its stubs left
        behind is removed. Returns tritonserver's exit code."""
        if self.watchdog is not None:
            self.watchdog.stop(wait=False)  # no reload while the server stops
        front, self._front = self._front, None
        proc, self._proc = self._proc, None
        t0 = time.monotonic()
        deadline = t0 + self.options.exit_timeout_s + STOP_GRACE_S
        # tritonserver refuses a request's next step ("Server not ready") from its SIGINT on: it waits until the
        # front has answered everything (a gRPC request in flight would be lost, an HTTP one delayed).
        _signal(front, signal.SIGTERM)
        _wait(front, t0 + self.options.exit_timeout_s - unload_s(self.options))
        _signal(proc, signal.SIGINT)
        if front is not None and not _wait(front, deadline):
            front.kill()
            front.wait()
        if front is not None and front.stdin is not None:
            with self._notices:
                front.stdin.close()
        code = None
        if proc is not None:
            if not _wait(proc, deadline):
                self.note(f"tritonserver did not exit within {deadline - t0:.0f} s of the stop; killing its process "
                          "group")
            # The stubs are in the server's process group: none may outlive it (a stub busy in a request keeps
            # running after Triton's exit timeout, holding its shared memory).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = proc.returncode
            grace_end = time.monotonic() + STOP_GRACE_S
            while group_alive(proc.pid) and time.monotonic() < grace_end:  # SIGKILL lands asynchronously
                time.sleep(0.05)
        if self.watchdog is not None:
            self.watchdog.stop()
        for f in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            with contextlib.suppress(OSError):
                f.unlink()
                self.note(f"removed leftover shared memory {f.name}")
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def wait(self) -> int:
        """Block until the server exits on its own (foreground `videoitg serve`)."""
        if self._proc is None:
            raise ServerError("server not started")
        return self._proc.wait()

    def exit_timeout_expired(self) -> bool:
        """Whether the last stop reached the exit timeout with work still running (connections or requests in
        flight, which were then cut; tritonserver exits 1 for that alone)."""
        tail = self.log_tail()
        return "Exit timeout expired" in tail[tail.rfind("Signal (2) received"):]

    def log_tail(self, n_chars: int = 4000) -> str:
        """The log's last `n_chars` bytes as text ('' where it cannot be read)."""
        try:
            size = self._log_path.stat().st_size if self._log_path is not None else 0
        except OSError:
            return ""
        return self._log_since(max(0, size - n_chars))

    def _log_since(self, offset: int) -> str:
        """The log from byte `offset` on, read only where it is a regular file ('' where it cannot be read)."""
        try:
            if self._log_path is None or not self._log_path.is_file():
                return ""
            with self._log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as r:
            return r.read().decode()

    def __enter__(self) -> TritonServer:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
