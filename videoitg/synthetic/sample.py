"""The sample video the main job scores: a synthetic clip generated once under the home's `sample/`
(`videoitg.defaults.writable_home`) with its instruction and ground truth (`sample.json`)."""

from __future__ import annotations

import json
from pathlib import Path

from videoitg.defaults import files_home, writable_home
from videoitg.synthetic.task import make_sample_video
from videoitg.writes import write_whole


def is_sample_video(source: str | Path | bytes) -> bool:
    """Whether `source` is the generated demo clip (by path, or by content for bytes), without generating it."""
    where = files_home()
    sample = where / "sample" / "sample.mp4" if where is not None else None
    if sample is None or not sample.is_file():
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
    return json.loads((writable_home("the sample video") / "sample" / "sample.json").read_text())


def _meta(path: Path) -> dict | None:
    """The sample's description if `path` holds a whole one naming a clip that exists; None otherwise (absent,
    empty or torn by a full disk: the sample is made again)."""
    try:
        meta = json.loads(path.read_text())
        return meta if Path(meta["video"]).is_file() and isinstance(meta["instruction"], str) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def sample_video() -> tuple[Path, str]:
    """(path of the sample clip, an instruction whose answer is visible in it), the clip made on first use; its
    description (`sample.json`) is written whole once the clip is, so a run stopped midway makes it again."""
    out = writable_home("the sample video") / "sample"
    out.mkdir(exist_ok=True)
    meta_path = out / "sample.json"
    meta = _meta(meta_path)
    if meta is None:
        made = make_sample_video(out / "sample.mp4")
        meta = {"video": str(out / "sample.mp4"), **{k: v for k, v in made.items() if k != "video"}}
        write_whole(meta_path, json.dumps(meta, indent=2))
    return Path(meta["video"]), meta["instruction"]
