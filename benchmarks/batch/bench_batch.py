"""Batch throughput on Ray Data: rows/s with N workers, grouping by video on and off.

Builds a synthetic manifest (V clips x R instructions each), then runs the real batch driver once per
configuration on one local Ray (started once, reused), each into a fresh output directory. Reports the
steady rate (rows after the first result / time after it: model loading and Ray start-up excluded) and
the end-to-end rate, plus the cache hit rate. Prints a markdown table and writes JSON to --json.

    python -m benchmarks.batch.bench_batch --workers 1 2 --videos 12 --per-video 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.clips import write_rgb_clip
from videoitg.batch.ray_env import RayOptions, init_ray, shutdown_ray
from videoitg.batch.runner import BatchOptions, run_batch
from videoitg.batch.scorers import ScorerSpec
from videoitg.defaults import default_checkpoint
from videoitg.manifest.rows import load_manifest

WORDS = ["red", "green", "blue", "circle", "square", "star", "left", "right", "up", "down"]


def make_clip(path: Path, seed: int, frames: int, fps: int, w: int, h: int) -> None:
    rng = np.random.default_rng(seed)

    def frame(i: int) -> np.ndarray:
        a = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
        x = (i * 5 + seed * 11) % (w - w // 4)
        a[h // 4: h // 2, x: x + w // 4] = rng.integers(60, 255, 3)
        return a

    write_rgb_clip(path, map(frame, range(frames)), codec="mpeg4", fps=fps)


def make_workload(root: Path, videos: int, per_video: int, frames: int, fps: int, w: int, h: int) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for v in range(videos):
        make_clip(root / f"v{v}.mp4", v, frames, fps, w, h)
        for q in range(per_video):
            words = " ".join(rng.choice(WORDS, 6))
            lines.append(json.dumps({"video": f"v{v}.mp4", "instruction": f"when is the {words}?",
                                     "doc_id": v * per_video + q}))
    # Interleave videos the way a benchmark manifest often is (questions grouped by task, not by video).
    order = rng.permutation(len(lines))
    path = root / "manifest.jsonl"
    path.write_text("\n".join(lines[i] for i in order) + "\n")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--per-video", type=int, default=10)
    ap.add_argument("--frames", type=int, default=64, help="frames per synthetic clip")
    ap.add_argument("--fps", type=int, default=8)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--num-frames", type=int, default=32, help="frames sampled per video")
    ap.add_argument("--target-fps", type=float, default=4.0)
    ap.add_argument("--checkpoint", default=None, help="default: the tiny checkpoint")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()

    w, h = (int(x) for x in args.size.split("x"))
    ckpt = args.checkpoint or str(default_checkpoint())
    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    manifest = load_manifest(make_workload(work, args.videos, args.per_video, args.frames, args.fps, w, h))
    spec = ScorerSpec(checkpoint=ckpt, num_frames=args.num_frames, target_fps=args.target_fps, torch_threads=1)
    ray_opts = RayOptions(num_cpus=max(max(args.workers), os.cpu_count() or 1), object_store_mb=256)
    t0 = time.perf_counter()
    init_ray(ray_opts)
    ray_start = time.perf_counter() - t0
    rows = []
    try:
        for group in (True, False):
            for n in args.workers:
                out = work / f"out-w{n}-{'g' if group else 'ng'}"
                s = run_batch(manifest, BatchOptions(out_dir=str(out), scorer=spec, ray=ray_opts, workers=n,
                                                     group_by_video=group, progress=False))
                assert s["rows_ok"] == len(manifest.rows), s
                rows.append({"workers": n, "group_by_video": group, "rows": s["rows_ok"],
                             "steady_rows_per_s": s["steady_rows_per_second"],
                             "end_to_end_rows_per_s": s["rows_per_second"],
                             "pool_startup_s": s["startup_seconds"], "cache_hit_rate": s["cache_hit_rate"],
                             "workers_used": s["workers_used"],
                             # summed over workers: decode + visual features vs the instruction half
                             "prepare_s": s["worker_seconds"]["prepare"], "score_s": s["worker_seconds"]["score"]})
                print(json.dumps(rows[-1]), file=sys.stderr)
    finally:
        shutdown_ray()
    meta = {"videos": args.videos, "per_video": args.per_video, "clip": f"{args.frames} frames {args.size} "
            f"@{args.fps} fps mpeg4", "num_frames": args.num_frames, "checkpoint": ckpt,
            "ray_start_s": round(ray_start, 2), "cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]}
    print(f"\n{meta}\n")
    print("| workers | group by video | rows | steady rows/s | end-to-end rows/s | pool start-up s | cache hits "
          "| worker s: prepare / score |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {'on' if r['group_by_video'] else 'off'} | {r['rows']} | "
              f"{r['steady_rows_per_s']} | {r['end_to_end_rows_per_s']} | {r['pool_startup_s']} | "
              f"{r['cache_hit_rate']:.0%} | {r['prepare_s']:.2f} / {r['score_s']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
