"""`videoitg eval`: grounding metrics of a checkpoint (or of a results.jsonl) on annotated data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from videoitg.errors import InputError
from videoitg.outputs import DEFAULT_RANKING_RULE, RANKING_RULES

HELP = "evaluate frame-level and moment-level grounding on annotated videos (VideoITG-40K layout)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="+", type=Path, help="annotation JSON file(s): [{video, question, clip_num}]")
    parser.add_argument("--video-root", type=Path, help="video folder (default: <annotation dir>/videos)")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint directory (default: the embedded tiny one)")
    parser.add_argument("--results", type=Path, help="score this results.jsonl instead of running a model")
    parser.add_argument("--out", type=Path, help="folder for eval.json, table.txt, per_record.jsonl")
    parser.add_argument("--k", default="8,16,32", help="fixed K values for recall/precision@K (default 8,16,32)")
    parser.add_argument("--threshold", type=float, default=0.5, help="score threshold of the moment rule")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="auto (float16 on GPU as released, float32 on CPU), float32, "
                        "bfloat16, float16")
    parser.add_argument("--ranking-rule", choices=RANKING_RULES, default=DEFAULT_RANKING_RULE,
                        help="how frames are ranked for recall/precision/AP and the moment's top frame: released "
                        "(default, as the released code ranks) | exact (by the fp32 logit); with --results, the "
                        "file's own order is used")
    parser.add_argument("--num-frames", type=int, default=1024, help="max sampled frames (training rule: 1024)")
    parser.add_argument("--fps", type=float, default=1.0, help="sampling rate of the annotation (default 1)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N records")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from videoitg import evaluation as ev
    from videoitg.sampling import SamplingParams
    from videoitg.train.data import TRAIN_SAMPLING, load_frames, parse_records, report_bad

    ks = tuple(int(k) for k in args.k.split(",") if k.strip())
    if not ks or min(ks) < 1:
        raise InputError(f"--k needs positive integers, got {args.k!r}")
    records, bad = [], []
    for a in args.data:
        g, b = parse_records(a)
        records += g
        bad += b
    if args.limit:
        records = records[: args.limit]
    root = args.video_root or (args.data[0].parent / "videos" if (args.data[0].parent / "videos").is_dir()
                               else args.data[0].parent)
    params = SamplingParams(args.num_frames, args.fps, "train") if (args.num_frames, args.fps) != (1024, 1.0) \
        else TRAIN_SAMPLING
    rows: list[dict] = []
    if args.results:
        scored, skipped = ev.records_from_results(args.results, records)
        source = str(args.results)
    else:
        from videoitg.checkpoint import load_checkpoint
        from videoitg.pipeline import Scorer, parse_dtype

        ckpt = args.checkpoint
        if ckpt is None:
            from videoitg.defaults import default_checkpoint

            ckpt = default_checkpoint()
        dtype = parse_dtype(args.dtype, args.device)
        model, tok = load_checkpoint(ckpt, args.device, dtype)
        from videoitg.limits import Limits

        # Annotations index the training sampling (up to 1024 frames), above a serving request's 512-frame cap.
        limits = Limits(max_sampled_frames=max(params.num_frames, Limits().max_sampled_frames))
        scorer = Scorer(ckpt, model=model, tokenizer=tok, device=args.device, dtype=dtype, sampling=params,
                        limits=limits, ranking_rule=args.ranking_rule)
        image_size = model.config.vision.image_size
        scored, skipped, rows = ev.score_records(
            scorer, records, root, lambda p: load_frames(p, image_size, params), progress=not args.quiet
        )
        source = str(ckpt)
    from videoitg.train.data import BadRecord

    bad += [BadRecord(r.where(), why, r.raw) for r, why in skipped]
    report_bad(bad, args.out / "skipped_records.jsonl" if args.out else None)
    if not scored:
        raise InputError(f"no record could be evaluated ({len(bad)} skipped)")
    summary = ev.summarize(scored, ks, args.threshold)
    table = ev.format_table(summary, ks)
    print(f"{source}: {len(scored)} records evaluated, {len(bad)} skipped")
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {"source": source, "data": [str(a) for a in args.data], "ks": list(ks),
                  "threshold": args.threshold, "skipped": len(bad),
                  "ranking_rule": "results file order" if args.results else args.ranking_rule, **summary.to_dict()}
        (args.out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "table.txt").write_text(table + "\n")
        with (args.out / "per_record.jsonl").open("w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return 0
