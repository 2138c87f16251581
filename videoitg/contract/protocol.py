"""The wire contract of served VideoITG: the model names, each model's input and output tensors, and the summary a
generated repository carries (`videoitg-repo.json`). Read by the generator, the in-server models, the client and
the front; it imports nothing heavy."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from videoitg.decoders import DECODERS, decoder
from videoitg.errors import InputError
from videoitg.request.options import FRAME_FORMATS as FORMATS
from videoitg.request.options import OPTIONS

TOP = "videoitg"  # the public model; the steps below are internal (the front does not pass them on)
DECODE = "videoitg_decode"
VISION = "videoitg_vision"
GROUNDING = "videoitg_grounding"
SELECT = "videoitg_select"  # the ensemble's selection step (the BLS model selects inline)
MODELS = (TOP, DECODE, VISION, GROUNDING, SELECT)
MODES = ("bls", "ensemble")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # Triton's config data type without `TYPE_`: "STRING", "FP32", "INT64", ...
    dims: tuple[int, ...]  # without the batch axis; -1: any length
    optional: bool = False
    ragged: bool = False  # Triton's allow_ragged_batch: requests of different shapes form one batch

    @property
    def datatype(self) -> str:
        """The KServe v2 / tritonclient data type ("BYTES" for STRING)."""
        return "BYTES" if self.dtype == "STRING" else self.dtype

    @property
    def numpy(self) -> str:
        """The numpy dtype of the tensor's values (`np.dtype(spec.numpy)`): object for STRING (bytes)."""
        return _NUMPY[self.dtype]


_NUMPY = {"STRING": "object", "BOOL": "bool", "UINT8": "uint8", "INT32": "int32", "INT64": "int64",
          "FP16": "float16", "FP32": "float32", "FP64": "float64"}  # BF16 (between steps only) has no numpy type
FEATURE_TYPES = {"float32": "FP32", "float16": "FP16", "bfloat16": "BF16"}  # the steps' torch dtype -> Triton's


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec:
        return _named(self.inputs, name, "input")

    def output(self, name: str) -> TensorSpec:
        return _named(self.outputs, name, "output")


def _named(specs: Iterable[TensorSpec], name: str, what: str) -> TensorSpec:
    for t in specs:
        if t.name == name:
            return t
    raise KeyError(f"no {what} named {name!r}")


def _t(name: str, dtype: str, *dims: int, optional: bool = False, ragged: bool = False) -> TensorSpec:
    return TensorSpec(name, dtype, tuple(dims), optional, ragged)


# ---- tensor names: every model's inputs and outputs are named here, and only here -----------------------------
# The public model's inputs.
VIDEO = "VIDEO"
VIDEO_DIGEST = "VIDEO_DIGEST"
VIDEO_URI = "VIDEO_URI"
INSTRUCTION = "INSTRUCTION"
# A request's options travel each in its own optional input, named and typed by its row
# (`videoitg.request.options.OPTIONS`: TOP_K, RANKING_RULE, FRAMES, ...).
OPTION_INPUTS = {name: o.wire for name, o in OPTIONS.items()}  # option -> the input it travels in
FRAMES = OPTIONS["frames"].wire
# Its outputs (the per-frame ones are also the steps' tensors: LOGITS, FRAME_INDICES, TIMESTAMPS, DURATION).
SCORES = "SCORES"
LOGITS = "LOGITS"
FRAME_INDICES = "FRAME_INDICES"
TIMESTAMPS = "TIMESTAMPS"
RANKING = "RANKING"
TOP_K_FRAMES = "TOP_K_FRAMES"
CACHE_HIT = "CACHE_HIT"
MOMENTS = "MOMENTS"
APPLIED_RANKING_RULE = "APPLIED_RANKING_RULE"
DURATION = "DURATION"
FRAME_JPEGS = "FRAME_JPEGS"
FRAME_PIXELS = "FRAME_PIXELS"
# Between the steps.
VIDEO_VERSION = "VIDEO_VERSION"
PIXEL_VALUES = "PIXEL_VALUES"
NUM_FRAMES = "NUM_FRAMES"
FEATURES = "FEATURES"

# The selection's options (both shapes of repository: the ensemble's selection step takes them too) and the frames'
# (the BLS model only: FRAMES "jpeg" | "uint8", FRAME_SIZE the longer side in pixels, 0 or absent: the video's own).
SELECTION_INPUTS = tuple(_t(o.wire, o.wire_type, 1, optional=True) for o in OPTIONS.values() if not o.frames)
FRAME_INPUTS = tuple(_t(o.wire, o.wire_type, 1, optional=True) for o in OPTIONS.values() if o.frames)
# With the feature cache (bls) the video comes as its bytes (VIDEO), as its digest alone (VIDEO_DIGEST,
# `videoitg.digest.video_digest`: a cached video is scored without its bytes crossing the wire, an uncached one is
# answered NOT_FOUND and the client sends VIDEO), or as VIDEO_URI, a file under one of the server's media roots.
VIDEO_INPUTS = (
    _t(VIDEO, "STRING", 1, optional=True),
    _t(VIDEO_DIGEST, "STRING", 1, optional=True),
    _t(VIDEO_URI, "STRING", 1, optional=True),
)
INSTRUCTION_INPUT = _t(INSTRUCTION, "STRING", 1)
RESULT_OUTPUTS = (
    # Chronological, one per sampled frame: sigmoid score, the head's raw logit, the original frame number and its
    # timestamp in seconds.
    _t(SCORES, "FP32", -1),
    _t(LOGITS, "FP32", -1),
    _t(FRAME_INDICES, "INT64", -1),
    _t(TIMESTAMPS, "FP64", -1),
    # Ranking order under RANKING_RULE (default "released": the fp16 sigmoid, ties to the earlier frame): positions
    # into the per-frame outputs, best first.
    _t(RANKING, "INT32", -1),
    _t(TOP_K_FRAMES, "INT64", -1),  # the frames the options pick (`videoitg.request.options.select`), chronological
    _t(CACHE_HIT, "BOOL", 1),  # always false in the ensemble (no cache)
    _t(MOMENTS, "FP32", -1, 3),  # [start_s, end_s, score], best first (videoitg.moments)
    # The rule the ranking outputs follow (the request's, else the deployment's). No output shares an input's name:
    # in an ensemble that name would be the input tensor, and an absent optional input gives nothing.
    _t(APPLIED_RANKING_RULE, "STRING", 1),
    # The video's duration in seconds as its container states it (0: not stated); the moments end by it.
    _t(DURATION, "FP64", 1),
)
RESULT_NAMES = tuple(t.name for t in RESULT_OUTPUTS)
# The frames asked for, chronological; only the asked format's output is in the answer.
FRAME_OUTPUTS = (_t(FRAME_JPEGS, "STRING", -1), _t(FRAME_PIXELS, "UINT8", -1, -1, -1, 3))
FRAME_FORMATS = dict(zip(FORMATS, (FRAME_JPEGS, FRAME_PIXELS), strict=True))  # FRAMES -> the output carrying them


def check_decoder(name: str) -> str:
    """The decode step's decoder, one a decode step runs (`videoitg.decoders.SERVED`); InputError otherwise."""
    return decoder(name, served=True).name


@dataclass(frozen=True)
class ModelDims:
    """The tensor dimensions a checkpoint fixes (`videoitg.config.VideoITGConfig`): the vision tower's square input
    side and the width of the features it hands the language model. -1: not fixed (any length), for the signatures
    a client reads, which hold no step tensor."""

    image_size: int = -1
    hidden_size: int = -1


OPEN_DIMS = ModelDims()


def _pixels(decoder: str, dims: ModelDims) -> TensorSpec:
    """[T, 3, S, S] of the decoder's `served_pixels`: resized uint8 frames the vision step normalises (pyav), or
    DALI's float32 SigLIP pixel values (left on the instance's GPU by NVDEC)."""
    s = dims.image_size
    return _t(PIXEL_VALUES, str(DECODERS[decoder].served_pixels), -1, 3, s, s)


def signatures(mode: str = "bls", decoder: str = "pyav", features: str = "FP32", streaming: bool = False,
               dims: ModelDims = OPEN_DIMS) -> dict[str, Signature]:
    """Model name -> its signature, for a repository of `mode` with `decoder`, the vision step's `features` type
    (a Triton dtype), under bls a decode step that `streaming` answers in chunks (decoupled), and the checkpoint's
    `dims`: every dimension it fixes is declared, so that tritonserver itself refuses a tensor whose fixed
    dimensions are not the checkpoint's before a step's stub sees it. A shape that overflows through the dimensions
    left open (frames, tokens per frame) still passes Triton's checks: only the front and the launcher may send a
    step anything (the inference key), and the front bounds every input's elements."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    check_decoder(decoder)
    decoded = (
        _pixels(decoder, dims),
        _t(FRAME_INDICES, "INT64", -1),  # original frame numbers of the sampled frames
        _t(TIMESTAMPS, "FP64", -1),
        _t(DURATION, "FP64", 1),  # the container's duration in seconds (0: not stated), which bounds moments
    )
    sig: dict[str, Signature] = {}
    if mode == "bls":
        sig[TOP] = Signature((*VIDEO_INPUTS, INSTRUCTION_INPUT, *SELECTION_INPUTS, *FRAME_INPUTS),
                             (*RESULT_OUTPUTS, *FRAME_OUTPUTS))
        # The bytes or a file under a media root (checked here again: a client may call this step), with the identity
        # of the file the BLS model hashed. Streaming: chunks of PIXEL_VALUES with the video's NUM_FRAMES as they
        # decode, FRAME_INDICES, TIMESTAMPS and DURATION last.
        sig[DECODE] = Signature(
            (_t(VIDEO, "STRING", 1, optional=True), _t(VIDEO_URI, "STRING", 1, optional=True),
             _t(VIDEO_VERSION, "STRING", 1, optional=True)),
            (*decoded, _t(NUM_FRAMES, "INT64", 1)) if streaming else decoded)
    else:
        sig[TOP] = Signature((_t(VIDEO, "STRING", 1), INSTRUCTION_INPUT, *SELECTION_INPUTS), RESULT_OUTPUTS)
        sig[DECODE] = Signature((_t(VIDEO, "STRING", 1),), decoded)
    # [T, tokens per frame, hidden]: the tokens per frame follow T (`VideoITGConfig.tokens_per_side`), the width is
    # the checkpoint's.
    sig[VISION] = Signature(
        # NUM_FRAMES: the video's frame count when PIXEL_VALUES is one chunk of it (the streaming decode step's).
        (_pixels(decoder, dims), _t(NUM_FRAMES, "INT64", 1, optional=True)),
        (_t(FEATURES, features, -1, -1, dims.hidden_size),))
    sig[GROUNDING] = Signature(
        # Ragged: one request per video, different frame counts; each is scored alone (batched == alone).
        (_t(FEATURES, features, -1, -1, dims.hidden_size, ragged=True), INSTRUCTION_INPUT),
        (_t(LOGITS, "FP32", -1),))
    if mode == "ensemble":
        sig[SELECT] = Signature(
            (_t(LOGITS, "FP32", -1), _t(FRAME_INDICES, "INT64", -1), _t(TIMESTAMPS, "FP64", -1),
             _t(DURATION, "FP64", 1, optional=True),  # the decode step's: moments end by it
             *SELECTION_INPUTS),
            RESULT_OUTPUTS)
    return sig


# ---- the repository summary -------------------------------------------------------------------------------------
SUMMARY_FILE = "videoitg-repo.json"  # at the repository's root, where tritonserver looks for model directories only
SUMMARY_FORMAT = 1
OTHER_INPUTS_BYTES = 16 << 20  # a request's bound beyond its videos: instruction, options, JSON
GENERATED = "# Generated by `videoitg repo build`"  # how each generated config.pbtxt starts


class RepositoryError(InputError):
    """A model repository that cannot be served as it is (the message says why and what to run)."""


@dataclass(frozen=True)
class ModelSummary:
    max_batch_size: int
    kind: str | None  # the instances' kind ("KIND_CPU" | "KIND_GPU"); None for the ensemble (no instances)
    count: int  # instances (per GPU on KIND_GPU); 0 for the ensemble
    inputs: int  # the signature's size
    outputs: int
    max_request_bytes: int  # MAX_VIDEO_BYTES per video of the largest batch, plus OTHER_INPUTS_BYTES


@dataclass(frozen=True)
class RepoSummary:
    """What `videoitg repo build` (and `serve`) wrote: the shape of the repository, and what the front and the
    launcher need of each model without parsing its config."""

    target: str  # "cpu" | "gpu"
    mode: str
    decoder: str
    public: str  # the model clients call
    models: Mapping[str, ModelSummary]
    format: int = SUMMARY_FORMAT

    @property
    def gpu(self) -> bool:
        """Whether any model's instances are on a GPU."""
        return any(m.kind == "KIND_GPU" for m in self.models.values())

    def model(self, name: str) -> ModelSummary:
        if name not in self.models:
            raise RepositoryError(f"model {name!r} is not in this repository (it holds {', '.join(self.models)})")
        return self.models[name]

    def request_bytes_bound(self, model: str) -> int:
        """The largest request body the front accepts for `model`."""
        return self.model(model).max_request_bytes

    def video_bytes_bound(self, model: str) -> int:
        """The largest video `model` takes as bytes (its max_video_bytes): its request bound less the other inputs'
        share, per video of its largest batch."""
        m = self.model(model)
        return (m.max_request_bytes - OTHER_INPUTS_BYTES) // max(1, m.max_batch_size)

    def signature_bound(self, models: Iterable[str]) -> tuple[int, int]:
        """(inputs, outputs): the most that any of `models` declares."""
        ms = [self.model(m) for m in models]
        return max((m.inputs for m in ms), default=0), max((m.outputs for m in ms), default=0)

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps({"format": d.pop("format"), **d}, indent=2) + "\n"

    def write(self, repository: str | Path) -> Path:
        path = Path(repository) / SUMMARY_FILE
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_json(cls, text: str, where: str = SUMMARY_FILE) -> RepoSummary:
        try:
            d: dict[str, Any] = json.loads(text)
            if d.get("format") != SUMMARY_FORMAT:
                raise RepositoryError(f"{where}: summary format {d.get('format')!r}, this videoitg reads "
                                      f"{SUMMARY_FORMAT}: rebuild the repository with `videoitg repo build`")
            models = {k: ModelSummary(**v) for k, v in d.pop("models").items()}
            return cls(**{**d, "models": models})
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise RepositoryError(f"{where}: not a videoitg repository summary ({e}): rebuild the repository with "
                                  "`videoitg repo build`") from None

    @classmethod
    def read(cls, repository: str | Path) -> RepoSummary:
        """The summary at the root of `repository`; RepositoryError naming `videoitg repo build` when it has none."""
        path = Path(repository) / SUMMARY_FILE
        try:
            text = path.read_text()
        except OSError:
            built = " (built by an older videoitg)" if is_generated(repository) else ""
            raise RepositoryError(f"{repository}: no {SUMMARY_FILE}{built}; generate the repository with "
                                  f"`videoitg repo build --out {repository}`") from None
        return cls.from_json(text, str(path))

    @classmethod
    def find(cls, repository: str | Path) -> RepoSummary | None:
        """`read`, except that a repository videoitg did not generate (an operator's own models) gives None."""
        if not (Path(repository) / SUMMARY_FILE).is_file() and not is_generated(repository):
            return None
        return cls.read(repository)


def is_generated(repository: str | Path) -> bool:
    """Whether any model config of `repository` was written by `videoitg repo build`."""
    for p in Path(repository).glob("*/config.pbtxt"):
        try:
            with p.open() as f:
                if f.readline().startswith(GENERATED):
                    return True
        except OSError:
            continue
    return False
