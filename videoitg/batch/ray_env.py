"""Starting or joining Ray for a batch run. A local Ray listens on 127.0.0.1 only
(`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, read on import here and by every Ray process through the environment), with
no dashboard unless asked and no usage stats."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from videoitg.writes import open_output

PACKAGE = Path(__file__).resolve().parents[1]  # the `videoitg` folder (this file is videoitg/batch/ray_env.py)
REPO_ROOT = PACKAGE.parent


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: a private local Ray; else "auto" or "ray://host:10001" / "host:6379"
    num_cpus: int | None = None
    num_gpus: int | None = None
    dashboard: bool = False
    object_store_mb: int = 512
    ship_code: bool = False  # send this checkout to a cluster as a runtime_env py_module
    wait_for_workers_s: int = 600  # how long the pool may take to start (model loads, cluster scale-up)


def _configure_ray_data(wait_for_workers_s: int) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # we draw our own row-level bar on the driver
    ctx.print_on_execution_start = False
    # Start scoring only when the whole pool has loaded its model; otherwise the first actor up takes the
    # early units while the others are still loading, and a short run is scored by one worker.
    ctx.wait_for_min_actors_s = wait_for_workers_s
    for name in ("ray.data", "ray._private", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)


def init_ray(opts: RayOptions) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if opts.address is None:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray  # after the RAY_* variables above: Ray reads them on import
    from ray._private import ray_constants

    if ray.is_initialized():
        _configure_ray_data(opts.wait_for_workers_s)
        return
    runtime_env: dict = {}
    if opts.address is None:
        # Ray was maybe imported before we set the variable (e.g. by a test): the constant is read lazily.
        ray_constants.ENABLE_RAY_CLUSTER = False
        # Local workers must import this checkout, whatever the driver's sys.path trick was.
        pp = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        runtime_env["env_vars"] = {"PYTHONPATH": pp, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        ray.init(
            num_cpus=opts.num_cpus,
            num_gpus=opts.num_gpus,
            include_dashboard=opts.dashboard,
            dashboard_host="127.0.0.1",
            object_store_memory=opts.object_store_mb * 1024 * 1024,
            _node_ip_address="127.0.0.1",
            runtime_env=runtime_env,
            log_to_driver=True,
            logging_level=logging.WARNING,
        )
    else:
        if opts.ship_code:
            runtime_env["py_modules"] = [str(PACKAGE)]
        ray.init(address=opts.address, runtime_env=runtime_env or None, logging_level=logging.WARNING)
    _configure_ray_data(opts.wait_for_workers_s)


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


@contextlib.contextmanager
def ray_logs_to(path: Path) -> Iterator[None]:
    """Keep Ray's start-up and C++ messages out of the terminal: what is written to file descriptor 2 (Ray's C++
    core worker, gRPC, and Ray's Python log handlers, which hold the original sys.stderr) goes to `path`, while
    Python's `sys.stderr` (our progress bar and messages, tracebacks, and the workers' output Ray forwards to the
    driver, errors included) keeps the terminal. A no-op when sys.stderr is not the process's own (captured)."""
    if sys.stderr is not sys.__stderr__ or sys.__stderr__ is None:
        yield
        return
    # Ray and Ray Data set up their log handlers on import: import them here, once fd 2 is bound below
    import ray
    import ray.data  # noqa: F401
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    terminal = os.dup(2)
    old = sys.stderr
    log = open_output(path, append=True)  # never through a link planted in the output directory
    with os.fdopen(log, "ab"):
        os.dup2(log, 2)
        sys.stderr = open(terminal, "w", buffering=1, encoding=old.encoding or "utf-8",
                                           errors="backslashreplace", closefd=False)
        try:
            yield
        finally:
            sys.stderr.flush()
            sys.stderr = old
            os.dup2(terminal, 2)
            os.close(terminal)
