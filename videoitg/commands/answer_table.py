"""`videoitg answer-table RUN...`: lmms-eval's results of `--model videoitg` runs that answered (`answer_upstream=`)
as one table, printed and written as markdown and a bar chart (`videoitg.lmms.table`, docs/lmms-eval.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("tabulate lmms-eval runs of --model videoitg with answer_upstream=: accuracy per task and selection "
        "(videoitg or uniform frames), with K, the video-LLM and the number of documents; markdown + bar chart PNG")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="an lmms-eval --output_path folder (every *_results.json under it) or one results file")
    p.add_argument("--out", default="answer-table", metavar="PREFIX",
                   help="writes PREFIX.md and PREFIX.png (default answer-table)")


def run(args: argparse.Namespace) -> int:
    from videoitg.lmms.table import bar_chart, collect, markdown
    from videoitg.writes import write_whole

    rows = collect(args.runs)
    text = markdown(rows)
    print(text, end="")
    md = Path(args.out + ".md")
    md.parent.mkdir(parents=True, exist_ok=True)
    write_whole(md, text)
    print(f"wrote {md} and {bar_chart(rows, args.out + '.png')}")
    return 0
