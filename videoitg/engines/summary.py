"""`ENGINES/build.json`, the summary `videoitg build` writes beside the engines it built (engine_build/build.py):
the checkpoint, the runtime each step serves with (`runtimes`), how TensorRT-LLM runs (`trtllm`), the versions the
engines were built with (`versions`), what was built and what was not. Read here, and only here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BUILD_SUMMARY = "build.json"


def summary_path(engines: str | Path) -> Path:
    return Path(engines) / BUILD_SUMMARY


def read_summary(engines: str | Path) -> dict[str, Any] | None:
    """The summary of the engines directory `engines`; None where it has none."""
    path = summary_path(engines)
    return json.loads(path.read_text()) if path.is_file() else None
