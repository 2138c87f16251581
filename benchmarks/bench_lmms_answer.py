"""Select, then answer, through real lmms-eval on CPU: VideoITG's frames against uniform frames at the same K, on the
generated shapes questions (`benchmarks.shapes_mc`), answered by the fixed-rule reader (`benchmarks.shape_reader`),
with the embedded tiny checkpoint picking the frames. It demonstrates the mechanism (the same requests, differing
only in which frames are sent, scored by the task's own metric); it measures no video-LLM's accuracy.

    python -m benchmarks.bench_lmms_answer [--docs 60] [--ks 2,4,8] [--out artifacts/lmms_answer]

Needs lmms-eval's environment (scripts/lmms_env.sh; $VIDEOITG_LMMS_PYTHON). For each K and selection it runs

    lmms-eval --model videoitg --tasks videoitg_shapes_mc,videoitg_shapes_mc_lure --include_path OUT/tasks \\
        --model_args output_dir=OUT/itg/SEL-K,answer_upstream=READER,answer_model=shape-reader,top_k=K,\\
selection=SEL,frame_size=0 --output_path OUT/lmms/SEL-K

then `videoitg answer-table OUT/lmms --out OUT/answer-table`, and prints how often the frames sent held a frame of
the moment.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter
from pathlib import Path

from benchmarks.shape_reader import MODEL, serve_reader
from benchmarks.shapes_mc import (
    LURE_TASK,
    TASK,
    lmms_env,
    lmms_eval_command,
    lmms_python,
    run_lmms_eval,
    write_set,
    write_task,
)
from videoitg.cli import main as videoitg
from videoitg.lmms.answering import SELECTIONS


def moment_hits(itg: Path, task: str, docs: Path) -> tuple[int, int]:
    """(documents whose frames sent held a frame inside the moment, documents) of one run's results.jsonl."""
    moments = [json.loads(x)["moment"] for x in docs.read_text().splitlines()]
    hit = n = 0
    for line in (itg / task / "results.jsonl").read_text().splitlines():
        rec = json.loads(line)
        a, b = moments[rec["doc_id"]]
        hit += any(a <= t < b for t in rec["answer"]["timestamps"])
        n += 1
    return hit, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=60, help="questions in each of the two sets")
    ap.add_argument("--ks", default="2,4,8")
    ap.add_argument("--out", default="artifacts/lmms_answer")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    python = lmms_python()
    if python is None:
        raise SystemExit("lmms-eval's environment is missing: bash scripts/lmms_env.sh makes it (.venv-lmms)")
    out = Path(args.out).resolve()
    ks = [int(k) for k in args.ks.split(",")]
    sets = {}
    for task, lures, seed in ((TASK, False, args.seed), (LURE_TASK, True, args.seed + 1)):
        docs = write_set(out / "sets" / task, args.docs, seed=seed, lures=lures)
        write_task(out / "tasks", docs, docs.parent / "videos", task=task)
        sets[task] = docs
    env = lmms_env(out / "tmp")
    walls = {}
    with serve_reader() as reader:
        for k in ks:
            for sel in SELECTIONS:
                name = f"{sel}-{k}"
                margs = {"output_dir": out / "itg" / name, "answer_upstream": reader.base_url, "answer_model": MODEL,
                         "top_k": k, "selection": sel, "frame_size": 0}
                cmd = lmms_eval_command(python, out / "tasks", margs, out / "lmms" / name, task=f"{TASK},{LURE_TASK}")
                before = len(reader.asked)
                t0 = time.perf_counter()
                run_lmms_eval(cmd, env, timeout_s=1800)
                walls[name] = time.perf_counter() - t0
                images = Counter(a.images for a in reader.asked[before:])
                assert set(images) == {k}, f"{name}: the reader was sent {dict(images)} images per request"
                print(f"{name}: {sum(images.values())} questions, {k} images each, {walls[name]:.0f} s", flush=True)
    print()
    videoitg(["answer-table", str(out / "lmms"), "--out", str(out / "answer-table")])
    print("\nquestions whose frames held a frame of the moment:")
    for task, docs in sets.items():
        for k in ks:
            cells = []
            for sel in SELECTIONS:
                hit, n = moment_hits(out / "itg" / f"{sel}-{k}", task, docs)
                cells.append(f"{sel} {hit}/{n}")
            print(f"  {task} K={k}: {', '.join(cells)}")
    print(f"\nmachine: {platform.processor() or platform.machine()}, {platform.python_version()}; "
          f"lmms-eval runs {min(walls.values()):.0f}-{max(walls.values()):.0f} s each")


if __name__ == "__main__":
    main()
