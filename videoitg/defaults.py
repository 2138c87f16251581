"""The embedded default: the tiny checkpoint shipped in `videoitg/assets/tiny-videoitg/` and a generated sample
video, so the main job runs on a fresh machine with no download. Generated files live under $VIDEOITG_HOME
(default ~/.cache/videoitg)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from videoitg.synthetic import make_sample_video

ASSETS = Path(__file__).parent / "assets"


def home() -> Path:
    p = Path(os.environ.get("VIDEOITG_HOME", Path.home() / ".cache" / "videoitg"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def default_checkpoint() -> Path:
    """The shipped tiny checkpoint (package data; trained on the synthetic task by `videoitg.train.synthetic_run`)."""
    return ASSETS / "tiny-videoitg"


# Said once when the embedded checkpoint scores anything but the sample clip, in-process or by a server.
_DEMO = ("the embedded tiny demo checkpoint, trained on synthetic shapes: it is not a video model and its scores mean "
         "nothing for real video")
DEMO_NOTICE = f"NOTICE: scoring with {_DEMO}; use --checkpoint DIR with a VideoITG checkpoint (docs/checkpoints.md)"


def served_demo_notice(url: str) -> str:
    """The notice for a server at `url` that serves the embedded checkpoint."""
    return (f"NOTICE: {url} scores with {_DEMO}; serve a VideoITG checkpoint (`videoitg serve --checkpoint DIR`, "
            "docs/checkpoints.md)")


def is_demo_checkpoint(checkpoint: str | Path | None) -> bool:
    """Whether the checkpoint directory `checkpoint` is the embedded tiny one."""
    if checkpoint is None:
        return False
    try:
        return Path(checkpoint).resolve() == default_checkpoint().resolve()
    except (OSError, TypeError):
        return False


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
