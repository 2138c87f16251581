"""Launch a real `tritonserver` behind the public front (`front/`) on loopback ports of its own, wait until it is
ready, and stop both in order; the restricted admin APIs open only with a key this object generates. Its parts:
`addresses` (ports, URLs, the launcher's keys), `repairs` (what supervision asks of it), `options`, `triton_command`
(tritonserver's command line), `front_process` (the front's), `processes` (starting and stopping both), `server_log`,
`health` (readiness), `model_control` (the watchdog's reads and reloads)."""

from __future__ import annotations

import secrets
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from videoitg.contract.access import SERVER_KEYS_ENV
from videoitg.launch import binaries, health
from videoitg.launch.front_process import Notices, front_command, start_front
from videoitg.launch.generated import GeneratedRepository
from videoitg.launch.health import StartProgress
from videoitg.launch.held import HeldInstances
from videoitg.launch.options import ServerOptions, check_access
from videoitg.launch.ports import ServerError, StartCancelled, check_ports_free, free_ports
from videoitg.launch.processes import signal_child, start_child, stop_in_order
from videoitg.launch.procfs import group_cpu_s
from videoitg.launch.refusals import LogRefusals, explain
from videoitg.launch.repairs import Repairs
from videoitg.launch.server_log import ServerLog
from videoitg.launch.shm import (
    SHM_PREFIX,
    launcher_tag,
    remove_own_shared_memory,
    remove_stale_shared_memory,
)
from videoitg.launch.supervise import StubWatchdog
from videoitg.launch.triton_command import loads_every_model, tritonserver_command

PORT_TRIES = 3  # starts when another process takes a port of tritonserver's before it binds it
# tritonserver 2.51's python backend now and then aborts with this while it loads models, an open upstream bug
# (triton-inference-server/server#8882): such a start is tried once more.
UPSTREAM_ABORT = "boost::interprocess::lock_exception"


class TritonServer(Repairs):
    """A tritonserver and its front, launched, watched and stopped; its addresses (`Addresses`) and what supervision
    asks of it (`Repairs`) are its bases."""

    def __init__(self, model_repository: str | Path, options: ServerOptions | None = None,
                 log_path: str | Path | None = None, generated: GeneratedRepository | None = None):
        """`generated`: the repository's files as the launcher wrote them, written again where they are damaged
        before every start and reload (`restore_generated`); None for a repository it did not write."""
        super().__init__(options or ServerOptions())
        self.repository = Path(model_repository).resolve()
        self.generated = generated
        self.install = binaries.find_tritonserver()
        self.watchdog: StubWatchdog | None = None
        self.shm_prefix = f"{SHM_PREFIX}{launcher_tag()}_{secrets.token_hex(4)}_"
        self._log = ServerLog(log_path)
        self._proc: subprocess.Popen | None = None
        self._front: subprocess.Popen | None = None
        self._public: tuple[str, ...] = ()  # the models the front lets clients call
        self._notices = Notices()  # the front's stdin: a notice written, or the pipe closed
        self._steps_repaired = None  # the top-level model's word of a step's repair, while the server runs
        self._log_start = self._looked_to = 0
        self._held = HeldInstances(self.shm_prefix)
        self.restarts = 0  # times `restart` started the server again

    @property
    def _loads_every_model(self) -> bool:
        """Whether the launcher chooses the model control (explicit, every model loaded at start)."""
        return loads_every_model(self.options)

    @property
    def log_path(self) -> Path | None:
        return self._log.path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def front_pid(self) -> int | None:
        return self._front.pid if self._front else None

    def command(self, backend_dir: Path) -> list[str]:
        return tritonserver_command(self.install.binary, self.repository, backend_dir, self._triton_ports,
                                    self.options, server_id=self.server_id, shm_prefix=self.shm_prefix,
                                    admin_key=self._admin_key, infer_key=self._infer_key)

    def front_command(self) -> list[str]:
        public = (self.http_port, self.grpc_port, self.metrics_port)
        command, self._public = front_command(self.repository, self.options, public, self._triton_ports)
        return command

    # ---- lifecycle ------------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 180.0, max_s: float | None = None,
              cancelled: Callable[[], bool] | None = None) -> TritonServer:
        """Launch and wait until ready. `timeout_s`: how long the start may stall (no log growth, no CPU time in
        tritonserver's processes) before it is given up; `max_s`: a bound on the whole wait (None: none);
        `cancelled`: polled while it waits, True gives the start up (StartCancelled; a SIGINT of `videoitg serve`)."""
        if self._proc is not None:
            raise ServerError("server already started")
        if self.generated is None and not self.repository.is_dir():
            raise ServerError(f"model repository {self.repository} does not exist")
        o = self.options
        check_access(o)  # a key or certificate file that cannot be used refuses the start, naming it
        check_ports_free(o.host, [o.http_port, o.grpc_port, o.metrics_port])
        picked = iter(free_ports(3, self._client_host))  # held together: three distinct ports
        self.http_port = o.http_port or next(picked)
        self.grpc_port = o.grpc_port or next(picked)
        self.metrics_port = o.metrics_port or next(picked)
        return self._launch(timeout_s, max_s, cancelled)

    def restart(self, timeout_s: float = 180.0, max_s: float | None = None,
                cancelled: Callable[[], bool] | None = None) -> TritonServer:
        """Start again on the same ports after the server exited (or stop it first): what a client knew still
        works. A front that exited alone is started again alone: tritonserver keeps its models loaded; a tritonserver
        that exited alone is started again alone: the front keeps its ports and clients' connections. Counted in
        `restarts` and noted in the server log; PortBusyError (uncounted) while another process holds a public
        port."""
        if self.exited == "front" and self._proc is not None and self._proc.poll() is None:
            return self._restart_front(timeout_s, max_s, cancelled)
        if self.exited == "tritonserver" and self._front is not None and self._front.poll() is None:
            return self._restart_tritonserver(timeout_s, max_s, cancelled)
        self.stop()
        check_ports_free(self.options.host, [self.http_port, self.grpc_port, self.metrics_port])
        self.restarts += 1
        self._log.open()
        self.note(f"restarting tritonserver on the same ports (restart {self.restarts})", who="supervisor")
        return self._launch(timeout_s, max_s, cancelled)

    def _restart_front(self, timeout_s: float, max_s: float | None,
                       cancelled: Callable[[], bool] | None) -> TritonServer:
        """The front started again on its ports before the running tritonserver; a front that does not become ready
        stops the whole server (the next restart starts both)."""
        if self._front is not None:
            self._front.wait()
            self._notices.close(self._front)
        check_ports_free(self.options.host, [self.http_port, self.grpc_port, self.metrics_port])
        self.restarts += 1
        self.note(f"restarting the front on the same ports (restart {self.restarts}); tritonserver keeps running",
                  who="supervisor")
        self._log_start = self._log.size()
        self._front = start_front(self.front_command(), self.front_environment(), self._log)
        try:
            self.wait_ready(timeout_s, max_s, cancelled)
        except BaseException:
            self.stop()
            raise
        return self

    def _restart_tritonserver(self, timeout_s: float, max_s: float | None,
                              cancelled: Callable[[], bool] | None) -> TritonServer:
        """tritonserver started again on its own ports behind the running front, which keeps its clients'
        connections and answers them 503 / UNAVAILABLE meanwhile, and liveness itself (a liveness probe would end
        a restart that takes a minute, as a GPU's engines load, by restarting the pod); what the old one left in
        /dev/shm (the instances it kept, `held`) is removed first. One that aborts with `UPSTREAM_ABORT` while it
        loads models is started once more, alone as well; one that does not become ready otherwise stops the whole
        server (the next restart starts both, on other ports of tritonserver's own)."""
        if self.watchdog is not None:
            self.watchdog.stop(wait=False)  # no reload while it stops; a reload under way fails with it
        self._notices.tritonserver_restarting(self._front, True, self.note)
        self.stop_tritonserver()
        self.restarts += 1
        self._log.open()
        self.note(f"restarting tritonserver on its ports (restart {self.restarts}); the front keeps running",
                  who="supervisor")
        try:
            self._tried_again(lambda: self._start_alone(timeout_s, max_s, cancelled), other_ports=False)
        except BaseException:
            self.stop()
            raise
        self._notices.tritonserver_restarting(self._front, False, self.note)
        return self

    def _start_alone(self, timeout_s: float, max_s: float | None,
                     cancelled: Callable[[], bool] | None) -> TritonServer:
        """tritonserver started behind the running front and waited for; stopped alone where it does not become
        ready."""
        self._log_start = self._log.size()
        try:
            self._start_tritonserver(self.restore_generated("before starting tritonserver"))
            self.wait_ready(timeout_s, max_s, cancelled)
        except BaseException:
            self.stop_tritonserver()
            raise
        self._watch_stubs()
        return self

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
        """Start tritonserver and the front, tried again where the start failed for a reason of the moment."""
        return self._tried_again(lambda: self._launch_once(timeout_s, max_s, cancelled), other_ports=True)

    def _tried_again(self, attempt: Callable[[], TritonServer], other_ports: bool) -> TritonServer:
        """`attempt()` (a start that leaves nothing of its own running where it fails), tried again where it failed
        for a reason of the moment: tritonserver aborting with `UPSTREAM_ABORT` while it loads models (once), and,
        with `other_ports` (the front starts too), a port of tritonserver's own that another process took between
        its pick and tritonserver's bind (other ports, up to `PORT_TRIES` starts)."""
        lost_ports, aborted = 0, False
        while True:
            start = self._log.size()
            try:
                return attempt()
            except StartCancelled:
                raise
            except ServerError:
                lost = self._log.lost_port(start, self._triton_ports) if other_ports else None
                if lost is not None and lost_ports < PORT_TRIES - 1:
                    lost_ports += 1
                    why = f"port {lost} was taken before tritonserver could bind it; starting on other ports"
                elif not aborted and UPSTREAM_ABORT in self._log.since(start):
                    aborted = True
                    why = f"tritonserver aborted while loading models ({UPSTREAM_ABORT}); starting it once more"
                else:
                    raise
            self._log.open()
            if other_ports:
                self.note(why, who="launcher")
            else:
                self.note(f"{why}, the front keeps running", who="supervisor")

    def _launch_once(self, timeout_s: float, max_s: float | None,
                     cancelled: Callable[[], bool] | None = None) -> TritonServer:
        remove_stale_shared_memory()
        self._log.open()
        self._log_start = self._log.size()
        backend_dir = self.restore_generated("before starting tritonserver")
        self._triton_ports = self._internal_ports()
        front = self.front_command()  # a repository the front cannot read fails here, before anything starts
        self._start_tritonserver(backend_dir)
        self._front = start_front(front, self.front_environment(), self._log)  # its output into the log
        return self._until_ready(timeout_s, max_s, cancelled)

    def _start_tritonserver(self, backend_dir: Path) -> None:
        log = self._log.file if self._log.file is not None else subprocess.DEVNULL
        env = binaries.server_env(self.install)
        env.pop(SERVER_KEYS_ENV, None)  # the clients' keys are the front's alone
        self.steps_repaired_environment(env)
        self._proc = start_child(self.command(backend_dir), env, log)
        self._held = HeldInstances(self.shm_prefix)

    def _until_ready(self, timeout_s: float, max_s: float | None,
                     cancelled: Callable[[], bool] | None) -> TritonServer:
        """Wait until ready (the whole server stopped where it does not become so), then watch its stubs."""
        try:
            self.wait_ready(timeout_s, max_s, cancelled)
        except BaseException:
            self.stop()
            raise
        self._watch_stubs()
        return self

    def _watch_stubs(self) -> None:
        if self.options.stub_watchdog_s > 0:
            self.watchdog = StubWatchdog(self, self.options.stub_watchdog_s, loads_unloaded=self._loads_every_model)

    # ---- readiness ------------------------------------------------------------------------------------------
    def wait_ready(self, timeout_s: float, max_s: float | None = None,
                   cancelled: Callable[[], bool] | None = None) -> None:
        """Wait while tritonserver is alive and progressing (`StartProgress`: its log grows or its processes use
        CPU) until it is ready through the front and its own metrics port answers; give up after `timeout_s` without
        progress or `max_s` in all, or with StartCancelled as soon as `cancelled()` says so."""
        progress = StartProgress(stall_s=timeout_s, max_s=max_s)
        url = f"{self.scheme}://{self.http_url}/v2/health/ready"
        refusals = LogRefusals(self.repository, self._log_start)
        while True:
            if cancelled is not None and cancelled():
                raise StartCancelled("a stop was asked for while tritonserver was starting")
            refusals.update(self._log.read_from(refusals.offset))
            for name, proc in (("tritonserver", self._proc), ("the front", self._front)):
                if proc is None or proc.poll() is not None:
                    code = None if proc is None else proc.returncode
                    raise ServerError(self._not_started(f"{name} exited with code {code} while starting", refusals))
            if self._ready(url, self._own_tls) and self._answered_by_us() and self._ready(self._internal_metrics_url):
                return
            if refusals.fatal is not None:  # tritonserver would wait for that model for ever
                raise ServerError(self._not_started("tritonserver waits for a model that cannot start", refusals))
            now = time.monotonic()
            progress.observe(self._log.size(), group_cpu_s(self._proc.pid), now)
            why = progress.expired(now)
            if why is not None:
                raise ServerError(self._not_started(f"tritonserver {why}", refusals))
            time.sleep(0.2)

    def _not_started(self, what: str, refusals: LogRefusals) -> str:
        """Why the start failed, in one line where the log names a refusal (`refusals.explain`): the model, the
        cause and what to do; else the log's last lines."""
        refusals.update(self._log.read_from(refusals.offset))  # the last lines of a process that just exited
        if refusals.found:
            return f"{what}: {explain(refusals.found, self._refusal_context(), self.log_path)}"
        return f"{what}:\n{self.log_tail()}"

    def _answered_by_us(self) -> bool:
        """Another server on our port (an orphan of an earlier run) must not pass for ours."""
        return health.answered_by(self.http_url, self.server_id, self.client_access().http_headers(), self._own_tls)

    @staticmethod
    def _ready(url: str, context: ssl.SSLContext | None = None) -> bool:
        return health.ready(url, context)

    def is_ready(self) -> bool:
        return self.running and health.ready(f"{self.scheme}://{self.http_url}/v2/health/ready", self._own_tls)

    def reload_access(self) -> None:
        """The front reads its key file and certificate again now (SIGHUP; it also does when they change)."""
        signal_child(self._front, signal.SIGHUP)

    @property
    def running(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self._proc, self._front))

    # ---- the end --------------------------------------------------------------------------------------------
    def stop(self) -> int | None:
        """Stop in order within `exit_timeout_s + STOP_GRACE_S` (plus the watchdog's current reload, if one is
        running): the front, then tritonserver, then its process group killed (`processes.stop_in_order`). Shared
        memory the server or its stubs left behind is removed. Returns tritonserver's exit code."""
        if self.watchdog is not None:
            self.watchdog.stop(wait=False)  # no reload while the server stops
        front, self._front = self._front, None
        proc, self._proc = self._proc, None
        code = stop_in_order(front, proc, self.options, self._notices.close, self.note)
        if self.watchdog is not None:
            self.watchdog.stop()
        remove_own_shared_memory(self.shm_prefix, self.note)
        self.forget_steps_repaired()
        self._log.close()
        return code

    def wait(self) -> int:
        """Block until the server exits on its own (foreground `videoitg serve`)."""
        if self._proc is None:
            raise ServerError("server not started")
        return self._proc.wait()

    def exit_timeout_expired(self) -> bool:
        """Whether the last stop reached the exit timeout with work still running (connections or requests in
        flight, which were then cut; tritonserver exits 1 for that alone)."""
        return self._log.exit_timeout_expired()

    def log_tail(self, n_chars: int = 4000) -> str:
        """The log's last `n_chars` bytes as text ('' where it cannot be read)."""
        return self._log.tail(n_chars)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5, context=self._own_tls) as r:
            return r.read().decode()

    def __enter__(self) -> TritonServer:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
