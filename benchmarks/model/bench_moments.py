"""Moment rule variants on held-out synthetic clips, scored once by the shipped tiny checkpoint.

    python -m benchmarks.model.bench_moments [--videos 40] [--seed 777] [--json out.json]

Generates a synthetic dataset with a seed the checkpoint was not trained on, scores every query once, then
evaluates each moment-rule variant on the same scores: the single-run rule (grow the top frame while
scores >= 0.5, absolute), and `videoitg.moments` with one or several relative levels and minimum gaps. Reports
R1@{0.3,0.5,0.7}, R5@{0.5,0.7} and mIoU against the clips' ground-truth segments (several per query allowed).
This picks the rule's defaults; the clips are synthetic, so the numbers say which rule cuts this model's curves
best, not how a real VideoITG checkpoint grounds real video.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from videoitg.eval.metrics import best_iou, ranking
from videoitg.moments import MomentParams, find_moments, frame_spans


def single_run_rule(scores, timestamps, duration, threshold=0.5):
    """The single-run rule: the run around the top frame with scores >= threshold (absolute)."""
    s = np.asarray(scores)
    top = int(ranking(s)[0])
    lo = hi = top
    while lo > 0 and s[lo - 1] >= threshold:
        lo -= 1
    while hi + 1 < len(s) and s[hi + 1] >= threshold:
        hi += 1
    spans = frame_spans(timestamps, duration)
    return [(spans[lo][0], spans[hi][1], float(s[top]))]


def metrics(items, rule) -> dict[str, float]:
    r1 = {0.3: 0, 0.5: 0, 0.7: 0}
    r5 = {0.5: 0, 0.7: 0}
    miou = 0.0
    for it in items:
        ious = [best_iou(m, it["segments"]) for m in rule(it)]
        miou += ious[0]
        for t in r1:
            r1[t] += ious[0] >= t
        for t in r5:
            r5[t] += any(x >= t for x in ious[:5])
    n = len(items)
    return {**{f"R1@{t}": round(v / n, 3) for t, v in r1.items()},
            **{f"R5@{t}": round(v / n, 3) for t, v in r5.items()}, "mIoU": round(miou / n, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from videoitg.defaults import default_checkpoint
    from videoitg.pipeline.scorer import Scorer
    from videoitg.synthetic.task import write_dataset

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-moments-") as tmp:
        ann = write_dataset(Path(tmp), args.videos, seed=args.seed)
        records = json.loads(ann.read_text())
        scorer = Scorer(default_checkpoint())
        by_video: dict[str, list[dict]] = {}
        for r in records:
            by_video.setdefault(r["video"], []).append(r)
        items = []
        for video, recs in tqdm(by_video.items(), desc="scoring", unit="video"):
            for r, res in zip(recs, scorer.score_many(Path(tmp) / "videos" / video, [r["question"] for r in recs]),
                              strict=True):
                items.append({"segments": r["segments"], "scores": res.scores, "timestamps": res.timestamps,
                              "duration": r["num_frames"] / r["fps"]})

    def ours(**kw):
        p = MomentParams(**kw)
        return lambda it: find_moments(it["scores"], it["timestamps"], p, it["duration"])

    variants = {"single run >= 0.5 (absolute)": lambda it: single_run_rule(
        it["scores"], it["timestamps"], it["duration"])}
    for th in [(0.5,), (0.7,), (0.3, 0.5, 0.7), (0.2, 0.4, 0.6, 0.8), (0.5, 0.7, 0.9)]:
        for gap in (0.0, 1.0, 2.0):
            variants[f"levels {','.join(f'{x:g}' for x in th)}, min gap {gap:g} s"] = ours(thresholds=th,
                                                                                     min_gap_s=gap)
    rows = {name: metrics(items, rule) for name, rule in variants.items()}
    cols = list(next(iter(rows.values())))
    print(f"{len(items)} queries over {len(by_video)} held-out clips (seed {args.seed})")
    print(f"| rule | {' | '.join(cols)} |\n|---|{'---|' * len(cols)}")
    for name, m in rows.items():
        print(f"| {name} | {' | '.join(f'{m[c]:.3f}' for c in cols)} |")
    if args.json:
        args.json.write_text(json.dumps({"queries": len(items), "seed": args.seed, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
