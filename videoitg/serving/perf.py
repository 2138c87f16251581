"""`perf_analyzer` against a running VideoITG server, with real videos as input data.

The binary is the one the `tritonclient==2.51.0` wheel installs; its libraries come from `binaries.perf_analyzer_env`
(soname links into `nvidia_pytriton.libs`), so no library path has to be set by hand. Input data is built from the
video files: perf_analyzer reads a BYTES tensor given as `{"b64": ...}` as the serialized tensor, i.e. each element
as a 4-byte little-endian length followed by its bytes.
"""

from __future__ import annotations

import base64
import csv
import json
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from videoitg.errors import InputError
from videoitg.serving import binaries

DEFAULT_INSTRUCTION = "When does the main event of the video happen?"


def input_data(videos: list[bytes], instructions: list[str]) -> dict:
    """perf_analyzer `--input-data` JSON: one step per (video, instruction) pair, cycling the shorter list."""
    if not videos or not instructions:
        raise InputError("perf input needs at least one video and one instruction")
    n = max(len(videos), len(instructions))
    steps = []
    for i in range(n):
        v = videos[i % len(videos)]
        steps.append({"VIDEO": {"b64": base64.b64encode(struct.pack("<I", len(v)) + v).decode()},
                      "INSTRUCTION": [instructions[i % len(instructions)]]})
    return {"data": steps}


@dataclass
class PerfRow:
    concurrency: int
    infer_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def command(url: str, protocol: str, input_json: Path, csv_path: Path, concurrency: str, model: str = "videoitg",
            measurement_interval_ms: int = 4000, stability_pct: int = 50, max_trials: int = 10,
            extra: list[str] | None = None) -> list[str]:
    return [str(binaries.find_perf_analyzer()), "-m", model, "-u", url.split("://", 1)[-1], "-i", protocol,
            "--input-data", str(input_json), "--concurrency-range", concurrency,
            "--measurement-interval", str(measurement_interval_ms), "--stability-percentage", str(stability_pct),
            "--max-trials", str(max_trials), "-f", str(csv_path), *(extra or [])]


def read_csv(path: Path) -> list[PerfRow]:
    rows = []
    with path.open() as f:
        for r in csv.DictReader(f):
            rows.append(PerfRow(int(r["Concurrency"]), float(r["Inferences/Second"]), int(r["p50 latency"]) / 1e3,
                                int(r["p95 latency"]) / 1e3, int(r["p99 latency"]) / 1e3))
    return rows


def run(url: str, protocol: str, videos: list[Path], instructions: list[str], work: Path, concurrency: str = "1:4",
        **kw) -> tuple[subprocess.CompletedProcess, list[PerfRow]]:
    """Write the input data and run perf_analyzer; returns its process result and the CSV rows (empty on failure).
    perf_analyzer's own output is streamed to this process's stdout/stderr."""
    data = []
    for v in videos:
        try:
            data.append(Path(v).read_bytes())
        except OSError as e:
            raise InputError(f"cannot read video {v}: {e.strerror or e}") from None
    work.mkdir(parents=True, exist_ok=True)
    (work / "input.json").write_text(json.dumps(input_data(data, instructions)))
    csv_path = work / "perf.csv"
    csv_path.unlink(missing_ok=True)
    cmd = command(url, protocol, work / "input.json", csv_path, concurrency, **kw)
    proc = subprocess.run(cmd, env=binaries.perf_analyzer_env())
    rows = read_csv(csv_path) if proc.returncode == 0 and csv_path.exists() else []
    return proc, rows
