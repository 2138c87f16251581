"""What a `videoitg perf` run measured, written with its figures in perf.json: the server and its deployment (every
model's instances, batching and parameters: decoder, precision, runtimes, the checkpoint and its identity), the
machine the measurement ran on, the perf_analyzer used, and the videos."""

from __future__ import annotations

import datetime
import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from videoitg.perf.stats import STEPS

GPU_FIELDS = ("name", "driver_version", "clocks.sm", "clocks.max.sm", "power.limit")


def deployment(client: Any, top: str) -> dict[str, Any]:
    """Each served model's instances, batching, transaction policy and parameters, as its config says."""
    out = {}
    for m in (top, *STEPS):
        cfg = client.model_config(m)
        if not cfg:
            continue
        out[m] = {"instances": [f"{g.get('count', 1)}x {g.get('kind', 'KIND_AUTO')}"
                                for g in cfg.get("instance_group") or []],
                  "max_batch_size": int(cfg.get("max_batch_size", 0)),
                  "dynamic_batching": "dynamic_batching" in cfg,
                  "decoupled": bool((cfg.get("model_transaction_policy") or {}).get("decoupled")),
                  "parameters": {k: v.get("string_value", "") for k, v in sorted((cfg.get("parameters") or {})
                                                                                 .items())}}
    return out


def machine() -> dict[str, Any]:
    """The machine the measurement ran on (the client's; the server's too when it is served on loopback): CPU model
    and cores, and each GPU nvidia-smi sees (name, driver, clocks, power limit), none where there is none."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    return {"cpu": cpu, "cores": cores, "gpus": gpus(), "platform": platform.platform()}


def gpus() -> list[dict[str, str]]:
    try:
        text = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(GPU_FIELDS)}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [dict(zip(GPU_FIELDS, (v.strip() for v in line.split(",")), strict=False))
            for line in text.splitlines() if line.strip()]


def videos(paths: list[Path]) -> list[dict[str, Any]]:
    """Each video's bytes, duration, size, codec and frame rate (its container's header; what could not be read is
    said)."""
    from videoitg.decode import probe_video

    out = []
    for p in paths:
        row: dict[str, Any] = {"path": str(p), "bytes": p.stat().st_size}
        try:
            info = probe_video(p)
            row.update(duration_s=round(info.duration_s, 3), width=info.width, height=info.height, codec=info.codec,
                       fps=round(info.fps, 3), frames=info.total_frames)
        except Exception as e:  # measured all the same: the server decoded it
            row["probe"] = f"{type(e).__name__}: {e}"[:200]
        out.append(row)
    return out


def measured(client: Any, url: str, protocol: str, top: str, paths: list[Path]) -> dict[str, Any]:
    """The `measured` block of perf.json."""
    try:
        analyzer = md.version("tritonclient")
    except md.PackageNotFoundError:
        analyzer = "unknown"
    host = url.split("://", 1)[-1].rpartition(":")[0].strip("[]")
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "server": {"url": url, "protocol": protocol, "tritonserver": client.server_version(),
                       "loopback": host in ("127.0.0.1", "localhost", "::1")},
            "deployment": deployment(client, top),
            "machine": machine(),
            "perf_analyzer": f"the tritonclient {analyzer} wheel's",
            "videos": videos(paths)}
