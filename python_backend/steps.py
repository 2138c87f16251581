"""What the python-backend models do, minus Triton: read a model's parameters, parse a request, check each step's
inputs, decode. The model files only move tensors between Triton and these functions, so this logic is importable
and testable without a server. The served outputs of a result are the core package's (`videoitg.outputs`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videoitg.errors import InputError
from videoitg.limits import Limits
from videoitg.moments import frames_duration, known_duration
from videoitg.outputs import DEFAULT_RANKING_RULE, RANKING_RULES, check_ranking_rule, duration_value
from videoitg.paths import MediaChangedError, MediaRoots
from videoitg.sampling import SamplingParams


# ---- model-config parameters ---------------------------------------------------------------------------------
def model_parameters(model_config: str | dict[str, Any]) -> dict[str, str]:
    """The string parameters of a Triton model config (as given to `initialize(args)["model_config"]`)."""
    cfg = json.loads(model_config) if isinstance(model_config, str) else model_config
    return {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}


def resolve_checkpoint(value: str, root: Path | None = None) -> Path:
    """'default' (what the committed repositories say) -> the embedded tiny checkpoint; else a directory, relative
    ones against `root` (the repository's root)."""
    if value in ("", "default"):
        from videoitg.defaults import default_checkpoint

        return default_checkpoint()
    return _under(root, value)


def _under(root: Path | None, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() or root is None else root / p


@dataclass(frozen=True)
class StepAssets:
    """Where a step's checkpoint, external SigLIP tower and engines are, from its model parameters. Relative
    paths are resolved against the repository's root, so a repository that holds its files
    (`videoitg repo build`, `repository.bundle_assets`) can be copied to another machine and served there."""

    checkpoint: Path
    vision_tower: Path | None = None
    engines: Path | None = None

    @classmethod
    def from_parameters(cls, params: dict[str, str], model_dir: str | Path | None = None) -> StepAssets:
        """`model_dir`: the model's own directory (`initialize(args)["model_repository"]`), one below the root."""
        root = Path(model_dir).parent if model_dir else None
        tower, engines = params.get("vision_tower", ""), params.get("engines", "")
        return cls(resolve_checkpoint(params.get("checkpoint", "default"), root),
                   _under(root, tower) if tower else None, _under(root, engines) if engines else None)

    def config(self):  # type: ignore[no-untyped-def]
        from videoitg.checkpoint import load_config

        return load_config(self.checkpoint, self.vision_tower)[0]

    def load_part(self, part: str, device: str, dtype: torch.dtype):  # type: ignore[no-untyped-def]
        """Load only the half a step runs ('vision' or 'grounding'); see `videoitg.checkpoint.drop_unused_half`."""
        from videoitg.checkpoint import load_checkpoint

        return load_checkpoint(self.checkpoint, device, dtype, vision_tower=self.vision_tower,
                               with_tokenizer=part == "grounding", part=part)

    def identity(self) -> str:
        from videoitg.checkpoint import checkpoint_identity

        return checkpoint_identity(self.checkpoint)


def sampling_from(params: dict[str, str]) -> SamplingParams:
    return SamplingParams(
        num_frames=int(params.get("num_frames", 512)),
        target_fps=float(params.get("target_fps", 1.0)),
        rule=params.get("sampling_rule", "eval"),  # type: ignore[arg-type]
    )


def device_dtype(params: dict[str, str]) -> tuple[str, torch.dtype]:
    from videoitg.pipeline import parse_dtype

    device = params.get("device", "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"  # a GPU repository started on a CPU machine still answers (slowly) instead of failing
    return device, parse_dtype(params.get("dtype") or None, device)


def feature_identity(assets: StepAssets, params: dict[str, str]) -> str:
    """What the cached features depend on besides the video: weights, dtype, device kind, vision runtime and the
    engines it runs from."""
    device, dtype = device_dtype(params)
    parts = [assets.identity(), str(dtype), device.split(":")[0], params.get("vision_runtime", "torch"),
             str(assets.engines or "")]
    return "|".join(parts)


# ---- requests ----------------------------------------------------------------------------------------------
@dataclass
class Request:
    video: bytes | None  # None: named by `digest` or `reference`
    instruction: str
    top_k: int
    ranking_rule: str = DEFAULT_RANKING_RULE
    digest: str | None = None  # sent instead of the bytes: the client's `videoitg.digest.video_digest` of the video
    reference: str | None = None  # VIDEO_URI: the real path of a file under a media root (`read_reference`)

    def video_digest(self) -> str:
        """The digest the feature cache is keyed by: the server's own hash of the bytes when they came (of a
        reference's content: `read_reference`)."""
        if self.video is not None:
            from videoitg.digest import video_digest

            return video_digest(self.video)
        assert self.digest is not None
        return self.digest


@dataclass(frozen=True)
class FileVideo:
    """A video named by reference, as read once: its real path, the digest of its content and the identity of the
    file hashed (`videoitg.paths.file_identity`), which the decode step checks again when it opens the file."""

    path: str
    digest: str
    identity: str


def read_reference(roots: MediaRoots, reference: str, limits: Limits) -> FileVideo:
    """Open a referenced video under `roots`, bound its size (`max_reference_bytes`) and hash its content: the
    feature cache keys it by what it holds, never by its name. A file written while it was hashed is refused."""
    from videoitg.decode.errors import EmptyVideoError, VideoTooLargeError
    from videoitg.digest import file_digest
    from videoitg.paths import file_identity, shown

    fd = roots.open(reference)
    try:
        st = os.fstat(fd)
        if st.st_size == 0:
            raise EmptyVideoError(f"VIDEO_URI {shown(reference)} is empty (0 bytes)")
        if st.st_size > limits.max_reference_bytes:
            raise VideoTooLargeError(f"VIDEO_URI {shown(reference)} is {st.st_size} bytes, over the "
                                     f"{limits.max_reference_bytes} byte limit of a video by reference "
                                     "(--max-reference-bytes, env VIDEOITG_MAX_REFERENCE_BYTES)")
        digest = file_digest(fd)
        identity = file_identity(st)
        if file_identity(os.fstat(fd)) != identity:
            raise MediaChangedError(f"VIDEO_URI {shown(reference)} was written while it was read: send the "
                                    "request again once it is complete")
    finally:
        os.close(fd)
    return FileVideo(reference, digest, identity)


MAX_OPTION_BYTES = 64  # a named option (RANKING_RULE, FRAMES)
MAX_VERSION_BYTES = 256  # VIDEO_VERSION, the `videoitg.paths.file_identity` of a referenced file
NO_MEDIA_ROOTS = MediaRoots()  # the default: videos by reference are refused
RAISE_VIDEO_BYTES = ("raise it with --max-video-bytes when the repository is built (env VIDEOITG_MAX_VIDEO_BYTES), "
                     "or name a long video by reference (VIDEO_URI, under a --media-root: docs/limits.md)")
_DIGEST = re.compile(r"b3:[0-9a-f]{64}")  # what `videoitg.digest.video_digest` gives (matched whole)


def one_value(arr: np.ndarray | None, name: str) -> Any:
    """The single value of an optional request input; None when it is absent."""
    if arr is None:
        return None
    if arr.size != 1:
        raise InputError(f"{name} must hold exactly one value per request (got shape {list(arr.shape)}); "
                         "send one video per request")
    return arr.reshape(-1)[0]


def option_text(arr: np.ndarray | None, name: str, choices: Sequence[str]) -> str | None:
    """A named option (RANKING_RULE, FRAMES) as text; None when absent. Its size is checked before any use, so an
    error never echoes a long field back; which of `choices` it names is the caller's check."""
    value = one_value(arr, name)
    if value is None:
        return None
    if len(value) > MAX_OPTION_BYTES:
        raise InputError(f"{name} is {len(value)} bytes; at most {MAX_OPTION_BYTES} (one of {', '.join(choices)})")
    return bytes(value).decode("utf-8", errors="replace") if isinstance(value, (bytes, np.bytes_)) else str(value)


def parse_request(video: np.ndarray | None, instruction: np.ndarray | None, top_k: np.ndarray | None,
                  default_top_k: int, limits: Limits | None = None,
                  ranking_rule: np.ndarray | None = None, default_ranking_rule: str = DEFAULT_RANKING_RULE,
                  video_digest: np.ndarray | None = None, video_uri: np.ndarray | None = None,
                  media_roots: MediaRoots = NO_MEDIA_ROOTS) -> Request:
    """Validate the top-level inputs (Triton itself already rejected wrong dtypes and missing required inputs).
    The byte bounds and the instruction's text are checked here, before the video is hashed or sent on; the token
    bound needs the tokenizer and the video's frame count, so the grounding step checks it
    (`videoitg.text.instruction_ids`). The video comes as exactly one of VIDEO (its bytes), VIDEO_DIGEST (a digest
    alone, for a video the server may have cached) or VIDEO_URI (a file under one of `media_roots`, resolved here;
    `read_reference` opens and hashes it): bytes are always hashed by the server itself."""
    lim = limits or Limits()
    v, d, u = one_value(video, "VIDEO"), one_value(video_digest, "VIDEO_DIGEST"), one_value(video_uri, "VIDEO_URI")
    if sum(x is not None for x in (v, d, u)) > 1:
        raise InputError("send one of VIDEO, VIDEO_DIGEST or VIDEO_URI")
    if v is None and d is None and u is None:
        raise InputError("VIDEO is missing (or VIDEO_DIGEST, for a video this server has, or VIDEO_URI)")
    if u is not None:
        real = media_roots.resolve(bytes(u) if isinstance(u, (bytes, np.bytes_)) else str(u))
        text = _instruction(instruction, lim)
        k, rule = parse_options(top_k, ranking_rule, default_top_k, default_ranking_rule)
        return Request(None, text, k, rule, reference=str(real))
    if d is not None:
        digest = bytes(d).decode("ascii", errors="replace") if isinstance(d, (bytes, np.bytes_)) else str(d)
        if not _DIGEST.fullmatch(digest):
            raise InputError("VIDEO_DIGEST must be the video's BLAKE3 digest as videoitg.digest.video_digest "
                             "writes it: 'b3:' and 64 lower-case hex digits")
        text = _instruction(instruction, lim)
        k, rule = parse_options(top_k, ranking_rule, default_top_k, default_ranking_rule)
        return Request(None, text, k, rule, digest)
    if not isinstance(v, (bytes, np.bytes_)):
        raise InputError("VIDEO must hold the encoded video file's bytes")
    from videoitg.decode.container import check_source  # here: the client imports this module, not the decoder
    from videoitg.decode.errors import VideoTooLargeError

    try:
        check_source(bytes(v), lim.decode)  # empty, over max_video_bytes: the decoder's own check
    except VideoTooLargeError as e:
        raise VideoTooLargeError(f"VIDEO: {e}; {RAISE_VIDEO_BYTES}") from None
    except InputError as e:
        raise type(e)(f"VIDEO: {e}") from None
    text = _instruction(instruction, lim)
    k, rule = parse_options(top_k, ranking_rule, default_top_k, default_ranking_rule)
    return Request(bytes(v), text, k, rule)


def _instruction(instruction: np.ndarray | None, limits: Limits) -> str:
    text = one_value(instruction, "INSTRUCTION")
    if text is None:
        raise InputError("INSTRUCTION is missing")
    try:
        return limits.instruction_text(bytes(text) if isinstance(text, np.bytes_) else text)
    except InputError as e:
        raise type(e)(f"INSTRUCTION: {e}") from None


def parse_options(top_k: np.ndarray | None, ranking_rule: np.ndarray | None, default_top_k: int,
                  default_ranking_rule: str = DEFAULT_RANKING_RULE) -> tuple[int, str]:
    """The optional selection inputs: (top_k, ranking rule), defaults filled in."""
    k = one_value(top_k, "TOP_K")
    k = default_top_k if k is None else int(k)
    if k < 1:
        raise InputError(f"TOP_K must be >= 1, got {k}")
    rule = option_text(ranking_rule, "RANKING_RULE", RANKING_RULES)
    try:
        rule = check_ranking_rule(default_ranking_rule if rule is None else rule)
    except InputError as e:
        raise InputError(f"RANKING_RULE: {e}") from None
    return k, rule


# ---- step inputs ---------------------------------------------------------------------------------------------
# Every step model is reachable by a client as well as by the top-level model, so each checks its own inputs as
# the top-level model checks a request: a bad tensor is that request's INVALID_ARGUMENT, never a batch-mate's error.
def check_frames(frames: torch.Tensor, image_size: int, limits: Limits, num_frames: int | None = None) -> None:
    """`videoitg_vision`'s PIXEL_VALUES: [T, 3, S, S], 1 <= T <= max_sampled_frames; with NUM_FRAMES (the frames
    are one chunk of a video of `num_frames`), T <= num_frames <= max_sampled_frames."""
    if frames.dim() != 4 or frames.shape[1] != 3 or frames.shape[2] != image_size or frames.shape[3] != image_size:
        raise InputError(f"PIXEL_VALUES must be [T, 3, {image_size}, {image_size}], got {list(frames.shape)}")
    if not 1 <= frames.shape[0] <= limits.max_sampled_frames:
        raise InputError(f"PIXEL_VALUES holds {frames.shape[0]} frames; 1 to {limits.max_sampled_frames} "
                         "(max_sampled_frames) are allowed")
    if num_frames is not None and not frames.shape[0] <= num_frames <= limits.max_sampled_frames:
        raise InputError(f"NUM_FRAMES is {num_frames}: the video of a {frames.shape[0]}-frame chunk has "
                         f"{frames.shape[0]} to {limits.max_sampled_frames} (max_sampled_frames) frames")


def frame_count(value: Any) -> int | None:
    """NUM_FRAMES, an optional [1, 1] integer input: None when absent."""
    if value is None:
        return None
    if value.size != 1 or value.dtype.kind not in "iu":
        raise InputError(f"NUM_FRAMES must hold one integer, got {value.size} values of {value.dtype}")
    return int(value.reshape(-1)[0])


@contextlib.contextmanager
def decode_source(video: np.ndarray | None, uri: np.ndarray | None, version: np.ndarray | None,
                  roots: MediaRoots) -> Iterator[bytes | Path]:
    """The decode step's video: VIDEO (the bytes) or VIDEO_URI (a file under `roots`, checked here as the top-level
    model checks it, since a client may call this step directly), held open for the block and decoded through a
    name of the opened file. VIDEO_VERSION, when given, is the `file_identity` the caller hashed: a file replaced
    or rewritten since is refused, so features are never cached under another content's digest."""
    if (video is None) == (uri is None):
        raise InputError("send VIDEO (the encoded video) or VIDEO_URI (a file under a media root)")
    if video is not None:
        yield _bytes_input(video, "VIDEO")
        return
    from videoitg.decode.errors import DecodeTimeoutError

    identity = None
    if version is not None:
        raw = _bytes_input(version, "VIDEO_VERSION")
        if len(raw) > MAX_VERSION_BYTES:  # a `file_identity` is a few numbers; never echoed
            raise InputError(f"VIDEO_VERSION is {len(raw)} bytes; at most {MAX_VERSION_BYTES}")
        identity = raw.decode("ascii", "replace")
    reference = _bytes_input(uri, "VIDEO_URI")
    with roots.pinned(reference, identity, leave_open_on=(DecodeTimeoutError,)) as path:
        yield Path(path)


def _bytes_input(value: np.ndarray, name: str) -> bytes:
    one = one_value(value, name)
    if not isinstance(one, (bytes, np.bytes_)):
        raise InputError(f"{name} must hold bytes")
    return bytes(one)


STEP_DECODERS = ("python", "dali")  # the decode step's `decoder` parameter (`RepoSpec.decoder`)


@dataclass(frozen=True)
class StepDecoder:
    """How the decode step decodes: `decode_video`'s decoder and device, and DALI's device for the start self-test
    (None: the python decoder, no self-test)."""

    decoder: str
    device: str | None = None
    dali_device: str | None = None  # "mixed" (NVDEC) or "cpu"

    @classmethod
    def of(cls, parameter: str, device: str) -> StepDecoder:
        """`parameter`: the step's `decoder` ("python" or "dali"; "" is python); `device`: the instance's
        (`videoitg.engines.runtimes.instance_device`). DALI decodes on NVDEC on a GPU instance, else on the CPU
        (VP8, VP9 and MJPEG only)."""
        if parameter in ("", "python"):
            return cls("auto")
        if parameter != "dali":
            raise InputError(f"decoder must be one of {', '.join(STEP_DECODERS)}, got {parameter!r}")
        if device.startswith("cuda"):
            return cls("dali-gpu", device, "mixed")
        return cls("dali-cpu", None, "cpu")

    def device_id(self) -> int:
        return (torch.device(self.device).index or 0) if self.device else 0


def decode_whole(video: bytes | Path, image_size: int, sampling: SamplingParams, limits: Limits,
                 decoder: StepDecoder = StepDecoder("auto")) -> dict[str, Any]:
    """The decode step's one answer: {PIXEL_VALUES [1, T, 3, S, S], FRAME_INDICES [1, T], TIMESTAMPS [1, T],
    DURATION [1, 1]}. PIXEL_VALUES are uint8 resized frames from the python decoder, float32 SigLIP pixel values
    from DALI (on the instance's GPU for NVDEC).
    A path (a video by reference, `decode_source`) is bounded by max_reference_bytes instead of max_video_bytes."""
    from videoitg.decode import decode_video

    frames = decode_video(video, **_decode_options(image_size, sampling, limits, isinstance(video, Path)),
                          decoder=decoder.decoder, device=decoder.device)
    return {"PIXEL_VALUES": frames.pixel_values[None], **_frame_numbers(frames)}


def decode_stream(video: bytes | Path, image_size: int, sampling: SamplingParams, limits: Limits,
                  chunk_frames: int) -> Iterator[dict[str, Any]]:
    """The streaming decode step's answers, in order: one {PIXEL_VALUES [1, t, 3, S, S] uint8, NUM_FRAMES [1, 1]}
    per `chunk_frames` decoded frames as soon as they are decoded (so the vision step encodes them while the rest
    decode), then {FRAME_INDICES [1, T], TIMESTAMPS [1, T], DURATION [1, 1]} once the decode is over. The chunks are
    `decode_whole`'s frames, in order; the decode's error, if any, is raised where it happens."""
    from videoitg.decode import stream_video

    stream = stream_video(video, **_decode_options(image_size, sampling, limits, isinstance(video, Path)))
    total = np.asarray([[len(stream)]], dtype=np.int64)
    for chunk in stream.chunks(chunk_frames):
        yield {"PIXEL_VALUES": chunk[None], "NUM_FRAMES": total}
    yield _frame_numbers(stream.result())


def _decode_options(image_size: int, sampling: SamplingParams, limits: Limits, reference: bool) -> dict[str, Any]:
    """The served decode: the deployment's sampling and limits, uint8 frames (normalised by the vision step)."""
    return {"image_size": image_size, "params": sampling,
            "limits": limits.reference_decode() if reference else limits.decode,
            "time_budget_s": limits.decode_time_budget_s, "output": "uint8"}


def _frame_numbers(frames: Any) -> dict[str, np.ndarray]:
    """The sampled frames' numbers and times, and the video's DURATION (seconds from the container, 0 where it
    did not say: `videoitg.outputs.duration_value`), which bounds the moments."""
    return {"FRAME_INDICES": np.asarray([frames.frame_indices], dtype=np.int64),
            "TIMESTAMPS": np.asarray([frames.timestamps], dtype=np.float64),
            "DURATION": np.asarray([[duration_value(frames_duration(frames))]], dtype=np.float64)}


def check_features(visual: torch.Tensor, config: Any, limits: Limits) -> None:
    """`videoitg_grounding`'s FEATURES of one video: [T, HW², hidden] with the HW the model uses for T frames,
    1 <= T <= max_sampled_frames, finite."""
    if visual.dim() != 3:
        raise InputError(f"FEATURES must be [T, tokens per frame, hidden] for one video, got {list(visual.shape)}")
    t, n, h = visual.shape
    if not 1 <= t <= limits.max_sampled_frames:
        raise InputError(f"FEATURES holds {t} frames; 1 to {limits.max_sampled_frames} (max_sampled_frames) "
                         "are allowed")
    want = (config.tokens_per_side(t) ** 2, config.text.hidden_size)
    if (n, h) != want:
        raise InputError(f"FEATURES of {t} frames must be [{t}, {want[0]}, {want[1]}] for this model, got "
                         f"{list(visual.shape)}")
    if not bool(torch.isfinite(visual).all()):
        raise InputError("FEATURES holds NaN or infinite values")


def check_selection_inputs(logits: np.ndarray, frame_indices: np.ndarray, timestamps: np.ndarray,
                           limits: Limits) -> None:
    """`videoitg_select`'s per-frame inputs of one video: as many logits as frames (1..max_sampled_frames), finite
    logits and timestamps, frame numbers rising."""
    t = logits.size
    if not 1 <= t <= limits.max_sampled_frames:
        raise InputError(f"LOGITS holds {t} frames; 1 to {limits.max_sampled_frames} (max_sampled_frames) are "
                         "allowed")
    if frame_indices.size != t or timestamps.size != t:
        raise InputError(f"LOGITS, FRAME_INDICES and TIMESTAMPS must hold one value per frame, got {t}, "
                         f"{frame_indices.size} and {timestamps.size}")
    if not (np.isfinite(logits).all() and np.isfinite(timestamps).all()):
        raise InputError("LOGITS and TIMESTAMPS must be finite")
    if (frame_indices < 0).any() or (np.diff(frame_indices) <= 0).any():
        raise InputError("FRAME_INDICES must be frame numbers >= 0 in rising order")


def duration_input(value: np.ndarray | None) -> float | None:
    """DURATION, an optional [1, 1] input of `videoitg_select` (the decode step's output): the video's duration in
    seconds, 0 when the container did not say. None when absent or 0; InputError unless one finite number >= 0."""
    if value is None:
        return None
    if value.size != 1 or value.dtype.kind != "f":
        raise InputError(f"DURATION must hold one number, got {value.size} values of {value.dtype}")
    d = float(value.reshape(-1)[0])
    if not (np.isfinite(d) and d >= 0):
        raise InputError(f"DURATION must be a finite number of seconds >= 0, got {d!r}")
    return known_duration(d)
