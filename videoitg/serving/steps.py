"""What the python-backend models do, minus Triton: parse a request, load the half of the model a step owns,
turn the grounding logits into the served outputs. The `python_backend/*.py` files only move tensors between
Triton and these functions, so this logic is importable and testable without a server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videoitg.decode.errors import VideoTooLargeError
from videoitg.errors import InputError
from videoitg.limits import InstructionTooLongError, Limits
from videoitg.moments import DEFAULT_PARAMS, MomentParams
from videoitg.outputs import DEFAULT_RANKING_RULE, GroundingResult, check_ranking_rule
from videoitg.sampling import SamplingParams


# ---- model-config parameters ---------------------------------------------------------------------------------
def model_parameters(model_config: str | dict[str, Any]) -> dict[str, str]:
    """The string parameters of a Triton model config (as given to `initialize(args)["model_config"]`)."""
    cfg = json.loads(model_config) if isinstance(model_config, str) else model_config
    return {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}


def resolve_checkpoint(value: str) -> Path:
    """'default' (what the committed repositories say) -> the embedded tiny checkpoint; else a directory."""
    if value in ("", "default"):
        from videoitg.defaults import default_checkpoint

        return default_checkpoint()
    return Path(value)


def sampling_from(params: dict[str, str]) -> SamplingParams:
    return SamplingParams(
        num_frames=int(params.get("num_frames", 512)),
        target_fps=float(params.get("target_fps", 1.0)),
        rule=params.get("sampling_rule", "eval"),  # type: ignore[arg-type]
    )


def limits_from(params: dict[str, str]) -> Limits:
    """The deployment's limits from a model's parameters (what `RepoSpec.limits.to_parameters()` wrote); a model
    config without them (hand-written) gets the built-in defaults."""
    return Limits.from_mapping(params)


def device_dtype(params: dict[str, str]) -> tuple[str, torch.dtype]:
    from videoitg.pipeline import parse_dtype

    device = params.get("device", "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"  # a GPU repository started on a CPU machine still answers (slowly) instead of failing
    return device, parse_dtype(params.get("dtype") or None, device)


def load_part(checkpoint: Path, part: str, device: str, dtype: torch.dtype):
    """Load only the half a step runs ('vision' or 'grounding'); see `videoitg.checkpoint.drop_unused_half`."""
    from videoitg.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint, device, dtype, with_tokenizer=part == "grounding", part=part)


def feature_identity(checkpoint: Path, params: dict[str, str]) -> str:
    """What the cached features depend on besides the video: weights, dtype, device kind, vision runtime and the
    engines directory it runs from."""
    from videoitg.checkpoint import checkpoint_identity

    device, dtype = device_dtype(params)
    parts = [checkpoint_identity(checkpoint), str(dtype), device.split(":")[0],
             params.get("vision_runtime", "torch"), params.get("engines", "")]
    return "|".join(parts)


# ---- requests ----------------------------------------------------------------------------------------------
@dataclass
class Request:
    video: bytes
    instruction: str
    top_k: int
    doc_id: int | None
    ranking_rule: str = DEFAULT_RANKING_RULE


# Characters that carry no text: an instruction made only of these (and whitespace) is empty.
_INVISIBLE = dict.fromkeys(map(ord, "\x00\u200b\u200c\u200d\u2060\ufeff"))


def _one(arr: np.ndarray | None, name: str) -> Any:
    if arr is None:
        return None
    if arr.size != 1:
        raise InputError(f"{name} must hold exactly one value per request (got shape {list(arr.shape)}); "
                         "send one video per request")
    return arr.reshape(-1)[0]


def parse_request(video: np.ndarray | None, instruction: np.ndarray | None, top_k: np.ndarray | None,
                  doc_id: np.ndarray | None, default_top_k: int, limits: Limits | None = None,
                  ranking_rule: np.ndarray | None = None, default_ranking_rule: str = DEFAULT_RANKING_RULE) -> Request:
    """Validate the top-level inputs (Triton itself already rejected missing required inputs and wrong dtypes).
    The byte bounds are checked here, before the video is hashed or sent on; the token bound needs the tokenizer
    and the video's frame count, so the grounding step checks it (`Limits.check_instruction`)."""
    lim = limits or Limits()
    v = _one(video, "VIDEO")
    if v is None:
        raise InputError("VIDEO is missing")
    if not isinstance(v, (bytes, np.bytes_)) or len(v) == 0:
        raise InputError("VIDEO is empty: send the encoded video file's bytes")
    if len(v) > lim.decode.max_bytes:
        raise VideoTooLargeError(f"VIDEO is {len(v)} bytes, over the limit of {lim.decode.max_bytes} bytes "
                                 "(max_video_bytes)")
    text = _one(instruction, "INSTRUCTION")
    if text is None:
        raise InputError("INSTRUCTION is missing")
    if isinstance(text, (bytes, np.bytes_)):
        if len(text) > lim.max_instruction_bytes:
            raise InstructionTooLongError(f"INSTRUCTION is {len(text)} bytes, over the limit of "
                                          f"{lim.max_instruction_bytes} bytes (max_instruction_bytes)")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"INSTRUCTION is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if not str(text).translate(_INVISIBLE).strip():
        raise InputError("INSTRUCTION is empty (only whitespace, NUL or zero-width characters)")
    k = _one(top_k, "TOP_K")
    k = default_top_k if k is None else int(k)
    if k < 1:
        raise InputError(f"TOP_K must be >= 1, got {k}")
    d = _one(doc_id, "DOC_ID")
    rule = _one(ranking_rule, "RANKING_RULE")
    if rule is None:
        rule = default_ranking_rule
    elif isinstance(rule, (bytes, np.bytes_)):
        rule = bytes(rule).decode("utf-8", errors="replace")
    try:
        rule = check_ranking_rule(str(rule))
    except InputError as e:
        raise InputError(f"RANKING_RULE: {e}") from None
    return Request(bytes(v), str(text), k, None if d is None else int(d), rule)


# ---- selection -----------------------------------------------------------------------------------------------
def result_outputs(result: GroundingResult, top_k: int,
                   moment_params: MomentParams = DEFAULT_PARAMS) -> dict[str, np.ndarray]:
    """The served outputs of one request (without the batch axis)."""
    ranking = result.ranking
    ts = np.asarray(result.timestamps, dtype=np.float64)
    fi = np.asarray(result.frame_indices, dtype=np.int64)
    logits = np.asarray(result.logits, dtype=np.float32)
    moments = np.asarray([tuple(m) for m in result.find_moments(moment_params)], dtype=np.float32).reshape(-1, 3)
    return {
        "SCORES": (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32),
        "LOGITS": logits,
        "RANKING": np.asarray(ranking, dtype=np.int32),
        "FRAME_INDICES": fi[ranking],
        "TIMESTAMPS": ts[ranking],
        "TOP_K_FRAMES": np.asarray(result.top_k_frames(top_k), dtype=np.int64),
        "MOMENTS": moments,
        "RANKING_RULE": np.asarray([result.ranking_rule.encode()], dtype=np.object_),
    }


def result_from_outputs(outputs: dict[str, np.ndarray], instruction: str = "", video: str = "") -> GroundingResult:
    """Inverse of `result_outputs` (the client side): back to chronological order, under the server's rule."""
    ranking = outputs["RANKING"].reshape(-1)
    T = ranking.shape[0]
    fi = np.empty(T, dtype=np.int64)
    ts = np.empty(T, dtype=np.float64)
    fi[ranking] = outputs["FRAME_INDICES"].reshape(-1)
    ts[ranking] = outputs["TIMESTAMPS"].reshape(-1)
    rule = outputs.get("RANKING_RULE")
    rule = bytes(rule.reshape(-1)[0]).decode() if rule is not None else DEFAULT_RANKING_RULE
    return GroundingResult(outputs["LOGITS"].reshape(-1).astype(np.float64).tolist(), fi.tolist(), ts.tolist(),
                           instruction, video, rule)
