"""The embedded default: the tiny checkpoint shipped in `videoitg/assets/tiny-videoitg/` and a generated sample
video, so the main job runs on a fresh machine with no download. Generated files live under $VIDEOITG_HOME
(default ~/.cache/videoitg)."""

from __future__ import annotations

import json
import os
from pathlib import Path

ASSETS = Path(__file__).parent / "assets"


def home() -> Path:
    p = Path(os.environ.get("VIDEOITG_HOME", Path.home() / ".cache" / "videoitg"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def default_checkpoint() -> Path:
    """The shipped tiny checkpoint (package data; trained on the synthetic task by `videoitg.train.synthetic_run`)."""
    return ASSETS / "tiny-videoitg"


def sample_video_meta() -> dict:
    """The sample clip's description: `video` path, `instruction`, `segments` (ground truth, seconds), ..."""
    sample_video()
    return json.loads((home() / "sample" / "sample.json").read_text())


def sample_video() -> tuple[Path, str]:
    """(path of the sample clip, an instruction whose answer is visible in it)."""
    from videoitg.synthetic import make_sample_video

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
