"""The tritonserver command line the launcher runs: its own loopback ports behind the front, the restricted APIs
(admin, and inference with the front's key), the python backend's shared memory, the model control the stub watchdog
needs, and the memory pools of a GPU or a CPU machine."""

from __future__ import annotations

from pathlib import Path

from videoitg.front.config import INFER_KEY_HEADER
from videoitg.launch.options import ServerOptions, unload_s
from videoitg.launch.ports import LOOPBACK

# Restricted to requests that carry the launcher's key (Triton 2.51 `--http-restricted-api` /
# `--grpc-restricted-protocol`). model-repository: loading a model whose files come in the request runs code in the
# server; shared-memory: registering a region the server uses itself (a python stub's) crashed it; logging and
# trace: a client could fill the disk or silence the log. Inference takes a key of its own, which only the front (and
# the launcher) holds (`front.config.INFER_KEY_HEADER`); health, metadata, config and statistics stay open.
ADMIN_APIS = ("model-repository", "shared-memory", "logging", "trace")
ADMIN_HEADER = "videoitg-admin-key"
GRPC_ADMIN_HEADER = "triton-grpc-protocol-" + ADMIN_HEADER  # Triton prefixes restricted gRPC headers with this


def loads_every_model(options: ServerOptions) -> bool:
    """Whether the launcher chooses the model control (explicit, every model loaded at start): the operator's extra
    arguments name none."""
    return not any(a.startswith("--model-control-mode") for a in options.extra_args)


def tritonserver_command(binary: Path, repository: Path, backend_dir: Path, ports: tuple[int, int, int],
                         options: ServerOptions, *, server_id: str, shm_prefix: str, admin_key: str,
                         infer_key: str) -> list[str]:
    """tritonserver serving `repository` as `server_id` on its own loopback `ports` (HTTP, gRPC, metrics), the
    restricted APIs open with `admin_key` and inference with `infer_key`; the operator's extra arguments last."""
    o = options
    restricted = f"{','.join(ADMIN_APIS)}:{ADMIN_HEADER}={admin_key}"
    inference = f"inference:{INFER_KEY_HEADER}={infer_key}"
    args = [
        str(binary),
        f"--id={server_id}",
        f"--model-repository={repository}",
        f"--backend-directory={backend_dir}",
        f"--http-address={LOOPBACK}", f"--http-port={ports[0]}",
        f"--grpc-address={LOOPBACK}", f"--grpc-port={ports[1]}",
        f"--metrics-address={LOOPBACK}", f"--metrics-port={ports[2]}",
        "--allow-metrics=true",
        f"--allow-gpu-metrics={'true' if o.gpu else 'false'}",
        "--strict-readiness=true",
        # Every config.pbtxt is written whole (`repository.py`): without this, the python backend starts each
        # model's stub once more only to ask it to complete its config, importing torch twice per model
        "--disable-auto-complete-config",
        f"--exit-timeout-secs={unload_s(o)}",
        f"--log-verbose={o.log_verbose}",
        f"--backend-config=python,shm-default-byte-size={o.shm_default_bytes}",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        f"--http-restricted-api={restricted}",
        f"--grpc-restricted-protocol={restricted}",
        f"--http-restricted-api={inference}",
        f"--grpc-restricted-protocol={inference}",
    ]
    if o.stub_watchdog_s > 0 and loads_every_model(o):
        # Explicit control (every model loaded at start) so the watchdog may reload one model.
        args += ["--model-control-mode=explicit", "--load-model=*"]
    if o.gpu:  # one pool per GPU (a flag sizes one; `visible_gpus`)
        from videoitg.engines.runtimes import visible_gpus  # here: torch, which a CPU launcher never loads

        args += [f"--cuda-memory-pool-byte-size={i}:{o.cuda_pool_bytes}" for i in range(max(1, visible_gpus()))]
    else:
        # No pinned host memory without a GPU: skips a failing allocation attempt on CPU machines.
        args.append("--pinned-memory-pool-byte-size=0")
    return args + list(o.extra_args)
