"""What the launcher is asked to run (`ServerOptions`: the public ports, tritonserver's settings, the front's and the
stub watchdog's), and how a stop spends its time (`exit_timeout_s`, `UNLOAD_S`, `STOP_GRACE_S`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from videoitg.launch.ports import LOOPBACK


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


STOP_GRACE_S = 5.0  # after the exit timeout, before SIGKILL
# tritonserver's own exit timeout, the last part of `exit_timeout_s`: it answers what is still in flight, then
# unloads the models; `benchmarks/serving/bench_stop.py` saw it stop in 3.0-4.0 s on the 2-core CPU box (RESULTS.md,
# "Stop with requests in flight").
UNLOAD_S = 8


def unload_s(options: ServerOptions) -> int:
    """tritonserver's `--exit-timeout-secs`: what it has to unload, once the front has answered what was in flight."""
    return min(options.exit_timeout_s, UNLOAD_S)
