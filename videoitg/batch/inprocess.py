"""The in-process batch scorer: the core `Scorer` loaded once per Ray actor; a unit's video is prepared once
(decode + visual features, `Scorer.stream_features`) and each instruction scored against it."""

from __future__ import annotations

from typing import Any

from videoitg.batch.scorers import Outcome, ScorerSpec, prepare_then_score, row_options
from videoitg.manifest.rows import Row
from videoitg.pipeline.scorer import Scorer, VideoFeatures
from videoitg.request.options import recorded
from videoitg.sampling import SamplingParams


class InProcessScorer:
    def __init__(self, spec: ScorerSpec) -> None:
        sampling = SamplingParams(num_frames=spec.num_frames, target_fps=spec.target_fps, rule=spec.rule)
        self.scorer = Scorer(spec.checkpoint, device=spec.device, dtype=spec.dtype, sampling=sampling,
                             truncate=spec.truncate)
        self.options = spec.options

    def score_unit(self, rows: list[Row]) -> list[Outcome]:
        return prepare_then_score(self.prepare, self.score, rows)

    def prepare(self, video: str) -> VideoFeatures:
        return self.scorer.stream_features(video)

    def score(self, prepared: VideoFeatures, row: Row) -> dict[str, Any]:
        options = row_options(self.options, row)
        result = self.scorer.score_visual([(prepared, row.instruction)], video=row.video, options=options)[0]
        extra: dict[str, Any] = {"row_id": row.row_id}
        if row.extra:
            extra["extra"] = row.extra
        return result.to_record(doc_id=row.doc_id, video_path=row.video, picked=recorded(result, options), **extra)
