"""`perf_analyzer` against a running VideoITG server, with real videos as input data, measuring cold requests (the
default) or cache hits, and saying which.

The binary is the one the `tritonclient==2.51.0` wheel installs; its libraries come from `binaries.perf_analyzer_env`
(soname links into `nvidia_pytriton.libs`), so no library path has to be set by hand. Input data is built from the
video files: perf_analyzer reads a BYTES tensor given as `{"b64": ...}` as the serialized tensor, i.e. each element
as a 4-byte little-endian length followed by its bytes.

Cold requests on a server with a feature cache: the cache is keyed by a hash of the video's bytes, so each measured
request carries its own copy of a video, made distinct by bytes its container ignores (`distinct_copy`), and
perf_analyzer sends exactly as many requests as there are copies (`--request-count`): none can hit the cache. The
server's own cache counters (its metrics endpoint) are read around the measurement and reported.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import ssl
import struct
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videoitg.contract.access import GRPC_AUTHORIZATION, SCHEME, ClientAccess
from videoitg.contract.protocol import INSTRUCTION, TOP, VIDEO
from videoitg.errors import InputError
from videoitg.launch import binaries

DEFAULT_INSTRUCTION = "When does the main event of the video happen?"
COPY_TAG = b"videoitg-perf"  # payload of the appended element, with the copy's number


def input_data(videos: list[bytes], instructions: list[str]) -> dict:
    """perf_analyzer `--input-data` JSON: one step per (video, instruction) pair, cycling the shorter list."""
    if not videos or not instructions:
        raise InputError("perf input needs at least one video and one instruction")
    n = max(len(videos), len(instructions))
    steps = []
    for i in range(n):
        v = videos[i % len(videos)]
        steps.append({VIDEO: {"b64": base64.b64encode(struct.pack("<I", len(v)) + v).decode()},
                      INSTRUCTION: [instructions[i % len(instructions)]]})
    return {"data": steps}


def distinct_copy(data: bytes, run: bytes, number: int, name: str = "video") -> bytes:
    """`data` with an element its container skips appended, carrying `run` (random per measurement, so no copy is
    one a server saw in an earlier run) and `number`: other bytes (another digest, so another cache key), the same
    frames. MP4 / MOV (ISO BMFF): a top-level `free` box; Matroska / WebM: an EBML Void element. Other containers
    are refused (their trailing bytes are not defined as ignorable)."""
    payload = COPY_TAG + run[:16] + struct.pack(">Q", number)
    if data[4:8] == b"ftyp":
        return data + struct.pack(">I", 8 + len(payload)) + b"free" + payload
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return data + b"\xec" + bytes([0x80 | len(payload)]) + payload
    raise InputError(f"{name}: cold requests to a server with a feature cache need distinct copies of each video, "
                     "made for MP4/MOV and Matroska/WebM files only; convert it, or measure a deployment without "
                     "the cache (`videoitg serve --cache-bytes 0`)")


def concurrency_levels(spec: str) -> list[int]:
    """perf_analyzer's START[:END[:STEP]] as the list of levels."""
    try:
        parts = [int(x) for x in spec.split(":")]
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3 or min(parts) < 1:
        raise InputError(f"--concurrency must be START[:END[:STEP]] with positive integers, got {spec!r}")
    start = parts[0]
    end = parts[1] if len(parts) > 1 else start
    step = parts[2] if len(parts) > 2 else 1
    if end < start:
        raise InputError(f"--concurrency {spec!r}: END is below START")
    return list(range(start, end + 1, step))


@dataclass
class PerfRow:
    concurrency: int
    infer_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float  # the client's mean latency: the sum of perf_analyzer's per-stage columns

    def closed_loop_rate(self) -> float:
        """Requests per second of `concurrency` clients each sending its next request when the last is answered:
        concurrency / mean latency (Little's law). perf_analyzer's own figure in --request-count mode divides by
        the run's length rounded up to whole seconds, which under-reads short runs."""
        return self.concurrency * 1e3 / self.mean_ms if self.mean_ms > 0 else 0.0


@dataclass
class CacheCounts:
    """The server's feature-cache counters (`videoitg_feature_cache_hits` / `_misses` on its metrics endpoint)."""

    hits: float
    misses: float

    def __sub__(self, other: CacheCounts) -> CacheCounts:
        return CacheCounts(self.hits - other.hits, self.misses - other.misses)


def metric_sums(metrics_url: str, names: tuple[str, ...], timeout_s: float = 5.0,
                context: ssl.SSLContext | None = None) -> dict[str, float] | None:
    """Each of `names` summed over its labels on the server's metrics endpoint; None when the endpoint does not
    answer or lacks one of them. `context`: TLS (an address without a scheme is then https)."""
    url = metrics_url if "://" in metrics_url else f"{'http' if context is None else 'https'}://{metrics_url}"
    if not url.rstrip("/").endswith("/metrics"):
        url = url.rstrip("/") + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as r:
            text = r.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    found: dict[str, float] = {}
    for name in names:
        values = re.findall(rf"^{name}(?:{{[^}}]*}})?\s+(\S+)$", text, re.M)
        if values:
            found[name] = sum(float(v) for v in values)
    return found if len(found) == len(names) else None


def cache_counts(metrics_url: str, timeout_s: float = 5.0, context: ssl.SSLContext | None = None
                 ) -> CacheCounts | None:
    """The counters summed over the server's models; None when there are none (an ensemble has no cache)."""
    hits, misses = "videoitg_feature_cache_hits", "videoitg_feature_cache_misses"
    found = metric_sums(metrics_url, (hits, misses), timeout_s, context)
    return None if found is None else CacheCounts(found[hits], found[misses])


def access_args(protocol: str, access: ClientAccess) -> tuple[str, list[str]]:
    """(the URL's scheme prefix, perf_analyzer's flags) for a server's key and TLS: the key as `-H` (sent on HTTP
    and, despite its help text, as gRPC metadata: perf_analyzer 2.51 checked against a front with keys), TLS as its
    `--ssl-grpc-*` flags or an https URL with `--ssl-https-ca-certificates-file`. perf_analyzer takes a header on
    its command line only: for its run, a local user's `ps` can read the key."""
    flags = ["-H", f"{GRPC_AUTHORIZATION}:{SCHEME} {access.key}"] if access.key else []
    if not access.tls:
        return "", flags
    if protocol == "grpc":
        flags += ["--ssl-grpc-use-ssl", "true"]
        flags += ["--ssl-grpc-root-certifications-file", access.ca_file] if access.ca_file else []
        return "", flags
    flags += ["--ssl-https-ca-certificates-file", access.ca_file] if access.ca_file else []
    return "https://", flags


def command(url: str, protocol: str, input_json: Path, csv_path: Path, concurrency: str, model: str = TOP,
            measurement_interval_ms: int = 4000, stability_pct: int = 50, max_trials: int = 10,
            request_count: int | None = None, extra: list[str] | None = None,
            access: ClientAccess | None = None) -> list[str]:
    """The perf_analyzer command line. `request_count`: send exactly that many requests per level instead of
    measuring windows until they are stable; `access`: the server's key and TLS (`access_args`)."""
    windows = (["--request-count", str(request_count)] if request_count else
               ["--measurement-interval", str(measurement_interval_ms), "--stability-percentage", str(stability_pct),
                "--max-trials", str(max_trials)])
    prefix, flags = access_args(protocol, access or ClientAccess())
    return [str(binaries.find_perf_analyzer()), "-m", model, "-u", prefix + url.split("://", 1)[-1], "-i", protocol,
            "--input-data", str(input_json), "--concurrency-range", concurrency, *windows, "-f", str(csv_path),
            *flags, *(extra or [])]


STAGES = ("Client Send", "Network+Server Send/Recv", "Server Queue", "Server Compute Input", "Server Compute Infer",
          "Server Compute Output", "Client Recv")  # microseconds; together the mean latency perf_analyzer prints


def read_csv(path: Path) -> list[PerfRow]:
    rows = []
    with path.open() as f:
        for r in csv.DictReader(f):
            mean_us = sum(float(r[s]) for s in STAGES if r.get(s))
            rows.append(PerfRow(int(r["Concurrency"]), float(r["Inferences/Second"]), int(r["p50 latency"]) / 1e3,
                                int(r["p95 latency"]) / 1e3, int(r["p99 latency"]) / 1e3, mean_us / 1e3))
    return rows


def read_videos(videos: list[Path]) -> list[bytes]:
    data = []
    for v in videos:
        try:
            data.append(Path(v).read_bytes())
        except OSError as e:
            raise InputError(f"cannot read video {v}: {e.strerror or e}") from None
    return data


def run(url: str, protocol: str, videos: list[bytes], instructions: list[str], work: Path, concurrency: str = "1:4",
        **kw: Any) -> tuple[subprocess.CompletedProcess, list[PerfRow]]:
    """Write the input data and run perf_analyzer; returns its process result and the CSV rows (empty on failure).
    perf_analyzer's own output is streamed to this process's stdout/stderr."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "input.json").write_text(json.dumps(input_data(videos, instructions)))
    csv_path = work / "perf.csv"
    csv_path.unlink(missing_ok=True)
    cmd = command(url, protocol, work / "input.json", csv_path, concurrency, **kw)
    proc = subprocess.run(cmd, env=binaries.perf_analyzer_env())
    rows = read_csv(csv_path) if proc.returncode == 0 and csv_path.exists() else []
    return proc, rows
