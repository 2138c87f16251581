"""What the launcher is asked to run (`ServerOptions`: the public ports, tritonserver's settings, the front's and the
stub watchdog's), and how a stop spends its time (`exit_timeout_s`, `UNLOAD_S`, `STOP_GRACE_S`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from videoitg.contract.access import SERVER_KEYS_ENV, KeyStore, SecretFile, check_tls_files, env_keys, read_keys
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
    # Who may use the public ports (docs/front.md, "Keys and TLS"): the clients' API keys (a file of one key a line,
    # re-read when it changes or on SIGHUP; None: $VIDEOITG_API_KEYS, else no key wanted), TLS on all three ports
    # (a PEM certificate chain and its unencrypted key; None: plain TCP), and the video-LLM's own key for the
    # answer endpoint (a file; None: none of the operator's).
    api_key_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    answer_api_key_file: str | None = None


STOP_GRACE_S = 5.0  # after the exit timeout, before SIGKILL
# tritonserver's own exit timeout, the last part of `exit_timeout_s`: it answers what is still in flight, then
# unloads the models; `benchmarks/serving/bench_stop.py` saw it stop in 3.0-4.0 s on the 2-core CPU box (RESULTS.md,
# "Stop with requests in flight").
UNLOAD_S = 8


def unload_s(options: ServerOptions) -> int:
    """tritonserver's `--exit-timeout-secs`: what it has to unload, once the front has answered what was in flight."""
    return min(options.exit_timeout_s, UNLOAD_S)


def check_access(options: ServerOptions, environ: Mapping[str, str] | None = None) -> None:
    """The key and certificate files readable and well formed before anything starts: InputError naming the file
    and what to do."""
    o = options
    KeyStore.configured(o.api_key_file, os.environ if environ is None else environ)
    check_tls_files(o.tls_cert_file, o.tls_key_file)
    if o.answer_api_key_file is not None:
        SecretFile(o.answer_api_key_file, "--answer-api-key-file")


def own_key(options: ServerOptions, environ: Mapping[str, str] | None = None) -> str | None:
    """A key the server takes now (the key file's first, else $VIDEOITG_API_KEYS's first): what the launcher sends
    asking its own front which server answers; None without keys."""
    if options.api_key_file is not None:
        return read_keys(options.api_key_file)[0]
    keys = env_keys(os.environ if environ is None else environ, SERVER_KEYS_ENV)
    return keys[0] if keys else None
