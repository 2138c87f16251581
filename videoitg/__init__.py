"""VideoITG Serve: the reference grounding model, its formats, and the pieces the engines and servers share.

    from videoitg import Scorer, Client
    result = Scorer.default().score("clip.mp4", "When does the dog jump?")   # in-process
    with Client("127.0.0.1:8001") as c:                                       # a running `videoitg serve`
        result = c.score("clip.mp4", "When does the dog jump?")
    result.moments, result.top_k_frames(8), result.to_record(doc_id=0)
    select(result, RequestOptions(top_k=8))                                    # the frames a request's options pick

Names are imported on first use, so `import videoitg` (and `videoitg --help`) stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Scorer": ("videoitg.pipeline.scorer", "Scorer"),
    "Client": ("videoitg.client.kserve", "VideoITGClient"),
    "GroundingResult": ("videoitg.outputs", "GroundingResult"),
    "MomentParams": ("videoitg.moments", "MomentParams"),
    "SamplingParams": ("videoitg.sampling", "SamplingParams"),
    "RequestOptions": ("videoitg.request.options", "RequestOptions"),
    "select": ("videoitg.request.options", "select"),
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'videoitg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
