"""Select, then answer, through real lmms-eval on CPU: VideoITG's frames against uniform frames at the same K, on the
generated shapes questions (`benchmarks.answer.shapes_mc`), answered by the fixed-rule reader
(`benchmarks.answer.shape_reader`), with the embedded tiny checkpoint picking the frames. It demonstrates the mechanism
(the same requests, differing only in which frames are sent, scored by the task's own metric); it measures no
video-LLM's accuracy.

    python -m benchmarks.answer.bench_lmms_answer [--docs 60] [--ks 2,4,8] [--out artifacts/lmms_answer]

Needs lmms-eval's environment (scripts/lmms_env.sh; $VIDEOITG_LMMS_PYTHON). For each K and selection it runs one
evaluation (all of them in one lmms-eval process, `--config`; it prints each one's command line):

    lmms-eval --model videoitg --tasks videoitg_shapes_mc,videoitg_shapes_mc_lure --include_path OUT/tasks \\
        --model_args output_dir=OUT/itg/SEL-K,answer_upstream=READER,answer_model=shape-reader,top_k=K,\\
selection=SEL,frame_size=0 --batch_size 1 --output_path OUT/lmms/SEL-K

then `videoitg answer-table OUT/lmms --out OUT/answer-table`, and prints how often the frames sent held a frame of
the moment.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from pathlib import Path

from benchmarks.answer.shape_reader import MODEL, serve_reader
from benchmarks.answer.shapes_mc import (
    LURE_TASK,
    TASK,
    command_line,
    lmms_env,
    lmms_eval_run,
    lmms_python,
    run_lmms_eval,
    write_set,
    write_task,
)
from videoitg.commands.cli import main as videoitg
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
    names = [f"{sel}-{k}" for k in ks for sel in SELECTIONS]
    with serve_reader() as reader:
        runs = []
        for name in names:
            sel, k = name.split("-")
            margs = {"output_dir": out / "itg" / name, "answer_upstream": reader.base_url, "answer_model": MODEL,
                     "top_k": k, "selection": sel, "frame_size": 0}
            runs.append(lmms_eval_run(out / "tasks", margs, out / "lmms" / name, task=f"{TASK},{LURE_TASK}"))
            print(command_line(runs[-1]))
        t0 = time.perf_counter()
        run_lmms_eval(python, runs, out, env, timeout_s=3600)
        wall = time.perf_counter() - t0
    per_run = 2 * args.docs  # questions of the two sets, asked in the order of the runs
    assert len(reader.asked) == per_run * len(names), f"the reader was asked {len(reader.asked)} questions"
    for i, name in enumerate(names):
        images = Counter(a.images for a in reader.asked[i * per_run:(i + 1) * per_run])
        assert set(images) == {int(name.split("-")[1])}, f"{name}: the reader was sent {dict(images)} images a question"
    print(f"\n{len(names)} evaluations, {len(reader.asked)} questions, each with K images: {wall:.0f} s")
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
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
