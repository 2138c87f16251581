"""Served vs in-process latency, cache hit vs cold, and perf_analyzer throughput at concurrency 1..N.

    python -m benchmarks.serving.bench_serving [--clips 8] [--reps 3] [--concurrency 1:4] [--json out.json]

One tritonserver (CPU repository of the embedded tiny checkpoint) with three top-level models over the same
steps: `videoitg` (BLS, feature cache on), `videoitg_nocache` (BLS, cache off: every request decodes and encodes)
and `videoitg_ensemble` (the `ensemble` repository's top level: decode -> vision -> grounding -> select as a Triton
ensemble, no cache). Synthetic clips (the sample video's kind, distinct seeds) are the inputs.
- Paired latency: per clip and repetition, interleaved so machine load hits every variant alike:
  in-process full request (decode + vision + grounding) | served cold (`videoitg_nocache`) | served ensemble |
  in-process grounding only (features in hand: what a cache hit leaves) | served cache hit (`videoitg`).
- perf_analyzer (tritonclient 2.51 binary, gRPC, real video bytes as input data; loosened stability for 2 cores):
  throughput and p50/p95 at each concurrency, for each top-level model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

# Same OpenMP policy as the server's processes (videoitg.launch.binaries.server_env), set before torch loads:
# on a loaded 2-core machine spin-waiting workers slow a tiny model's forward by an order of magnitude.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from videoitg.contract.protocol import DECODE, SELECT, SUMMARY_FILE, TOP, RepoSummary
from videoitg.launch import binaries
from videoitg.repository.generator import RepoSpec, build_repository, render

NOCACHE = "videoitg_nocache"
UNSTREAMED = "videoitg_nocache_unstreamed"
ENSEMBLE = "videoitg_ensemble"
DECODE_ONCE = "videoitg_decode_once"
TOP_LEVELS = (TOP, NOCACHE, UNSTREAMED, ENSEMBLE)  # what the front passes on (ServerOptions.models)


def build_bench_repository(out: Path, spec: RepoSpec | None = None) -> Path:
    """The CPU repository of `spec` (default: the embedded tiny checkpoint) plus, over the same vision and grounding
    steps: `videoitg_nocache` (BLS, cache off), `videoitg_nocache_unstreamed` (the same with a decode step that
    answers once with every frame, `videoitg_decode_once`, so the tower waits for the whole decode) and the ensemble
    top level as `videoitg_ensemble` (with its `videoitg_select` step; its decode step is the unstreamed one too,
    as in an ensemble repository)."""
    spec = spec or RepoSpec(target="cpu")
    build_repository(spec, out)
    once = dataclasses.replace(spec, stream_frames=0)
    extra = {NOCACHE: render(dataclasses.replace(spec, cache_bytes=0)),
             UNSTREAMED: render(dataclasses.replace(once, cache_bytes=0)),
             ENSEMBLE: render(dataclasses.replace(spec, mode="ensemble"))}
    summary = RepoSummary.read(out)  # the front bounds the added top levels as their own repositories' top level
    models = {**summary.models, **{name: RepoSummary.from_json(files[SUMMARY_FILE]).models[TOP]
                                   for name, files in extra.items()}}
    dataclasses.replace(summary, models=models).write(out)
    for name, files in extra.items():
        for rel, text in files.items():
            model, _, rest = rel.partition("/")
            if model == TOP:
                dest = out / name / rest
                text = text.replace(f'name: "{TOP}"', f'name: "{name}"')
                if name != NOCACHE:  # the decode step that answers once
                    text = text.replace(f'"{DECODE}"', f'"{DECODE_ONCE}"')
            elif model == SELECT:
                dest = out / rel
            elif model == DECODE and name == UNSTREAMED:
                dest = out / DECODE_ONCE / rest
                text = text.replace(f'name: "{DECODE}"', f'name: "{DECODE_ONCE}"')
            else:
                continue  # the other steps are shared
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
    return out


def make_clips(folder: Path, n: int) -> list[bytes]:
    from videoitg.synthetic.task import make_video

    clips = []
    for seed in range(n):
        _, _, path = make_video(folder / f"clip{seed}.mp4", seed=1000 + seed, codec="h264")
        clips.append(path.read_bytes())
    return clips


def p50(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


def paired_latency(server, clips: list[bytes], reps: int) -> dict[str, float]:
    from videoitg.client.kserve import VideoITGClient
    from videoitg.defaults import default_checkpoint
    from videoitg.pipeline.scorer import Scorer

    scorer = Scorer(default_checkpoint())
    q1, q2 = "When is the red circle visible?", "When does the blue square move?"
    cold = VideoITGClient(server.grpc_url, "grpc", model=NOCACHE)
    ens = VideoITGClient(server.grpc_url, "grpc", model=ENSEMBLE)
    hit = VideoITGClient(server.grpc_url, "grpc", model=TOP)
    feats = [scorer.stream_features(c) for c in clips]
    for c in clips:  # warm every path; fills the cache of `videoitg`
        scorer.score(c, q1), cold.infer(c, q1), ens.infer(c, q1), hit.infer(c, q1)
    t: dict[str, list[float]] = {k: [] for k in ("inproc_full", "served_cold", "served_ensemble", "inproc_grounding",
                                                 "served_hit")}
    for _ in tqdm(range(reps), desc="paired latency"):
        for c, f in zip(clips, feats, strict=True):
            s = time.perf_counter()
            scorer.score(c, q2)
            t["inproc_full"].append(time.perf_counter() - s)
            s = time.perf_counter()
            cold.infer(c, q2)
            t["served_cold"].append(time.perf_counter() - s)
            s = time.perf_counter()
            e = ens.infer(c, q2)
            t["served_ensemble"].append(time.perf_counter() - s)
            assert not e.cache_hit
            s = time.perf_counter()
            scorer.score_visual([(f, q2)])
            t["inproc_grounding"].append(time.perf_counter() - s)
            s = time.perf_counter()
            r = hit.infer(c, q2)
            t["served_hit"].append(time.perf_counter() - s)
            assert r.cache_hit
    cold.close(), ens.close(), hit.close()
    out = {f"{k}_p50_ms": round(p50(v), 2) for k, v in t.items()}
    out["served_over_inproc_cold"] = round(out["served_cold_p50_ms"] / out["inproc_full_p50_ms"], 3)
    out["served_over_inproc_hit"] = round(out["served_hit_p50_ms"] / out["inproc_grounding_p50_ms"], 3)
    out["hit_over_cold_served"] = round(out["served_hit_p50_ms"] / out["served_cold_p50_ms"], 3)
    out["ensemble_over_bls_cold"] = round(out["served_ensemble_p50_ms"] / out["served_cold_p50_ms"], 3)
    out["ensemble_over_bls_hit"] = round(out["served_ensemble_p50_ms"] / out["served_hit_p50_ms"], 3)
    out["samples_per_variant"] = len(t["inproc_full"])
    return out


def perf_analyzer(server, model: str, clips: list[bytes], concurrency: str, work: Path) -> list[dict]:
    from videoitg.launch import perf

    (work / "input.json").write_text(json.dumps(perf.input_data(
        clips, [f"When is the red circle visible? ({i})" for i in range(len(clips))])))
    rows = []
    lo, hi = (int(x) for x in concurrency.split(":"))
    for c in range(lo, hi + 1):
        # On a shared 2-core machine a window is often unstable: loosen step by step, and record what was used.
        for stability in (50, 100):
            csv_path = work / f"{model}-{c}.csv"
            cmd = perf.command(server.grpc_url, "grpc", work / "input.json", csv_path, f"{c}:{c}", model=model,
                               measurement_interval_ms=4000, stability_pct=stability, max_trials=8,
                               extra=["--percentile", "50"])
            r = subprocess.run(cmd, env=binaries.perf_analyzer_env(), capture_output=True, text=True, timeout=900)
            if r.returncode == 0 and csv_path.exists():
                break
        else:
            rows.append({"concurrency": c, "error": (r.stdout + r.stderr)[-500:]})
            continue
        for row in perf.read_csv(csv_path):
            rows.append({"concurrency": row.concurrency, "stability_pct": stability,
                         "infer_per_s": round(row.infer_per_s, 2), "p50_ms": round(row.p50_ms, 2),
                         "p95_ms": round(row.p95_ms, 2)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--concurrency", default="1:4")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from videoitg.launch.server import ServerOptions, TritonServer

    result: dict = {"load_avg_before": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        tmp = Path(tmp)
        clips = make_clips(tmp, args.clips)
        result["clip_bytes_mean"] = int(statistics.mean(len(c) for c in clips))
        repo = build_bench_repository(tmp / "repo")
        t0 = time.perf_counter()
        with TritonServer(repo, ServerOptions(models=TOP_LEVELS), log_path=tmp / "server.log") as server:
            result["server_start_s"] = round(time.perf_counter() - t0, 1)
            result["paired"] = paired_latency(server, clips, args.reps)
            print(json.dumps(result["paired"], indent=2), flush=True)
            result["perf_analyzer"] = {}
            for model in tqdm([NOCACHE, ENSEMBLE, TOP], desc="perf_analyzer"):
                result["perf_analyzer"][model] = perf_analyzer(server, model, clips, args.concurrency, tmp)
    result["load_avg_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
