"""The Triton model parameters of each served model, one typed dataclass per model: the generator writes them into
its `config.pbtxt` (`to_parameters`), the model reads them back once (`from_parameters`). With the tensor names of
`protocol`, the contract between the generator and the in-server models. A key is its field's name; a grouped
value (sampling, limits, selection, media roots) is written and read by its own type. Absent or empty: the field's
default (a hand-written config); a value that does not parse is an InputError naming the key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from videoitg.contract.protocol import DECODE, FEATURE_TYPES, GROUNDING, VISION, check_decoder
from videoitg.decoders import DECODERS
from videoitg.errors import InputError
from videoitg.model.files import IDENTITY_CHARS
from videoitg.outputs import SelectionOptions
from videoitg.paths import MediaRoots
from videoitg.precision import PRECISIONS
from videoitg.request.limits import Limits
from videoitg.sampling import SamplingParams

DEFAULT_CHECKPOINT = "default"  # the embedded tiny checkpoint (videoitg.defaults.default_checkpoint)
DEVICES = ("cpu", "cuda")
# Keys a reader outside the models looks up in a served model's parameters (`VideoITGClient.model_parameters`).
CHECKPOINT = "checkpoint"
MEDIA_ROOTS = "media_roots"
FEATURE_CACHE_BYTES = "feature_cache_bytes"

P = TypeVar("P", bound="ModelParameters")


def _text(values: Mapping[str, str], key: str) -> str | None:
    raw = values.get(key)
    return None if raw is None or str(raw).strip() == "" else str(raw).strip()


def sampling_parameters(s: SamplingParams) -> dict[str, str]:
    return {"num_frames": str(s.num_frames), "target_fps": f"{s.target_fps:g}", "sampling_rule": s.rule}


def sampling_from_parameters(values: Mapping[str, str]) -> SamplingParams:
    """`num_frames`, `target_fps` and `sampling_rule` over SamplingParams' defaults."""
    d = SamplingParams()
    n, fps, rule = (_text(values, k) for k in ("num_frames", "target_fps", "sampling_rule"))
    try:
        return SamplingParams(d.num_frames if n is None else int(n), d.target_fps if fps is None else float(fps),
                              d.rule if rule is None else rule)  # type: ignore[arg-type]
    except ValueError as e:
        raise InputError(f"bad sampling parameter: {e}") from None


# How each grouped type is written and read; any other field is a str or an int under its own key.
_GROUPS: dict[type, tuple[Any, Any]] = {
    SamplingParams: (sampling_parameters, sampling_from_parameters),
    Limits: (Limits.to_parameters, Limits.from_mapping),
    SelectionOptions: (SelectionOptions.to_parameters, SelectionOptions.from_parameters),
    MediaRoots: (lambda m: {MEDIA_ROOTS: m.to_parameter()}, lambda v: MediaRoots.from_parameter(v.get(MEDIA_ROOTS))),
}


def _default(f: Any) -> Any:
    return f.default_factory() if callable(f.default_factory) else f.default


@dataclass(frozen=True)
class ModelParameters:
    """A model's parameters; subclasses declare the fields (each with a default) and check them."""

    def to_parameters(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            group = _GROUPS.get(type(value))
            out.update(group[0](value) if group else {f.name: str(value)})
        return out

    @classmethod
    def from_parameters(cls: type[P], values: Mapping[str, str]) -> P:
        kw: dict[str, Any] = {}
        for f in fields(cls):
            default = _default(f)
            group = _GROUPS.get(type(default))
            if group is not None:
                kw[f.name] = group[1](values)
                continue
            raw = _text(values, f.name)
            if raw is None:
                kw[f.name] = default
            elif isinstance(default, int):
                try:
                    kw[f.name] = int(raw)
                except ValueError:
                    raise InputError(f"model parameter {f.name} must be an integer, got {raw[:64]!r}") from None
            else:
                kw[f.name] = raw
        return cls(**kw)

    def _check_count(self, name: str) -> None:
        v = getattr(self, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InputError(f"model parameter {name} must be an int >= 0, got {v!r}")


def _check_device(device: str) -> None:
    if device.split(":")[0] not in DEVICES:
        raise InputError(f"model parameter device must be 'cpu' or 'cuda', got {device[:64]!r}")


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"model parameter precision must be one of {', '.join(PRECISIONS)}, got {precision[:64]!r}")


def _check_dtype(dtype: str) -> None:
    if dtype and dtype not in FEATURE_TYPES:
        raise InputError(f"model parameter dtype must be one of {', '.join(FEATURE_TYPES)} (or empty: the device's "
                         f"default), got {dtype[:64]!r}")


def _check_identity(identity: str) -> None:
    if identity and (len(identity) != IDENTITY_CHARS or identity.strip("0123456789abcdef")):
        raise InputError(f"model parameter checkpoint_identity must be {IDENTITY_CHARS} lowercase hex characters "
                         f"(videoitg.model.files.checkpoint_identity) or empty, got {identity[:64]!r}")


@dataclass(frozen=True)
class StepParameters(ModelParameters):
    """What the steps that load the checkpoint share: where its weights are (`checkpoint`: "default" or a directory;
    relative paths are under the repository's root) and which they must be (`checkpoint_identity`), where they run
    (`device`, `dtype`: "" is the device's default; `precision`: `videoitg.precision.PRECISIONS`) and the
    deployment's limits."""

    checkpoint: str = DEFAULT_CHECKPOINT
    vision_tower: str = ""  # a SigLIP directory, over the checkpoint's mm_vision_tower
    device: str = "cpu"
    dtype: str = ""
    precision: str = "default"
    limits: Limits = field(default_factory=Limits)
    # The checkpoint's identity (`videoitg.model.files.checkpoint_identity`) where the repository was written: a step
    # refuses to load weights of another identity, and the top-level model keys its feature cache by it. "": not
    # pinned (the checkpoint was not where the repository was written): each model takes it from the files it reads.
    checkpoint_identity: str = ""

    def __post_init__(self) -> None:
        _check_device(self.device)
        _check_dtype(self.dtype)
        _check_precision(self.precision)
        _check_identity(self.checkpoint_identity)
        if self.precision == "fp8" and self.dtype not in ("", "bfloat16"):
            raise InputError(f"model parameter precision fp8 runs the rest of the model in bfloat16, but dtype is "
                             f"{self.dtype[:64]!r}")


@dataclass(frozen=True)
class TopParameters(StepParameters):
    """`videoitg`, the BLS model: its `device` and `dtype` are the vision step's (they key the feature cache)."""

    sampling: SamplingParams = field(default_factory=SamplingParams)
    selection: SelectionOptions = field(default_factory=SelectionOptions)
    vision_runtime: str = "torch"
    engines: str = ""
    feature_cache_bytes: int = 1 << 30
    # The steps it calls (another name: a test's stand-in for a step).
    decode_model: str = DECODE
    vision_model: str = VISION
    grounding_model: str = GROUNDING
    decoder: str = "pyav"  # the decode step's (`videoitg.decoders.SERVED`)
    stream_frames: int = 0  # the decode step streams chunks of this many frames; 0: it answers once
    media_roots: MediaRoots = field(default_factory=MediaRoots)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_decoder(self.decoder)
        self._check_count("feature_cache_bytes")
        self._check_count("stream_frames")
        if self.stream_frames and not DECODERS[self.decoder].streams:
            raise InputError(f"model parameter stream_frames: the {self.decoder} decoder does not stream; write 0")

    @property
    def streaming(self) -> bool:
        return self.stream_frames > 0


@dataclass(frozen=True)
class DecodeParameters(ModelParameters):
    """`videoitg_decode`: the checkpoint names the frame size; `device` is where DALI decodes (cuda: NVDEC)."""

    checkpoint: str = DEFAULT_CHECKPOINT
    vision_tower: str = ""
    decoder: str = "pyav"
    device: str = "cpu"
    sampling: SamplingParams = field(default_factory=SamplingParams)
    limits: Limits = field(default_factory=Limits)
    media_roots: MediaRoots = field(default_factory=MediaRoots)
    stream_frames: int = 64  # frames per answer of a decoupled step; 0: not decoupled, one answer

    def __post_init__(self) -> None:
        check_decoder(self.decoder)
        _check_device(self.device)
        self._check_count("stream_frames")


@dataclass(frozen=True)
class VisionParameters(StepParameters):
    """`videoitg_vision`."""

    vision_runtime: str = "torch"
    engines: str = ""


@dataclass(frozen=True)
class GroundingParameters(StepParameters):
    """`videoitg_grounding`."""

    grounding_runtime: str = "torch"
    engines: str = ""


@dataclass(frozen=True)
class SelectParameters(ModelParameters):
    """`videoitg_select`, the ensemble's selection step."""

    limits: Limits = field(default_factory=Limits)
    selection: SelectionOptions = field(default_factory=SelectionOptions)
