"""What a grounding request returns, in memory and as `results.jsonl` in the schema VideoITG's downstream
consumers read as `frame_indices_jsonl` (spec §4)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class GroundingResult:
    """Per sampled frame, in chronological order: logit, original frame number, timestamp (seconds)."""

    logits: list[float]
    frame_indices: list[int]
    timestamps: list[float]
    instruction: str = ""
    video: str = ""

    def __post_init__(self) -> None:
        if not len(self.logits) == len(self.frame_indices) == len(self.timestamps):
            raise ValueError("logits, frame_indices and timestamps must have one entry per sampled frame")

    @property
    def scores(self) -> list[float]:
        """Sigmoid relevance in [0, 1]."""
        return [1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x)) for x in self.logits]

    @property
    def ranking(self) -> list[int]:
        """Positions (0..T-1) by score descending; ties go to the earlier frame (the original's unstable sort
        leaves them unspecified)."""
        return sorted(range(len(self.logits)), key=lambda i: (-self.logits[i], i))

    @property
    def ranked_frame_indices(self) -> list[int]:
        return [self.frame_indices[i] for i in self.ranking]

    def top_k_positions(self, k: int) -> list[int]:
        """The k best positions, back in chronological order (what a downstream video-LLM is fed)."""
        return sorted(self.ranking[: max(0, k)])

    def top_k_frames(self, k: int) -> list[int]:
        return [self.frame_indices[i] for i in self.top_k_positions(k)]

    def to_record(self, doc_id: Any = None, video_path: str | None = None, top_k: int | None = None,
                  **extra: Any) -> dict[str, Any]:
        """One results.jsonl object: the downstream keys first (`index` score-descending, `logits` = sigmoid
        scores rounded to 2 decimals, as the released wrapper writes them), then our own fields."""
        order = self.ranking
        scores = self.scores
        rec: dict[str, Any] = {
            "index": [self.frame_indices[i] for i in order],
            "logits": [round(scores[i], 2) for i in order],
            "num_frames": 1,  # the released writer stores the number of visuals here, not a frame count
            "contexts": self.instruction,
            "video_path": video_path if video_path is not None else self.video,
            "doc_id": doc_id,
            "frame_indices": self.frame_indices,
            "timestamps": [round(t, 3) for t in self.timestamps],
            "scores": [round(s, 6) for s in scores],
        }
        if top_k is not None:
            rec["top_k"] = self.top_k_frames(top_k)
        rec.update(extra)
        return rec


def write_results_jsonl(path: str | Path, records: list[dict[str, Any]], append: bool = True) -> None:
    with Path(path).open("a" if append else "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def read_frame_indices_jsonl(path: str | Path) -> dict[Any, list[int]]:
    """Read results.jsonl the way the downstream consumers do: first line per doc_id wins, `index` only."""
    out: dict[Any, list[int]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if "doc_id" in r and isinstance(r.get("index"), list) and r["doc_id"] not in out:
                out[r["doc_id"]] = r["index"]
    return out
