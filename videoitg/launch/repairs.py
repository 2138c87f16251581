"""What the stub watchdog and supervision ask of a launched server (`supervise.Launched`), as `Repairs`, a base of
`server.TritonServer`: a model unloaded and loaded again (what the launcher generated written again first), the
front told of the requests a model's process took with it, queues and model states read, which process exited, a
look at or a kill of tritonserver and the front, and tritonserver stopped alone. It reads the launched server's
processes, log and repository, which `TritonServer` sets."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from videoitg.contract.repairs import REPAIRS_ENV, RepairsWritten
from videoitg.launch import binaries, health, procfs
from videoitg.launch.addresses import Addresses
from videoitg.launch.front_process import Notices
from videoitg.launch.generated import GeneratedRepository
from videoitg.launch.held import HeldInstances
from videoitg.launch.model_control import load_or_unload, model_states, waiting
from videoitg.launch.ports import ServerError
from videoitg.launch.processes import stop_in_order
from videoitg.launch.refusals import Context, explain_load
from videoitg.launch.server_log import ServerLog
from videoitg.launch.shm import need_text, remove_own_shared_memory
from videoitg.launch.supervise import Look, StubWatchdog


class Repairs(Addresses):
    repository: Path
    generated: GeneratedRepository | None
    install: binaries.TritonInstall
    _log: ServerLog
    _notices: Notices
    _public: tuple[str, ...]
    _proc: subprocess.Popen | None
    _front: subprocess.Popen | None
    _steps_repaired: RepairsWritten | None
    _log_start: int  # where the log of the current start begins
    shm_prefix: str  # the names of this server's regions in /dev/shm
    _looked_to: int  # how far `looks` read the log for a crash
    _held: HeldInstances  # the replaced model instances the current tritonserver keeps
    watchdog: StubWatchdog | None

    def _refusal_context(self) -> Context:
        """What explains a refused start or load: the repository and the shared memory its models need."""
        return Context(self.repository, lambda: need_text(self.repository, self.options.shm_default_bytes))

    def unload(self, model: str) -> None:
        load_or_unload(self.internal_grpc_url, model, "unload", self.admin_headers("grpc"))

    def restore_generated(self, before: str) -> Path:
        """What the launcher generated, checked and written again where it is damaged, said in the log and on
        stderr (`before`: what comes next): the repository (`generated`) and the python backend's copy. Returns the
        backend directory; ServerError where what is damaged cannot be written again."""
        if self.generated is not None:
            try:
                done = self.generated.restore()
            except OSError as e:
                raise ServerError(f"the model repository {self.repository} is damaged and cannot be written again "
                                  f"({e.filename or self.repository}: {e.strerror or e}); make its filesystem "
                                  "writable, or give --repo DIR on one") from None
            if done:
                self._log.say(f"{done} ({before})")
        return binaries.prepare_backend_dir(self.install, notice=lambda msg: self._log.say(f"{msg} ({before})"))

    def load(self, model: str) -> None:
        """Load a model that is not loaded (unloaded, or a load that failed), what the launcher generated restored
        first; a refused load is a ServerError saying its cause and what to do (`refusals.explain_load`)."""
        self.restore_generated(f"before loading '{model}'")
        try:
            load_or_unload(self.internal_grpc_url, model, "load", self.admin_headers("grpc"))
        except ServerError as e:
            raise ServerError(explain_load(str(e), model, self._refusal_context())) from None

    def requests_lost(self, model: str) -> None:
        """`model`'s instance was unloaded for a repair, its stub dead or killed: tritonserver 2.51 never answers the
        requests that instance held. For a model clients call, the front is told (a line on its stdin:
        `front.lost`), and answers each of those still in flight 503 / UNAVAILABLE; for a step, the top-level model,
        which sent them (`contract.repairs`). A notice that cannot be given now is said in the log, never waited
        for."""
        if model in self._public:
            self._notices.requests_lost(self._front, model, self.note)
        elif self._steps_repaired is not None:
            try:
                self._steps_repaired.repaired(model)
            except OSError as e:
                self.note(f"the top-level model was not told that '{model}' was repaired ({e}): the requests it "
                          "sent that step before wait for their deadline")

    def steps_repaired_environment(self, env: dict[str, str]) -> None:
        """Where the top-level model hears of a step's repair (`contract.repairs`), set in tritonserver's `env`: a
        private directory of the launcher's, made at each start (and removed at each stop). Without one (no
        temporary directory can be made) it is said once, and a request a repaired step held waits for its
        deadline."""
        try:
            self._steps_repaired = RepairsWritten.create()
        except OSError as e:
            self._steps_repaired = None
            self.note(f"no temporary directory for the steps' repairs ({e}): a request a repaired step held waits "
                      "for its deadline")
            return
        env[REPAIRS_ENV] = str(self._steps_repaired.path)

    def forget_steps_repaired(self) -> None:
        if self._steps_repaired is not None:
            self._steps_repaired.remove()
            self._steps_repaired = None

    def waiting(self) -> dict[str, int]:
        """Requests waiting in each model's queue, not yet executing; {} when the metrics do not answer."""
        return waiting(self._internal_metrics_url)

    def model_states(self) -> dict[str, str]:
        """Every model of the repository and its state; {} when the repository index does not answer."""
        return model_states(self.internal_http_url, self.admin_headers())

    def note(self, msg: str, who: str = "watchdog") -> None:
        """A line in the server log; one the log cannot take goes to stderr (`ServerLog.note`)."""
        self._log.note(msg, who)

    def looks(self) -> dict[str, Look]:
        """A look at tritonserver and the front (those running): their state, whether their own ports (HTTP, else
        metrics) answer at all, and the replaced model instances tritonserver keeps."""
        out = {}
        for name, proc, context, urls in (
                ("tritonserver", self._proc, None, (f"http://{self.internal_http_url}/v2/health/live",
                                                    self._internal_metrics_url)),
                ("front", self._front, self._own_tls, (f"{self.scheme}://{self.http_url}/v2/health/live",
                                                       self.metrics_url))):
            if proc is not None and proc.poll() is None:
                triton = name == "tritonserver"
                out[name] = Look(procfs.state(proc.pid), any(health.answers(url, context) for url in urls),
                                 self._crashed() if triton else None, self._kept(proc.pid) if triton else 0)
        return out

    def replaced(self, pids: set[int]) -> None:
        """The stubs a model had before the watchdog reloaded it (`held.HeldInstances.replaced`)."""
        self._held.replaced(pids)

    def _kept(self, pid: int) -> int:
        """The replaced model instances tritonserver `pid` keeps (`held`), each newly seen one said in the log; 0
        without a watchdog (nothing is repaired, so nothing is replaced)."""
        if self.watchdog is None:
            return 0
        try:
            for held in self._held.look(procfs.stubs(pid), time.monotonic()):
                self.note(self._held.said(held))
        except OSError as e:  # /dev/shm unreadable: the rest of the look still counts; each cause said once
            if self._held.unreadable != str(e):
                self._held.unreadable = str(e)
                self.note(f"kept instances not looked at: {e}")
        return len(self._held.held)

    def _crashed(self) -> int | None:
        """The fatal signal tritonserver's log reported since the last look at it, else None."""
        size = self._log.size()
        start, self._looked_to = max(self._looked_to, self._log_start), size
        return self._log.fatal_signal(start) if size > start else None

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

    def stop_tritonserver(self) -> None:
        """tritonserver stopped alone (its process group: the stubs too), its watchdog ended before another takes
        the same ports, what it left in /dev/shm removed."""
        proc, self._proc = self._proc, None
        stop_in_order(None, proc, self.options, self._notices.close, self.note)
        if self.watchdog is not None:
            self.watchdog.stop()
        remove_own_shared_memory(self.shm_prefix, self.note)
        self.forget_steps_repaired()

    def kill(self, name: str) -> None:
        """SIGKILL tritonserver (its process group: its stubs too) or the front; supervision starts it again."""
        proc = self._proc if name == "tritonserver" else self._front
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if name == "tritonserver":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
