"""Helpers shared by the batch tests: tiny real clips, a manifest with good and bad rows, and the batch stream run
without Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.clips import write_rgb_clip
from tests.support.compare import assert_records_close
from videoitg.batch import runner, store
from videoitg.manifest.rows import Row
from videoitg.outputs import GroundingResult

INSTRUCTIONS = [
    "when is the red circle visible?", "when does the square move left?", "which frames matter for this video?",
    "find the moment the blue star moves up.", "when does the green triangle appear and when does it vanish?",
]
CLIP_FRAMES, CLIP_FPS = 24, 4
# Sampling used by every batch test: 4 fps candidates of a 24-frame 4 fps clip, 8 kept.
SAMPLING_ARGS = ["--num-frames", "8", "--target-fps", "4"]


def make_clip(path: Path, seed: int, frames: int = CLIP_FRAMES, fps: int = CLIP_FPS) -> Path:
    """A small MPEG-4 clip with a moving coloured box (different per seed, so scores differ per video)."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(40, 255, 3)

    def frame(i: int) -> np.ndarray:
        a = np.zeros((48, 64, 3), np.uint8)
        x = (i * 3 + seed * 7) % 48
        a[12:32, x:x + 16] = colour
        return a

    return write_rgb_clip(path, map(frame, range(frames)), codec="mpeg4", fps=fps)


def make_manifest(root: Path, videos: int = 8, per_video: int = 5,
                  seed: int = 0) -> tuple[Path, list[dict], dict[str, str]]:
    """`root/data/manifest.jsonl` with videos x per_video good rows and bad rows of every kind. Clip `v` is made with
    seed `seed + v` (other seeds, other video bytes: another server cache key).

    Returns (manifest path, good rows as written, {bad row id: expected error stage}).
    """
    data = root / "data"
    (data / "vids").mkdir(parents=True)
    outside = root / "outside"
    outside.mkdir()
    make_clip(outside / "secret.mp4", 99)
    (data / "vids" / "escape.mp4").symlink_to(outside / "secret.mp4")  # a symlink out of the root
    (data / "vids" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    good: list[dict] = []
    for v in range(videos):
        make_clip(data / "vids" / f"v{v}.mp4", seed + v)
        for q in range(per_video):
            good.append({"video": f"vids/v{v}.mp4", "instruction": INSTRUCTIONS[q % len(INSTRUCTIONS)],
                         "doc_id": v * per_video + q})
    bad = [
        ({"video": "vids/corrupt.mp4", "instruction": INSTRUCTIONS[0], "doc_id": 900}, "900", "video"),
        ({"video": "vids/v1.mp4", "instruction": "over " * 3000, "doc_id": 901}, "901", "score"),
        ({"video": "../outside/secret.mp4", "instruction": INSTRUCTIONS[0], "doc_id": 902}, "902", "manifest"),
        ({"video": "vids/escape.mp4", "instruction": INSTRUCTIONS[0], "doc_id": 903}, "903", "manifest"),
        ({"video": str(outside / "secret.mp4"), "instruction": INSTRUCTIONS[0], "doc_id": 904}, "904", "manifest"),
        ({"video": "vids/v2.mp4", "doc_id": 905}, "905", "manifest"),
    ]
    lines = [json.dumps(r) for r in good]
    # Interleave the bad rows so they land in the middle of units and shards.
    for k, (rec, _, _) in enumerate(bad):
        lines.insert(3 + 6 * k, json.dumps(rec))
    lines.insert(20, "{not json")
    path = data / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, good, {rid: stage for _, rid, stage in bad}


def local_stream(units, opts):
    """`runner._stream` without Ray: the real ScoreActor (model loaded once) over the units, in order."""
    actor = runner.ScoreActor(opts.scorer)
    for u in units:
        out = actor({"unit": np.array([json.dumps([r.to_json() for r in u])], dtype=object)})
        yield from (str(x) for x in out["out"])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def check_shards(out: Path) -> int:
    """Every visible shard parses completely (temp files are hidden `.name.tmp-PID` and never read)."""
    n = 0
    for p in sorted((out / store.SHARD_DIR).glob("*.jsonl")):
        for rec in read_jsonl(p):  # raises on a torn line
            assert isinstance(rec.get("row_id"), str), p
            n += 1
    return n


def comparable(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if not k.endswith("_s")}


def assert_rows_close(results: list[dict], want: dict[str, dict]) -> None:
    """Each row of `want` once, each record within tolerance of its own (rows rescored after a fault may run in
    other batches, so their floats are another computation's)."""
    assert sorted(r["row_id"] for r in results) == sorted(want), "a row was lost or doubled"
    for r in results:
        assert_records_close(comparable(r), want[r["row_id"]])


def reference_record(result: GroundingResult, row: Row, top_k: int) -> dict[str, Any]:
    """The record a batch run writes for `row` scored as `result`, its top-K frames picked."""
    return result.to_record(doc_id=row.doc_id, video_path=row.video, picked=result.top_k_positions(top_k))
