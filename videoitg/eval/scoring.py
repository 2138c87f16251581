"""Annotated data scored with a `Scorer`: each video decoded and encoded once, its queries in padded batches."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from videoitg.errors import VideoITGError
from videoitg.eval.summary import RecordScores, query_info, query_positives
from videoitg.manifest.grouping import group_by_video


class FeatureScorer(Protocol):
    """What scoring annotated data needs of a scorer (`videoitg.pipeline.scorer.Scorer` has both)."""

    def stream_features(self, source: Path) -> Any: ...

    def score_visual(self, items: list[tuple[Any, str]], video: str = "", **options: Any) -> list[Any]: ...


BATCH_INSTRUCTIONS = 16  # a video's queries scored in one padded forward


def score_records(
    scorer: FeatureScorer,
    records: Sequence[Any],
    video_root: str | Path,
    batch_instructions: int = BATCH_INSTRUCTIONS,
    progress: bool = False,
    options: Any = None,
) -> tuple[list[RecordScores], list[tuple[object, str]]]:
    """Score annotation records (`videoitg.eval.annotations.EvalRecord` or `train.data.GroundingRecord`) with a
    `videoitg.pipeline.scorer.Scorer` (its sampling, decoder and limits). Each video is decoded and encoded once
    (`Scorer.stream_features`, as batch scoring does); its queries are scored in padded batches.
    `options`: the `videoitg.request.options.RequestOptions` the results are ranked under (None: the default rule).
    Returns the scored records and the ones that could not be used (with the reason)."""

    by_video = group_by_video(records)
    scored: list[RecordScores] = []
    bad: list[tuple[object, str]] = []
    it = by_video.items()
    if progress:
        it = tqdm(list(it), desc="eval videos", unit="video")
    for video, recs in it:
        try:
            feats = scorer.stream_features(Path(video_root) / video)
        except VideoITGError as e:
            bad += [(r, f"unreadable video: {e}") for r in recs]
            continue
        T = len(feats.frame_indices)
        usable = []
        for r in recs:
            pos = query_positives(r, feats.timestamps)
            if not pos:
                bad.append((r, "no positive frame among the sampled frames"))
            elif max(pos) >= T or min(pos) < 0:
                bad.append((r, f"clip_num out of range: the video has {T} sampled frames"))
            else:
                usable.append((r, pos))
        for i in range(0, len(usable), batch_instructions):
            chunk = usable[i : i + batch_instructions]
            try:
                results = scorer.score_visual([(feats, r.question) for r, _ in chunk], video=video,
                                              **({} if options is None else {"options": options}))
            except VideoITGError as e:
                bad += [(r, str(e)) for r, _ in chunk]
                continue
            for (r, pos), res in zip(chunk, results, strict=True):
                duration = getattr(r, "duration", None) or feats.duration
                scored.append(RecordScores(res.scores, pos, res.timestamps, r.kind, r.moments, duration,
                                           getattr(r, "saliency", None), query_info(r), order=res.ranking))
    return scored, bad
