"""Cold requests sent one at a time and two at once to `videoitg serve` (the CPU repository of the embedded
checkpoint), then the soak's mix (`benchmarks.serving.soak`, no answer endpoint) at a fixed rate: the repository as
generated, whose top-level model and decode step have no dynamic batcher, against the same
repository with Triton's dynamic batcher and its bounded queue in front of both. Each request's latency, and each
model's time in tritonserver's queue per request (its statistics, differenced).

    python -m benchmarks.serving.bench_together [--pairs 40] [--rate 45] [--seconds 40]
        [--out benchmarks/results/serving/together.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.serving import soak as mix
from benchmarks.serving.soak import ROOT, Soak
from videoitg.contract.protocol import DECODE, GROUNDING, TOP, VISION
from videoitg.perf import stats
from videoitg.perf.record import machine
from videoitg.request.limits import Limits

MODELS = (TOP, DECODE, VISION, GROUNDING)
UNBATCHED = (TOP, DECODE)  # the models the repository serves without a dynamic batcher (`generator.model_specs`)


def with_batcher(repo: Path, out: Path) -> Path:
    """A copy of `repo` with a dynamic batcher in front of each `UNBATCHED` model: no added delay, one video per
    execution for the decode step, and a queue bounded as the models bound themselves (the top level's
    requests_at_once, the decode step's max_in_flight: the limits the repository was built with)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    shutil.copytree(repo, out)
    for model in UNBATCHED:
        cfg = out / model / "config.pbtxt"
        config = text_format.Parse(cfg.read_text(), model_config_pb2.ModelConfig())
        limits = Limits.from_mapping({k: v.string_value for k, v in config.parameters.items()})
        config.dynamic_batching.max_queue_delay_microseconds = 0
        config.dynamic_batching.default_queue_policy.max_queue_size = \
            limits.requests_at_once if model == TOP else limits.max_in_flight
        if model == DECODE:
            config.dynamic_batching.preferred_batch_size.append(1)
        cfg.write_text(text_format.MessageToString(config))
    return out


def queue_ms(soak: Soak) -> dict[str, tuple[float, float]]:
    """Each model's requests answered and milliseconds queued so far (tritonserver's statistics)."""
    return {m: (r.requests, r.queue_ns / 1e6) for m, r in stats.read(soak.client("http"), MODELS).items()}


def figures_of(latencies: list[float], before: dict[str, tuple[float, float]],
               after: dict[str, tuple[float, float]]) -> dict[str, Any]:
    return {"requests": len(latencies), "p50_s": float(np.median(latencies)),
            "p90_s": float(np.percentile(latencies, 90)), "p99_s": float(np.percentile(latencies, 99)),
            "max_s": float(np.max(latencies)), "over_0.3_s": int(sum(x > 0.3 for x in latencies)),
            "queue_ms_per_request": {m: (after[m][1] - before[m][1]) / max(1.0, after[m][0] - before[m][0])
                                     for m in MODELS}}


def arm(soak: Soak, pairs: int, rate: float, seconds: float) -> dict[str, Any]:
    """`pairs` cold requests one at a time, then `pairs` times two at once, then the soak's mix at `rate` a second
    for `seconds`: latencies and queue time per request."""
    def one(n: int, protocol: str) -> float:
        t = time.monotonic()
        out, text = soak.one(f"cold {protocol}", n)
        if out != "ok":
            raise RuntimeError(f"cold {protocol}: {out} {text}")
        return time.monotonic() - t

    def both(n: int) -> list[float]:
        start, got = threading.Barrier(2), []

        def send(k: int, protocol: str) -> None:
            start.wait()
            got.append(one(2 * n + k, protocol))

        threads = [threading.Thread(target=send, args=(k, p)) for k, p in enumerate(("grpc", "http"))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return got

    for n in range(4):  # warm
        one(n, "grpc")
    figures: dict[str, Any] = {}
    for label, together in (("one at a time", False), ("two at once", True)):
        before, latencies = queue_ms(soak), []
        for n in range(pairs):
            if together:
                latencies += both(n)
            else:
                latencies.append(one(n, "grpc"))
            time.sleep(0.05)
        figures[label] = figures_of(latencies, before, queue_ms(soak))
    before, run = queue_ms(soak), mix.Run(soak, time.monotonic())
    mix.traffic(soak, run, rate, seconds, threading.Event())
    if any(a.outcome != "ok" for a in run.attempts):
        raise RuntimeError(f"the mix: {[a.text for a in run.attempts if a.outcome != 'ok'][:3]}")
    figures[f"the mix at {rate:g}/s"] = figures_of([a.latency for a in run.attempts], before, queue_ms(soak))
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--rate", type=float, default=45.0, help="requests a second of the mix (about half this "
                    "machine's capacity)")
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving" / "together.json")
    args = ap.parse_args()
    mix.MIX = tuple(k for k in mix.MIX if k != "answer")
    work = Path(tempfile.mkdtemp(prefix="videoitg-together-"))
    generated = work / "generated"
    subprocess.run([sys.executable, "-m", "videoitg", "repo", "build", "--target", "cpu", "--out", str(generated)],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    arms = {"as generated": generated, "with the dynamic batcher": with_batcher(generated, work / "batched")}
    record: dict[str, Any] = {"command": " ".join(["python -m benchmarks.serving.bench_together", *sys.argv[1:]]),
                              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                              "machine": machine(), "arms": {}}
    soak = Soak(work, None)
    for name, repo in arms.items():
        soak.start(work / f"{name.replace(' ', '-')}.log", repo)
        try:
            record["arms"][name] = arm(soak, args.pairs, args.rate, args.seconds)
        finally:
            soak.stop()
            soak.proc = None
        for label, f in record["arms"][name].items():
            print(f"{name:26s} {label:16s} p50 {f['p50_s']:.3f} s  p99 {f['p99_s']:.3f} s  max {f['max_s']:.3f} s  "
                  f"over 0.3 s: {f['over_0.3_s']:2d}  queue ms/request "
                  + " ".join(f"{m}={v:.1f}" for m, v in f["queue_ms_per_request"].items()), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
