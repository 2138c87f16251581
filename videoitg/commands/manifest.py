"""`videoitg manifest --from-lmms-eval TASK --out manifest.jsonl`: an lmms-eval task's requests as a batch manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Imports that need torch, the pipeline or an optional extra sit inside the functions that use them: `videoitg --help`
# answers without them (videoitg/commands/cli.py).

HELP = ("write a batch manifest with an lmms-eval task's doc_ids and full prompts (contexts), for videoitg batch "
        "(needs the lmms extra)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from-lmms-eval", dest="tasks", required=True, metavar="TASK[,TASK...]",
                   help="lmms-eval task or group name(s), comma-separated")
    p.add_argument("--out", required=True, help="manifest to write (.jsonl)")
    p.add_argument("--include-path", help="folder of extra lmms-eval task YAMLs (a local task)")
    p.add_argument("--model-name", default="videoitg",
                   help="the lmms-eval --model name whose prompt variant the task uses (default videoitg, which "
                        "tasks without a videoitg entry treat as 'default')")
    p.add_argument("--limit", type=int, help="only the first N documents of each task")


def _quiet_lmms_eval_logs() -> None:
    try:
        from loguru import logger  # lmms-eval logs through loguru, at DEBUG while it indexes its tasks
    except ImportError:
        return
    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def run(args: argparse.Namespace) -> int:
    from videoitg.lmms.tasks import manifest_rows, task_requests, write_manifest

    _quiet_lmms_eval_logs()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    requests = task_requests(tasks, args.include_path, args.model_name, args.limit)
    rows, skipped = manifest_rows(requests)
    for why in skipped:
        print(f"videoitg manifest: skipped {why}", file=sys.stderr)
    out = write_manifest(args.out, rows)
    roots = sorted({str(Path(r["video"]).resolve().parent) for r in rows})
    print(f"wrote {len(rows)} rows ({len(skipped)} skipped) from {', '.join(tasks)} to {out}")
    if rows:
        shown = " ".join(f"--allow-root {r}" for r in roots[:3]) + (" ..." if len(roots) > 3 else "")
        print(f"score them: videoitg batch {out} --out OUT {shown}")
    return 0
