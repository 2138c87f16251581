"""The served tensors of a result: one writer (the server's selection, `result_outputs`, and its frames,
`frame_outputs`) and its reader (the client, `result_from_outputs`, `frames_from_outputs`), named and typed as
`protocol` declares them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from videoitg.contract.protocol import (
    APPLIED_RANKING_RULE,
    CACHE_HIT,
    DURATION,
    FRAME_FORMATS,
    FRAME_INDICES,
    LOGITS,
    MOMENTS,
    RANKING,
    RESULT_OUTPUTS,
    SCORES,
    TIMESTAMPS,
    TOP_K_FRAMES,
    TensorSpec,
)
from videoitg.moments import DEFAULT_PARAMS, MomentParams
from videoitg.outputs import DEFAULT_RANKING_RULE, GroundingResult
from videoitg.request.options import RequestOptions, select


def result_outputs(result: GroundingResult, options: RequestOptions, moment_params: MomentParams = DEFAULT_PARAMS,
                   cache_hit: bool = False) -> dict[str, np.ndarray]:
    """The served outputs of one request (without the batch axis), named and typed as `protocol.RESULT_OUTPUTS`;
    `options` as the deployment applies them (`RequestOptions.with_defaults`).
    Every per-frame output is chronological; the ranking is its own output (positions into them, best first)."""
    moments = [tuple(m) for m in result.find_moments(moment_params)]
    values = {
        SCORES: result.scores,
        LOGITS: result.logits,
        FRAME_INDICES: result.frame_indices,
        TIMESTAMPS: result.timestamps,
        RANKING: result.ranking,
        TOP_K_FRAMES: [result.frame_indices[i] for i in select(result, options)],
        CACHE_HIT: [cache_hit],
        MOMENTS: np.asarray(moments, dtype=np.float64).reshape(-1, 3),
        APPLIED_RANKING_RULE: [result.ranking_rule.encode()],
        DURATION: [duration_value(result.duration)],
    }
    return {t.name: _tensor(t, values[t.name]) for t in RESULT_OUTPUTS}


def _tensor(spec: TensorSpec, value: Any) -> np.ndarray:
    return np.asarray(value, dtype=spec.numpy)


def duration_value(duration: float | None) -> float:
    """The DURATION tensor's value (decode step and served output): seconds, or 0 where the container did not say
    (`videoitg.moments.known_duration` reads 0 back as None)."""
    return 0.0 if duration is None else float(duration)


def result_from_outputs(outputs: Mapping[str, np.ndarray], instruction: str = "", video: str = "") -> GroundingResult:
    """Inverse of `result_outputs` (the client side), under the rule the server applied."""
    rule = outputs.get(APPLIED_RANKING_RULE)
    rule = bytes(rule.reshape(-1)[0]).decode() if rule is not None else DEFAULT_RANKING_RULE
    duration = outputs.get(DURATION)
    return GroundingResult(outputs[LOGITS].reshape(-1).astype(np.float64).tolist(),
                           outputs[FRAME_INDICES].reshape(-1).tolist(), outputs[TIMESTAMPS].reshape(-1).tolist(),
                           instruction, video, rule, None if duration is None else float(duration.reshape(-1)[0]))


# The picked frames as images, when a request asks (FRAMES): one output per format (`protocol.FRAME_FORMATS`),
# chronological (TOP_K_FRAMES' order, as `export_frames` lists them). jpeg: [K] JPEG files; uint8: [K, H, W, 3] RGB.
def frame_outputs(images: Sequence[bytes] | Sequence[np.ndarray], fmt: str) -> dict[str, np.ndarray]:
    """The served frames of one request (without the batch axis): JPEG file bytes, or [H, W, 3] uint8 images of
    one size."""
    if fmt == "jpeg":
        out = np.empty(len(images), dtype=np.object_)
        out[:] = list(images)
        return {FRAME_FORMATS["jpeg"]: out}
    return {FRAME_FORMATS["uint8"]: np.stack(list(images)).astype(np.uint8, copy=False)}


def frames_from_outputs(outputs: Mapping[str, np.ndarray]) -> list[bytes] | list[np.ndarray] | None:
    """Inverse of `frame_outputs` (the client side): the JPEG files or the [H, W, 3] images, chronological; None
    when the answer holds no frames."""
    jpegs, pixels = outputs.get(FRAME_FORMATS["jpeg"]), outputs.get(FRAME_FORMATS["uint8"])
    if jpegs is not None:
        return [bytes(b) for b in jpegs.reshape(-1)]
    if pixels is not None:
        return list(pixels.reshape(-1, *pixels.shape[-3:]))
    return None
