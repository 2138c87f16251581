"""Training data in the VideoITG-40K layout: a JSON list of records plus a video root folder.

A record is `{"video": <path relative to the root>, "question": <instruction>, "clip_num": [positive indices
into the sampled frames]}`; the LLaVA `conversations` form (two turns; the second one's value is the instruction,
as the released loader reads it) is accepted too, and `segments` / `timestamps` ([[start_s, end_s], ...]) for
moment annotations.
Frames are sampled with the training rule (1 fps, at most 1024, end-aligned), so clip_num index those frames.

Bad records are never trained on: a missing or unreadable video, an empty instruction, or clip_num outside the
video's sampled frames are reported (with the record's position and video) and skipped.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from videoitg.decode import decode_video
from videoitg.errors import InputError, VideoITGError
from videoitg.eval.annotations import GroundingRecord
from videoitg.eval.annotations import Rejected as BadRecord
from videoitg.eval.annotations import parse_records as parse_records  # the reader training uses, re-exported
from videoitg.eval.metrics import positives_from_moments
from videoitg.sampling import SamplingParams

log = logging.getLogger("videoitg.train")

TRAIN_SAMPLING = SamplingParams(num_frames=1024, target_fps=1.0, rule="train")


def released_length(rec: dict[str, Any]) -> int:
    """The released `modality_lengths`: words of the raw `question`, else of every turn (length grouping)."""
    if isinstance(rec.get("question"), str):
        return len(rec["question"].split())
    return sum(len(str(t.get("value", "")).split()) for t in rec.get("conversations", []) if isinstance(t, dict))


def labels_for(rec: GroundingRecord, timestamps: Sequence[float]) -> list[int]:
    """Positive sampled-frame positions of a record: clip_num when given, else frames inside its moments."""
    if rec.clip_num is not None:
        return sorted(set(rec.clip_num))
    return positives_from_moments(rec.moments or [], timestamps)


def check_labels(rec: GroundingRecord, num_frames: int) -> str | None:
    """Why a record cannot be trained on given its video's T sampled frames, or None."""
    if rec.clip_num is not None:
        out = [c for c in rec.clip_num if not 0 <= c < num_frames]
        if out:
            return f"clip_num {out} out of range: the video has {num_frames} sampled frames (0..{num_frames - 1})"
    return None


# ---- frames and features ----------------------------------------------------------------------------------
@dataclass
class VideoFrames:
    pixel_values: torch.Tensor  # [T, 3, S, S] float32
    frame_indices: list[int]
    timestamps: list[float]
    duration: float | None = None


def load_frames(path: Path, image_size: int, params: SamplingParams = TRAIN_SAMPLING) -> VideoFrames:
    """Decode the sampled frames of one video (the project's decode layer)."""
    f = decode_video(path, image_size=image_size, params=params)
    info = getattr(f, "info", None)
    return VideoFrames(f.pixel_values, list(f.frame_indices), list(f.timestamps),
                       getattr(info, "duration_s", None))


class FeatureStore:
    """Frozen-tower features per video, decoded on first use and kept in an LRU cache bounded in bytes.

    The vision tower is frozen in the recipe, so its output for a video never changes during training; caching
    it is exact and saves the decode + SigLIP pass on every later epoch.
    """

    def __init__(
        self,
        root: Path,
        encode: Callable[[torch.Tensor], torch.Tensor],
        image_size: int,
        params: SamplingParams = TRAIN_SAMPLING,
        max_bytes: int = 2 << 30,
        loader: Callable[[Path, int, SamplingParams], VideoFrames] = load_frames,
    ):
        self.root, self.encode, self.image_size, self.params = root, encode, image_size, params
        self.max_bytes, self.loader = max_bytes, loader
        self._cache: OrderedDict[str, tuple[torch.Tensor, VideoFrames]] = OrderedDict()
        self._bytes = 0

    def path(self, video: str) -> Path:
        return self.root / video

    def frames(self, video: str) -> VideoFrames:
        p = self.path(video)
        if not p.exists():
            raise InputError(f"video file {p} does not exist")
        return self.loader(p, self.image_size, self.params)

    def features(self, video: str) -> tuple[torch.Tensor, VideoFrames]:
        """([T, g², Cv] tower features, frame metadata without pixels)."""
        if video in self._cache:
            self._cache.move_to_end(video)
            return self._cache[video]
        fr = self.frames(video)
        feats = self.encode(fr.pixel_values).detach()
        meta = VideoFrames(torch.empty(0), fr.frame_indices, fr.timestamps, fr.duration)
        n = feats.numel() * feats.element_size()
        if n <= self.max_bytes:
            self._cache[video] = (feats, meta)
            self._bytes += n
            while self._bytes > self.max_bytes:
                _, (old, _) = self._cache.popitem(last=False)
                self._bytes -= old.numel() * old.element_size()
        return feats, meta


@dataclass
class Sample:
    record: GroundingRecord
    num_frames: int  # T sampled frames


def probe_videos(
    videos: Sequence[str], probe: Callable[[str], int], progress: bool = False
) -> dict[str, int | str]:
    """video -> T sampled frames, or the reason it cannot be read. `probe(video) -> T` raises for a missing or
    unreadable file. Each rank probes its share; the ranks exchange the dicts so they all keep the same samples.
    """
    status: dict[str, int | str] = {}
    it: Iterable[str] = videos
    if progress:
        it = tqdm(videos, desc="checking videos", unit="video")
    for v in it:
        try:
            status[v] = int(probe(v))
        except VideoITGError as e:
            status[v] = f"unreadable video: {e}"
        except Exception as e:  # a decoder bug must not kill a multi-hour run: report the record and go on
            status[v] = f"unreadable video ({type(e).__name__}: {e})"
    return status


def apply_status(
    records: Sequence[GroundingRecord], status: dict[str, int | str]
) -> tuple[list[Sample], list[BadRecord]]:
    good: list[Sample] = []
    bad: list[BadRecord] = []
    for r in records:
        st = status.get(r.video)
        if isinstance(st, str):
            bad.append(BadRecord(r.where(), st, r.raw))
            continue
        if st is None:
            bad.append(BadRecord(r.where(), "video was not checked", r.raw))
            continue
        why = check_labels(r, st)
        if why:
            bad.append(BadRecord(r.where(), why, r.raw))
            continue
        good.append(Sample(r, st))
    return good, bad


def report_bad(bad: Sequence[BadRecord], out: Path | None = None) -> None:
    """Log each skipped record and, when `out` is given, write them to a JSONL file next to the run."""
    for b in bad:
        log.warning("skipping %s: %s", b.where, b.reason)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w") as f:
            for b in bad:
                f.write(json.dumps(b.to_json()) + "\n")


# ---- order ------------------------------------------------------------------------------------------------
def epoch_order(num_samples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled sample order of one epoch; depends only on (seed, epoch), so every rank and every resumed run
    sees the same order."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=g).tolist()


def grouped_epoch_order(videos: Sequence[str], group: int, seed: int, epoch: int) -> list[int]:
    """A shuffled sample order in which runs of up to `group` consecutive samples share one video.

    Why: the trainer then runs the tower and projector once per video in a step, not once per sample (2.5x cheaper
    steps on the synthetic task; on its own it did not change accuracy, docs/training.md). Depends only on (videos,
    group, seed, epoch), like `epoch_order`, so ranks and resumed runs agree.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    by_video: dict[str, list[int]] = {}
    for i, v in enumerate(videos):
        by_video.setdefault(v, []).append(i)
    chunks: list[list[int]] = []
    for v in sorted(by_video):
        idx = by_video[v]
        idx = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
        chunks += [idx[j : j + group] for j in range(0, len(idx), group)]
    return [i for c in torch.randperm(len(chunks), generator=g).tolist() for i in chunks[c]]


def sample_hw(seed: int, epoch: int, position: int, low: int, high: int, cap: int) -> int:
    """Training-time tokens per side, the released rule: min(randint(low, high), cap) with `high` the token budget's
    side (`budget_per_side`, uncapped) and `cap` the tower's grid, so short clips (budget side > grid) draw the
    full grid often. Seeded by the sample's place in the run: the same on any rank and after a resume."""
    if high <= low:
        return max(1, min(high, cap))  # the original's randint would fail here; take the budget's side
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + position)
    return min(int(torch.randint(low, high + 1, (1,), generator=g).item()), cap)


def length_grouped_epoch_order(lengths: Sequence[int], micro_batch: int, chunks: int, seed: int,
                               epoch: int) -> list[int]:
    """The released `group_by_modality_length` order (eagle_trainer.py `get_length_grouped_indices`): a shuffled
    order cut into megabatches of `chunks * micro_batch` (chunks = processes x accumulation steps), each sorted by
    length, longest first, then dealt into `chunks` micro-batches of about equal total length. With the trainer's
    batch layout (position a*world + r of a global batch is micro-batch a of rank r) a global batch is one
    megabatch, as in the released run. Depends only on (lengths, sizes, seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    idx = torch.randperm(len(lengths), generator=g).tolist()
    size = chunks * micro_batch
    out: list[int] = []
    for start in range(0, len(idx), size):
        mega = sorted(idx[start : start + size], key=lambda i: lengths[i], reverse=True)
        out += [i for part in _even_chunks(mega, lengths, chunks) for i in part]
    return out


def _even_chunks(indices: list[int], lengths: Sequence[int], n: int) -> list[list[int]]:
    """`split_to_even_chunks`: each index to the chunk with the least total length that is not full yet."""
    if len(indices) % n:
        return [indices[i::n] for i in range(n)]
    per = len(indices) // n
    parts: list[list[int]] = [[] for _ in range(n)]
    totals = [0.0] * n
    for i in indices:
        k = totals.index(min(totals))
        parts[k].append(i)
        totals[k] += lengths[i]
        if len(parts[k]) == per:
            totals[k] = float("inf")
    return parts
