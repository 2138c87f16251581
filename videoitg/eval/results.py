"""Precomputed predictions (a results.jsonl) read, checked and matched to annotation records for evaluation."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videoitg.decode import probe_video
from videoitg.decode.structs import VideoInfo
from videoitg.errors import InputError, VideoITGError
from videoitg.eval.summary import RecordScores, query_info, query_positives
from videoitg.jsonio import JSONProblem, loads, text_lines
from videoitg.moments import known_duration
from videoitg.sampling import SamplingParams, sample_frame_indices


def _prediction_key(video: str, query: str) -> tuple[str, str]:
    # Stem: QVHighlights / Charades name videos without an extension; results.jsonl holds the file path.
    return Path(str(video)).stem, str(query).strip()


@dataclass
class Prediction:
    """One results.jsonl line, checked: chronological frame numbers and scores (and seconds, when the line has
    them), the line's own ranking (`index`) when it is a list of frame numbers."""

    line: int
    raw: dict
    scores: list[float]
    frames: list[int]
    timestamps: list[float] | None
    index: list[int] | None


def _numbers(value: object, kind: type, name: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"'{name}' must be a list, got {type(value).__name__}")
    for x in value:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise ValueError(f"'{name}' must hold finite numbers, got {x!r}")
        if kind is int and x != int(x):
            raise ValueError(f"'{name}' must hold frame numbers, got {x!r}")
    return [kind(x) for x in value]


def _prediction(n: int, p: object) -> Prediction:
    """ValueError naming the problem when a results line cannot be evaluated."""
    if not isinstance(p, dict):
        raise ValueError("line is not a JSON object")
    index = _numbers(p["index"], int, "index") if isinstance(p.get("index"), list) else None
    if all(k in p for k in ("scores", "frame_indices", "timestamps")):
        scores = _numbers(p["scores"], float, "scores")
        frames = _numbers(p["frame_indices"], int, "frame_indices")
        ts = _numbers(p["timestamps"], float, "timestamps")
        if not len(scores) == len(frames) == len(ts):
            raise ValueError(f"'scores', 'frame_indices' and 'timestamps' differ in length ({len(scores)}, "
                             f"{len(frames)}, {len(ts)})")
        return Prediction(n, p, scores, frames, ts, index)
    if "index" not in p or "logits" not in p:
        raise ValueError("needs 'scores', 'frame_indices' and 'timestamps', or 'index' and 'logits'")
    logits = _numbers(p["logits"], float, "logits")
    if index is None or len(index) != len(logits):
        raise ValueError("'index' and 'logits' must be lists of the same length")
    pairs = sorted(zip(index, logits, strict=True))
    return Prediction(n, p, [s for _, s in pairs], [f for f, _ in pairs], None, index)


def _stated_duration(value: object) -> float | None:
    return known_duration(value) if isinstance(value, (int, float)) else None


def read_predictions(results_path: str | Path) -> dict[tuple[str, str], Prediction]:
    """(video file stem, instruction) -> the first prediction for it in a results.jsonl. InputError "FILE:LINE:
    problem" for a line that is not UTF-8, not JSON (a truncated write) or not a usable record: scores from a
    damaged file are not evaluated."""
    preds: dict[tuple[str, str], Prediction] = {}
    try:
        lines = list(text_lines(results_path))
    except OSError as e:
        raise InputError(f"results file {results_path}: cannot be read ({e.strerror or e})") from None
    for n, line, problem in lines:
        try:
            if problem is not None:
                raise ValueError(problem)
            p = _prediction(n, loads(line))
        except (JSONProblem, ValueError) as e:
            raise InputError(f"{results_path}:{n}: {e}") from None
        key = _prediction_key(p.raw.get("video_path", ""), p.raw.get("contexts", ""))
        preds.setdefault(key, p)  # first wins, as downstream readers take it
    return preds


def records_from_results(results_path: str | Path, records: Sequence[Any], video_root: str | Path | None = None,
                         sampling: SamplingParams | None = None, probe: Callable[[Path], VideoInfo] | None = None
                         ) -> tuple[list[RecordScores], list[tuple[object, str]]]:
    """Evaluate precomputed predictions (results.jsonl from `videoitg score` / `batch` / serving, or the upstream
    writer's `index` + `logits` records): match each annotation record by (video file stem, instruction).

    Times: our records carry `timestamps`; upstream records only frame numbers (`index`), which are turned into
    seconds with the video's real frame rate (probed from the video file; refused, naming the file, when it cannot
    be read). Positions: clip_num positions index the annotation's sampling (`sampling`, the training rule for
    VideoITG-40K), so a prediction made with other sampling (another rule, rate or frame cap) is refused with the
    frame counts of both instead of being scored against the wrong frames.
    """
    probe = probe or probe_video
    preds = read_predictions(results_path)
    infos: dict[str, object] = {}

    def video_info(p: dict, r: Any) -> tuple[VideoInfo | None, str | None]:
        """(VideoInfo, None) or (None, why not) for the prediction's video (its path, else under video_root)."""
        cands = [Path(str(p["video_path"]))] if p.get("video_path") else []
        if video_root is not None:
            cands.append(Path(video_root) / r.video)
        path = next((c for c in cands if c.is_file()), None)
        if path is None:
            return None, f"video {' or '.join(str(c) for c in cands) or r.video} not found"
        if str(path) not in infos:
            try:
                infos[str(path)] = probe(path)
            except VideoITGError as e:
                infos[str(path)] = f"video {path} cannot be read ({e})"
        got = infos[str(path)]
        return (None, got) if isinstance(got, str) else (got, None)

    scored, bad = [], []
    for r in records:
        p = preds.get(_prediction_key(r.video, r.question))
        if p is None:
            bad.append((r, "no prediction for this video and instruction"))
            continue
        info = None
        if p.timestamps is not None:
            scores, frames, ts = p.scores, p.frames, p.timestamps
        else:  # only the downstream keys: index (score-descending frame numbers) + rounded sigmoid scores
            scores, frames = p.scores, p.frames
            info, why = video_info(p.raw, r)
            if info is None:
                bad.append((r, "the prediction has only frame numbers (index, logits): turning them into seconds "
                               f"needs the video's frame rate, but {why}; pass --video-root"))
                continue
            ts = [f / info.fps for f in frames]
        if r.clip_num is not None and sampling is not None:
            if info is None:
                info, why = video_info(p.raw, r)
            if info is None:
                bad.append((r, f"clip_num positions need the annotation's sampling to be checked, but {why}; "
                               "pass --video-root"))
                continue
            want = sample_frame_indices(info.total_frames, info.fps, sampling)
            if frames != want:
                bad.append((r, f"the prediction's {len(frames)} frames are not the annotation's sampling "
                               f"({sampling.rule} rule, {sampling.target_fps:g} fps, at most {sampling.num_frames} "
                               f"frames: {len(want)} frames here), so clip_num would point at other frames; score "
                               f"with --sampling {sampling.rule} --num-frames {sampling.num_frames} --target-fps "
                               f"{sampling.target_fps:g}, or evaluate with --checkpoint"))
                continue
        pos = query_positives(r, ts)
        if not pos or max(pos) >= len(scores):
            bad.append((r, f"positives {pos} do not fit the prediction's {len(scores)} frames"))
            continue
        # The file's own ranking (its `index` order), which is what downstream readers take the top-K from; an
        # index that does not list every frame once is ranked by the scores instead.
        where = {f: i for i, f in enumerate(frames)}
        order = [where[f] for f in p.index if f in where] if p.index is not None else None
        if order is not None and len(order) != len(scores):
            order = None
        # The annotation's duration, else the one the record states (the container's, where it was scored), else
        # the probed video's.
        duration = (getattr(r, "duration", None) or _stated_duration(p.raw.get("duration"))
                    or (info.duration_s if info is not None else None))
        scored.append(RecordScores(scores, pos, ts, r.kind, r.moments, duration, getattr(r, "saliency", None),
                                   query_info(r), order=order))
    return scored, bad
