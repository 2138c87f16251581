"""`videoitg eval`: grounding metrics of a checkpoint (or of a results.jsonl) on annotated data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from videoitg.moments import MomentParams
from videoitg.sampling import SamplingParams

if TYPE_CHECKING:
    from videoitg.eval.summary import RecordScores

import argparse
import json
from pathlib import Path

from videoitg.errors import InputError
from videoitg.outputs import DEFAULT_RANKING_RULE
from videoitg.request.limits import Limits
from videoitg.request.options import add_flags, from_args
from videoitg.writes import write_whole

# Imports that need torch, the pipeline or an optional extra sit inside the functions that use them: `videoitg --help`
# answers without them (videoitg/commands/cli.py).

HELP = ("evaluate grounding on annotated videos (VideoITG-40K, QVHighlights, Charades-STA): frame recall/AP, "
        "moment retrieval R1/R5/mIoU and MR-mAP, highlight mAP/HIT@1; QVHighlights' submission file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="+", type=Path,
                        help="annotation file(s): .json VideoITG-40K list, .jsonl QVHighlights, .txt Charades-STA")
    parser.add_argument("--format", choices=("auto", "videoitg", "qvhighlights", "charades"), default="auto",
                        help="annotation layout (default: from the file extension)")
    parser.add_argument("--video-root", type=Path, help="video folder (default: <annotation dir>/videos)")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint directory (default: the embedded tiny one)")
    parser.add_argument("--results", type=Path, help="score this results.jsonl instead of running a model")
    parser.add_argument("--out", type=Path, help="folder for eval.json, table.txt, per_record.jsonl")
    parser.add_argument("--submission", type=Path, metavar="FILE",
                        help="QVHighlights: also write the predictions in the official submission format (qid, "
                             "query, vid, pred_relevant_windows, pred_saliency_scores), for its standalone_eval or "
                             "the benchmark server")
    parser.add_argument("--k", default="8,16,32", help="fixed K values for recall/precision@K (default 8,16,32)")
    parser.add_argument("--moment-thresholds", default=None,
                        help="relative levels of the moment rule, comma-separated (default 0.3,0.5,0.7)")
    parser.add_argument("--moment-min-gap-s", type=float, default=None, help="merge runs this close (default 1)")
    parser.add_argument("--moment-nms-iou", type=float, default=None, help="NMS IoU of the moment rule (default 0.5)")
    parser.add_argument("--saliency-min", type=float, default=4,
                        help="QVHighlights: a clip is a highlight from this annotator score (2 Fair, 3 Good, "
                             "4 VeryGood: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="auto (float16 on GPU as released, float32 on CPU), float32, "
                        "bfloat16, float16")
    parser.add_argument("--truncate-instruction", action="store_true",
                        help="cut an instruction over the model's length budget as the released model does "
                        "(default: the record is skipped with the reason)")
    add_flags(parser, ["ranking_rule"], {"ranking_rule": "released, as the released code ranks; the ranking "
                                         "recall, precision and AP read; with --results, the file's own order"})
    parser.add_argument("--num-frames", type=int, default=None,
                        help="max sampled frames (default: 1024 for VideoITG-40K, the annotation's sampling; 512 "
                             "otherwise, as served)")
    parser.add_argument("--fps", type=float, default=1.0, help="sampling rate (default 1)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N records")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _moment_params(args: argparse.Namespace):
    values = {"moment_thresholds": args.moment_thresholds or "",
              "moment_min_gap_s": "" if args.moment_min_gap_s is None else str(args.moment_min_gap_s),
              "moment_nms_iou": "" if args.moment_nms_iou is None else str(args.moment_nms_iou)}
    return MomentParams.from_mapping(values)


TRAIN_FRAMES = 1024  # the training sampling's frame cap, which VideoITG-40K clip_num index


def max_eval_frames() -> int:
    """Most frames `--num-frames` may ask for: the deployment's `max_sampled_frames` (VIDEOITG_MAX_SAMPLED_FRAMES,
    512 by default), raised to the training sampling's 1024 that VideoITG-40K annotations index."""
    return max(TRAIN_FRAMES, Limits.from_env().max_sampled_frames)


def _sampling(fmt: str, args: argparse.Namespace):
    """The annotation's sampling: VideoITG-40K clip_num index the training rule (1 fps, end-aligned, up to 1024
    frames); windows in seconds (QVHighlights, Charades-STA) fit any sampling, so those use the served default.
    InputError for --num-frames outside 1..max_eval_frames() or an --fps that is not a positive number."""
    top = max_eval_frames()
    if args.num_frames is not None and not 1 <= args.num_frames <= top:
        raise InputError(f"--num-frames must be 1 to {top} (raise VIDEOITG_MAX_SAMPLED_FRAMES for more), got "
                         f"{args.num_frames}")
    try:
        if fmt == "videoitg":
            return SamplingParams(args.num_frames or TRAIN_FRAMES, args.fps, "train")
        return SamplingParams(args.num_frames or 512, args.fps, "eval")
    except InputError as e:
        raise InputError(f"--num-frames / --fps: {e}") from None


def run(args: argparse.Namespace) -> int:
    from videoitg.eval.annotations import detect_format, read_annotations
    from videoitg.eval.results import records_from_results
    from videoitg.eval.summary import format_table, query_where, summarize

    try:
        ks = tuple(int(k) for k in args.k.split(",") if k.strip())
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise InputError(f"--k needs positive integers, got {args.k!r}")
    params = _moment_params(args)
    fmts = {args.format if args.format != "auto" else detect_format(a) for a in args.data}
    if len(fmts) > 1:
        raise InputError(f"annotation files of different layouts ({', '.join(sorted(fmts))}): evaluate them apart")
    fmt = fmts.pop()
    if args.submission is not None and fmt != "qvhighlights":
        raise InputError(f"--submission writes QVHighlights' submission format; these annotations are {fmt}")
    sampling = _sampling(fmt, args)  # bad flags are refused before any file is read
    root = args.video_root or (args.data[0].parent / "videos" if (args.data[0].parent / "videos").is_dir()
                               else args.data[0].parent)
    records, bad = [], []
    for a in args.data:
        g, b = read_annotations(a, fmt, root)
        records += g
        bad += b
    unscored = 0  # annotation lines left out by --limit
    if args.limit:
        unscored = max(len(records) - args.limit, 0)
        records = records[: args.limit]
    if args.results:
        scored, skipped = records_from_results(args.results, records, root, sampling)
        source = str(args.results)
    else:
        from videoitg.pipeline.scorer import check_device

        check_device(args.device)
        scored, skipped = _score_with_model(args, records, root, sampling)
        source = str(args.checkpoint or "the embedded tiny checkpoint")
    from videoitg.eval.annotations import Rejected
    from videoitg.train.data import report_bad

    bad += [Rejected(query_where(r), why, getattr(r, "raw", None)) for r, why in skipped]
    report_bad(bad, args.out / "skipped_records.jsonl" if args.out else None)
    if not scored:
        raise InputError(f"no record could be evaluated ({len(bad)} skipped)")
    rows: list[dict] = []
    summary = summarize(scored, ks, params, args.saliency_min, rows=rows)
    table = format_table(summary, ks)
    print(f"{source}: {len(scored)} records evaluated, {len(bad)} skipped ({fmt} layout, sampling {sampling.key()})")
    print(table)
    if args.submission is not None:
        _write_submission(args.submission, scored, params, len(bad) + unscored)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {"source": source, "data": [str(a) for a in args.data], "format": fmt, "ks": list(ks),
                  "sampling": sampling.key(), "moment_params": params.to_parameters(),
                  "saliency_min": args.saliency_min, "skipped": len(bad),
                  "ranking_rule": "results file order" if args.results else args.ranking_rule or DEFAULT_RANKING_RULE,
                  **summary.to_dict()}
        write_whole(args.out / "eval.json", json.dumps(result, indent=2) + "\n")
        write_whole(args.out / "table.txt", table + "\n")
        write_whole(args.out / "per_record.jsonl", (json.dumps(r) + "\n" for r in rows))
    return 0


def _write_submission(path: Path, scored: list[RecordScores], params: MomentParams, missing: int) -> None:
    from videoitg.eval.summary import submission_record

    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, (json.dumps(submission_record(r, params)) + "\n" for r in scored))
    print(f"wrote {len(scored)} predictions to {path} (QVHighlights submission format)")
    if missing:
        print(f"note: {missing} annotation line(s) were skipped or left out by --limit and have no prediction there; "
              "the official evaluation refuses a file whose qids differ from the annotations' unless it is run with "
              "match_number=False")


def _score_with_model(args: argparse.Namespace, records: Sequence[Any], root: Path, sampling: SamplingParams
                      ) -> tuple[list[RecordScores], list[tuple[object, str]]]:
    from videoitg.eval.scoring import score_records
    from videoitg.model.checkpoint import load_checkpoint
    from videoitg.pipeline.scorer import Scorer, parse_dtype

    ckpt = args.checkpoint
    if ckpt is None:
        from videoitg.defaults import default_checkpoint

        ckpt = default_checkpoint()
    dtype = parse_dtype(args.dtype, args.device)
    model, tok = load_checkpoint(ckpt, args.device, dtype)
    # Annotations index the training sampling (up to 1024 frames), above a serving request's 512-frame cap.
    limits = Limits(max_sampled_frames=max(sampling.num_frames, Limits().max_sampled_frames))
    scorer = Scorer(ckpt, model=model, tokenizer=tok, device=args.device, dtype=dtype, sampling=sampling,
                    limits=limits, truncate=args.truncate_instruction)
    return score_records(scorer, records, root, progress=not args.quiet, options=from_args(args, ["ranking_rule"]))
