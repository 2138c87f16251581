"""Annotated grounding data for `videoitg eval`, in the three public layouts, as one record type.

- VideoITG-40K (`.json`, a list): `{video, question, clip_num}` (positions in the annotation's sampling: 1 fps,
  end-aligned, at most 1024 frames), optional `segments` ([[start_s, end_s], ...]) and `type`. Read by
  `parse_records`, the reader training uses too (`videoitg.train.data`).
- QVHighlights (`.jsonl`, one query per line): `{qid, query, vid, duration, relevant_windows,
  relevant_clip_ids, saliency_scores}`; the video is `<vid>.<ext>` under the video root; `saliency_scores` holds
  one row of annotator scores (0-4) per relevant 2-second clip.
- Charades-STA (`.txt`): lines `<vid> <start_s> <end_s>##<query>`; the video is `<vid>.<ext>`.

Ground truth is a list of windows in seconds (several per query are allowed), and/or clip_num positions, and for
QVHighlights the per-clip saliency.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videoitg.decode.structs import DecodeLimits
from videoitg.errors import InputError
from videoitg.eval.metrics import QVH_CLIP_S, clip_count
from videoitg.jsonio import JSONProblem, load_file, loads, text_lines

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")


@dataclass
class EvalRecord:
    where: str  # "file[i]" / "file:line", for reports
    video: str  # file name relative to the video root
    query: str
    windows: list[tuple[float, float]] | None = None  # ground-truth moments, seconds
    clip_num: list[int] | None = None  # positive positions in the annotation's sampling (VideoITG-40K)
    kind: str = "all"
    qid: Any = None
    duration: float | None = None
    saliency: list[list[float]] | None = None  # [clip][annotator] 0-4 over the whole video (QVHighlights)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    # The names `videoitg.evaluation.score_records` and the reports read.
    @property
    def question(self) -> str:
        return self.query

    @property
    def moments(self) -> list[tuple[float, float]] | None:
        return self.windows


@dataclass
class Rejected:
    where: str
    reason: str
    record: Any

    def to_json(self) -> dict[str, Any]:
        return {"where": self.where, "reason": self.reason, "record": self.record}


@dataclass
class GroundingRecord:
    """One record of a VideoITG-40K annotation file, as training and evaluation read it (`parse_records`)."""

    index: int  # position in its annotation file (for reports)
    source: str  # annotation file
    video: str
    question: str
    clip_num: list[int] | None = None
    moments: list[list[float]] | None = None  # [[start_s, end_s], ...]
    kind: str = "all"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def where(self) -> str:
        return f"{self.source}[{self.index}] (video {self.video!r})"


def _question(rec: dict[str, Any]) -> str | None:
    """The instruction as the released loader builds it (train_itg.py `__getitem__`, `preprocess_plain`): the
    `question` with every "<image>\n" removed, nothing else (no strip); in the `conversations` form, the value of
    the second turn (the first turn is replaced by the video). None when there is none; a "<image>" left in the
    text (the released loader would place a second video there) is reported by `parse_records`."""
    if "question" in rec:
        q = rec["question"]
        return q.replace("<image>\n", "") if isinstance(q, str) else None
    turns = rec.get("conversations")
    if isinstance(turns, list) and len(turns) == 2 and isinstance(turns[1], dict):
        q = turns[1].get("value")
        return q if isinstance(q, str) else None
    return None


def parse_records(path: str | Path) -> tuple[list[GroundingRecord], list[Rejected]]:
    """Read one annotation file; structurally bad records go to the second list."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"annotation file {path} does not exist")
    data = load_file(path)  # InputError "FILE:LINE: problem": not UTF-8, not JSON, nested too deeply
    if not isinstance(data, list):
        raise InputError(f"annotation file {path} must hold a JSON list of records, got {type(data).__name__}")
    good: list[GroundingRecord] = []
    bad: list[Rejected] = []
    for i, rec in enumerate(data):
        where = f"{path}[{i}]"
        if not isinstance(rec, dict):
            bad.append(Rejected(where, "record is not an object", {"value": rec}))
            continue
        video, q = rec.get("video"), _question(rec)
        if not isinstance(video, str) or not video:
            bad.append(Rejected(where, "no 'video' path", rec))
            continue
        if not q or not q.strip():
            bad.append(Rejected(f"{where} (video {video!r})", "empty or missing question (a 'question', or "
                                "'conversations' with two turns)", rec))
            continue
        if "<image>" in q:
            bad.append(Rejected(f"{where} (video {video!r})", "the instruction holds an '<image>' placeholder "
                                "beyond the leading '<image>\\n'", rec))
            continue
        clips = rec.get("clip_num")
        moments = rec.get("segments", rec.get("timestamps"))
        if clips is None and moments is None:
            bad.append(Rejected(f"{where} (video {video!r})", "no 'clip_num' (nor 'segments') labels", rec))
            continue
        if clips is not None and (
            not isinstance(clips, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in clips)
        ):
            bad.append(Rejected(f"{where} (video {video!r})", f"clip_num must be a list of ints, got {clips!r}",
                                rec))
            continue
        if moments is not None and not _valid_moments(moments):
            bad.append(Rejected(f"{where} (video {video!r})", f"bad moments {moments!r}", rec))
            continue
        good.append(GroundingRecord(i, str(path), video, q, clips, moments, str(rec.get("type", "all")), rec))
    return good, bad


def _valid_moments(m: Any) -> bool:
    if not isinstance(m, list):
        return False
    for s in m:
        if not (isinstance(s, list | tuple) and len(s) == 2 and all(isinstance(x, int | float) for x in s)):
            return False
        if not (math.isfinite(s[0]) and math.isfinite(s[1]) and s[0] < s[1]):
            return False
    return True


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "videoitg"
    if suffix in (".jsonl", ".ndjson"):
        return "qvhighlights"
    if suffix == ".txt":
        return "charades"
    raise InputError(f"{path}: unknown annotation format {suffix!r} (.json VideoITG-40K, .jsonl QVHighlights, "
                     ".txt Charades-STA; or pass --format)")


def read_annotations(path: str | Path, fmt: str = "auto", video_root: Path | None = None
                     ) -> tuple[list[EvalRecord], list[Rejected]]:
    """Records of one annotation file, and the entries that cannot be evaluated (with the reason)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"annotation file {path} does not exist")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "videoitg":
        return _read_videoitg(path)
    if fmt == "qvhighlights":
        return _read_qvh(path, video_root)
    if fmt == "charades":
        return _read_charades(path, video_root)
    raise InputError(f"unknown annotation format {fmt!r} (videoitg, qvhighlights, charades)")


def video_file(vid: str, root: Path | None) -> str:
    """`vid` as named, if that file exists under root; else `vid` with the first video extension that does;
    else `<vid>.mp4` (reported as missing when it is scored)."""
    if root is not None:
        if Path(vid).suffix.lower() in VIDEO_EXTENSIONS and (root / vid).is_file():
            return vid
        for ext in VIDEO_EXTENSIONS:
            if (root / f"{vid}{ext}").is_file():
                return f"{vid}{ext}"
    return vid if Path(vid).suffix.lower() in VIDEO_EXTENSIONS else f"{vid}.mp4"


def _windows(value: Any) -> list[tuple[float, float]] | None:
    if not isinstance(value, list) or not value:
        return None
    out = []
    for w in value:
        if not (isinstance(w, (list, tuple)) and len(w) == 2 and all(isinstance(x, (int, float)) for x in w)):
            return None
        a, b = float(w[0]), float(w[1])
        if not (math.isfinite(a) and math.isfinite(b) and a < b):
            return None
        out.append((a, b))
    return out


def _read_videoitg(path: Path) -> tuple[list[EvalRecord], list[Rejected]]:
    good, bad = parse_records(path)
    recs = [EvalRecord(r.where(), r.video, r.question, [tuple(m) for m in r.moments] if r.moments else None,
                       r.clip_num, r.kind, r.index, None, None, r.raw) for r in good]
    return recs, bad


def _read_qvh(path: Path, root: Path | None) -> tuple[list[EvalRecord], list[Rejected]]:
    good, bad = [], []
    for n, line, problem in text_lines(path):
        where = f"{path}:{n}"
        if problem is not None:
            bad.append(Rejected(where, problem, line))
            continue
        try:
            d = loads(line)
        except JSONProblem as e:
            bad.append(Rejected(where, str(e), line))
            continue
        if not isinstance(d, dict):
            bad.append(Rejected(where, "line is not a JSON object", d))
            continue
        vid, query = d.get("vid"), d.get("query")
        if not isinstance(vid, str) or not vid or not isinstance(query, str) or not query.strip():
            bad.append(Rejected(where, "needs 'vid' and a non-empty 'query'", d))
            continue
        windows = _windows(d.get("relevant_windows"))
        if windows is None:
            bad.append(Rejected(where, f"bad or missing relevant_windows {d.get('relevant_windows')!r}", d))
            continue
        try:
            duration = _qvh_duration(d.get("duration"))
            saliency = _qvh_saliency(d, duration)
        except ValueError as e:
            bad.append(Rejected(where, str(e), d))
            continue
        good.append(EvalRecord(where, video_file(vid, root), query.strip(), windows, None, "all", d.get("qid"),
                               duration, saliency, d))
    return good, bad


def max_clips() -> int:
    """Most 2-second clips an evaluated video can have: the decoder's duration bound (4 h: 7,200 clips). A
    saliency table is sized by the clip ids and the duration an annotation states, so both are held to it."""
    return math.ceil(DecodeLimits().max_duration_s / QVH_CLIP_S)


MAX_ANNOTATORS = 32  # QVHighlights has 3 annotator scores per clip


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _shown(x: Any) -> str:
    """A value as the JSON file spells it (null, true, "text")."""
    try:
        return json.dumps(x)
    except (TypeError, ValueError):
        return repr(x)


def _qvh_duration(value: Any) -> float | None:
    """The video's duration in seconds as the line states it (None when absent or not positive)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        return None
    limit = max_clips() * QVH_CLIP_S
    if not value <= limit:
        raise ValueError(f"duration {value!r} s is over the {limit:g} s a decoded video may last")
    return float(value)


def _qvh_saliency(d: dict[str, Any], duration: float | None) -> list[list[float]] | None:
    ids, scores = d.get("relevant_clip_ids"), d.get("saliency_scores")
    if ids is None and scores is None:
        return None
    if not (isinstance(ids, list) and isinstance(scores, list) and len(ids) == len(scores) and ids):
        raise ValueError("relevant_clip_ids and saliency_scores must be lists of the same length")
    limit = max_clips()
    for i in ids:
        if not (isinstance(i, int) and not isinstance(i, bool) and 0 <= i < limit):
            raise ValueError(f"relevant_clip_ids must be clip numbers 0 to {limit - 1} (2-s clips of at most "
                             f"{limit * QVH_CLIP_S:g} s), got {i!r}")
    if not all(isinstance(s, list) and s and len(s) == len(scores[0]) for s in scores):
        raise ValueError("saliency_scores must hold one equally long list of annotator scores per clip")
    if len(scores[0]) > MAX_ANNOTATORS:
        raise ValueError(f"saliency_scores hold {len(scores[0])} annotator scores per clip, more than "
                         f"{MAX_ANNOTATORS}")
    for clip, s in zip(ids, scores, strict=True):
        for x in s:
            if not _is_number(x):
                raise ValueError(f"saliency_scores of clip {clip} hold {_shown(x)}: every score must be a finite "
                                 "number")
    num = max(clip_count(duration) if duration else 0, max(ids) + 1)
    full = [[0.0] * len(scores[0]) for _ in range(num)]
    for i, s in zip(ids, scores, strict=True):
        full[i] = [float(x) for x in s]
    return full


def _read_charades(path: Path, root: Path | None) -> tuple[list[EvalRecord], list[Rejected]]:
    good, bad = [], []
    for n, line, problem in text_lines(path):
        where = f"{path}:{n}"
        if problem is not None:
            bad.append(Rejected(where, problem, line))
            continue
        head, sep, query = line.partition("##")
        parts = head.split()
        if not sep or len(parts) != 3 or not query.strip():
            bad.append(Rejected(where, "expected '<vid> <start> <end>##<query>'", line))
            continue
        try:
            a, b = float(parts[1]), float(parts[2])
        except ValueError:
            bad.append(Rejected(where, f"start/end are not numbers: {parts[1]!r} {parts[2]!r}", line))
            continue
        if not (math.isfinite(a) and math.isfinite(b) and 0 <= a < b):
            bad.append(Rejected(where, f"bad window [{a}, {b}]", line))
            continue
        good.append(EvalRecord(where, video_file(parts[0], root), query.strip(), [(a, b)], None, "all", n - 1,
                               None, None, {"line": line}))
    return good, bad
