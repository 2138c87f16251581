"""Start, watch and stop a real `tritonserver` process.

`TritonServer(repo).start()` picks free loopback ports (unless given), launches the server with the flags and
environment that make the python backend work (see `binaries`), waits until `/v2/health/ready` answers, and
`stop()` asks it to exit with SIGINT (Triton unloads models and ends the python stubs), escalating to SIGKILL of
the process group it created only if it hangs. Usable as a context manager.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from videoitg.errors import VideoITGError
from videoitg.serving import binaries

LOOPBACK = "127.0.0.1"


class ServerError(VideoITGError):
    """tritonserver did not start, died, or did not become ready."""


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now (the OS picks it; tiny race until the server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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
    # Unloading python models ends their stubs (torch teardown): seconds on a busy machine. Idle keep-alive HTTP
    # clients also hold the server this long, so clients should close their connections.
    exit_timeout_s: int = 30
    extra_args: list[str] = field(default_factory=list)
    # Triton 2.51 leaves a python-backend stub that died (OOM kill, crash) dead while the model still reports
    # ready, failing every request it gets. Every this many seconds, reload a model whose stub is gone (0: off).
    stub_watchdog_s: float = 1.0


class TritonServer:
    def __init__(self, model_repository: str | Path, options: ServerOptions | None = None,
                 log_path: str | Path | None = None):
        self.repository = Path(model_repository).resolve()
        self.options = options or ServerOptions()
        self.install = binaries.find_tritonserver()
        self._watchdog: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self.restarts = 0  # models reloaded by the stub watchdog
        self._log_path = Path(log_path) if log_path else None
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self.http_port = self.grpc_port = self.metrics_port = 0

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
    def _client_host(self) -> str:
        return LOOPBACK if self.options.host in ("0.0.0.0", "") else self.options.host

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def command(self, backend_dir: Path) -> list[str]:
        o = self.options
        args = [
            str(self.install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir}",
            f"--http-address={o.host}", f"--http-port={self.http_port}",
            f"--grpc-address={o.host}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={o.host}", f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            f"--allow-gpu-metrics={'true' if o.gpu else 'false'}",
            "--strict-readiness=true",
            f"--exit-timeout-secs={o.exit_timeout_s}",
            f"--log-verbose={o.log_verbose}",
            f"--backend-config=python,shm-default-byte-size={o.shm_default_bytes}",
        ]
        if o.stub_watchdog_s > 0 and not any(a.startswith("--model-control-mode") for a in o.extra_args):
            # Explicit control (every model loaded at start) so the watchdog may reload one model.
            args += ["--model-control-mode=explicit", "--load-model=*"]
        if o.gpu:
            args.append(f"--cuda-memory-pool-byte-size=0:{o.cuda_pool_bytes}")
        else:
            # No pinned host memory without a GPU: skips a failing allocation attempt on CPU machines.
            args.append("--pinned-memory-pool-byte-size=0")
        return args + list(o.extra_args)

    # ---- lifecycle ------------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 180.0) -> TritonServer:
        if self._proc is not None:
            raise ServerError("server already started")
        if not self.repository.is_dir():
            raise ServerError(f"model repository {self.repository} does not exist")
        o = self.options
        self.http_port = o.http_port or free_port(self._client_host)
        self.grpc_port = o.grpc_port or free_port(self._client_host)
        self.metrics_port = o.metrics_port or free_port(self._client_host)
        backend_dir = binaries.prepare_backend_dir(self.install)
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log_file = open(self._log_path, "ab")  # noqa: SIM115 - closed in stop()
        # Own session: a Ctrl-C in the terminal reaches only us, and we shut the server down in order.
        self._proc = subprocess.Popen(
            self.command(backend_dir), stdout=self._log_file, stderr=subprocess.STDOUT,
            env=binaries.server_env(self.install), start_new_session=True,
        )
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        if o.stub_watchdog_s > 0:
            self._watch_stop.clear()
            self._watchdog = threading.Thread(target=self._watch, name="triton-stub-watchdog", daemon=True)
            self._watchdog.start()
        return self

    # ---- python-backend stub watchdog ------------------------------------------------------------------------
    def stub_counts(self) -> Counter[str]:
        """Live python-backend stubs of this server per model (its own children only, from /proc)."""
        out: Counter[str] = Counter()
        pid = self.pid
        for p in Path("/proc").iterdir():
            if pid is None or not p.name.isdigit():
                continue
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid != pid:
                    continue
                argv = (p / "cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if argv and argv[0].endswith(b"triton_python_backend_stub") and len(argv) > 1:
                out[Path(argv[1].decode(errors="replace")).parent.parent.name] += 1  # <model>/<ver>/model.py
        return out

    def _watch(self) -> None:
        expected = self.stub_counts()
        while not self._watch_stop.wait(self.options.stub_watchdog_s):
            if not self.running:
                return
            now = self.stub_counts()
            for model in [m for m, n in expected.items() if now[m] < n]:
                self._log(f"python-backend stub of '{model}' died; reloading the model")
                try:
                    req = urllib.request.Request(f"http://{self.http_url}/v2/repository/models/{model}/load",
                                                 data=b"", method="POST")
                    with urllib.request.urlopen(req, timeout=600):
                        pass
                    self.restarts += 1
                except OSError as e:
                    self._log(f"reloading '{model}' failed: {e}")
            expected = expected | self.stub_counts()

    def _log(self, msg: str) -> None:
        if self._log_file is not None:
            self._log_file.write(f"videoitg watchdog: {msg}\n".encode())
            self._log_file.flush()

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise ServerError(f"tritonserver exited with code {code} while starting:\n{self.log_tail()}")
            if self._ready(url):
                return
            time.sleep(0.2)
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    @staticmethod
    def _ready(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def is_ready(self) -> bool:
        return self.running and self._ready(f"http://{self.http_url}/v2/health/ready")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> int | None:
        """Graceful stop (SIGINT, as Ctrl-C would), then SIGKILL of the server's own process group."""
        self._watch_stop.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=5)
        self._watchdog = None
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=self.options.exit_timeout_s + 10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)  # the group we created with start_new_session
                    proc.wait()
            code = proc.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def wait(self) -> int:
        """Block until the server exits on its own (foreground `videoitg serve`)."""
        if self._proc is None:
            raise ServerError("server not started")
        return self._proc.wait()

    def log_tail(self, n_chars: int = 4000) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        data = self._log_path.read_bytes()[-n_chars:]
        return data.decode(errors="replace")

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as r:
            return r.read().decode()

    def __enter__(self) -> TritonServer:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples whose labels include `labels`."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, lab = head.partition("{")
        if metric != name:
            continue
        got = dict(kv.split("=", 1) for kv in lab.rstrip("}").split(",") if "=" in kv)
        if all(got.get(k, "").strip('"') == v for k, v in labels.items()):
            total += float(value)
    return total
