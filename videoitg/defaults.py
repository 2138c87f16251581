"""The embedded default: the tiny checkpoint shipped in `videoitg/assets/tiny-videoitg/`, so the main job runs on a
fresh machine with no download (its sample video: `videoitg.synthetic.sample`). Generated files live under
$VIDEOITG_HOME (default ~/.cache/videoitg)."""

from __future__ import annotations

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
