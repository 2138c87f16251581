"""The sample video the main job scores: a synthetic clip generated once under $VIDEOITG_HOME/sample with its
instruction and ground truth (`sample.json`)."""

from __future__ import annotations

import json
from pathlib import Path

from videoitg.defaults import home
from videoitg.synthetic.task import make_sample_video


def is_sample_video(source: str | Path | bytes) -> bool:
    """Whether `source` is the generated demo clip (by path, or by content for bytes), without generating it."""
    sample = home() / "sample" / "sample.mp4"
    if not sample.is_file():
        return False
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source) == sample.stat().st_size and bytes(source) == sample.read_bytes()
    try:
        return Path(source).resolve() == sample.resolve()
    except (OSError, TypeError):
        return False


def sample_video_meta() -> dict:
    """The sample clip's description: `video` path, `instruction`, `segments` (ground truth, seconds), ..."""
    sample_video()
    return json.loads((home() / "sample" / "sample.json").read_text())


def sample_video() -> tuple[Path, str]:
    """(path of the sample clip, an instruction whose answer is visible in it)."""
    out = home() / "sample"
    out.mkdir(exist_ok=True)
    meta_path = out / "sample.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if Path(meta["video"]).exists():
            return Path(meta["video"]), meta["instruction"]
    meta = make_sample_video(out / "sample.mp4")
    meta = {"video": str(out / "sample.mp4"), **{k: v for k, v in meta.items() if k != "video"}}
    meta_path.write_text(json.dumps(meta, indent=2))
    return Path(meta["video"]), meta["instruction"]
