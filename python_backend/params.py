"""What a model's parameters (`videoitg.contract.parameters`) name, read once at its start (`setup`): its
checkpoint, tower and engines, its device and dtype, and the identity the feature cache keys computed features by.
Without torch until a step loads its model: the top-level model on a CPU never imports it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from videoitg.config import VideoITGConfig
from videoitg.contract.parameters import ModelParameters, TopParameters
from videoitg.errors import EngineError
from videoitg.model.files import checkpoint_identity, load_config, resolve_checkpoint, resolve_under
from videoitg.precision import resolve_precision

if TYPE_CHECKING:
    import torch

P = TypeVar("P", bound=ModelParameters)


def model_parameters(model_config: str | dict[str, Any]) -> dict[str, str]:
    """The string parameters of a Triton model config (as given to `initialize(args)["model_config"]`), to read
    with a `videoitg.contract.parameters` class."""
    cfg = json.loads(model_config) if isinstance(model_config, str) else model_config
    return {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}


def setup(args: dict[str, Any], kind: type[P]) -> P:
    """The model's parameters, read as `kind` (`videoitg.contract.parameters`)."""
    return kind.from_parameters(model_parameters(args["model_config"]))


@dataclass(frozen=True)
class StepAssets:
    """Where a step's checkpoint, external SigLIP tower and engines are, from its model parameters. Relative
    paths are resolved against the repository's root, so a repository that holds its files
    (`videoitg repo build`, `repository.bundle_assets`) can be copied to another machine and served there."""

    checkpoint: Path
    vision_tower: Path | None = None
    engines: Path | None = None

    @classmethod
    def resolve(cls, root: str | Path | None, checkpoint: str, vision_tower: str = "",
                engines: str = "") -> StepAssets:
        """The parameters' `checkpoint`, `vision_tower` and `engines`, relative ones under `root` (the repository's
        root: `repository_root`)."""
        root = Path(root) if root else None
        return cls(resolve_checkpoint(checkpoint, root), resolve_under(vision_tower, root) if vision_tower else None,
                   resolve_under(engines, root) if engines else None)

    @classmethod
    def of_model(cls, args: Mapping[str, Any], p: Any, engines: str = "") -> StepAssets:
        """What a model's parameters `p` name, and its `engines` folder (a decode step has none), under the
        repository's root of the model's `initialize(args)`."""
        return cls.resolve(repository_root(args), p.checkpoint, p.vision_tower, engines)

    def config(self) -> VideoITGConfig:
        return load_config(self.checkpoint, self.vision_tower)[0]

    def load_served(self, part: str, device: str, dtype: torch.dtype, runtime: str = "torch",
                    pinned: str = "") -> tuple[Any, Any, str]:
        """Load only the half a step runs ('vision' or 'grounding'; `videoitg.model.checkpoint.drop_unused_half`), less
        what an engine of `runtime` runs (`runtimes.drop_engine_part`: never read from disk), with the identity of
        the very bytes loaded (`videoitg.model.checkpoint.load_identified`):
        what a step's engine manifest is checked against, whatever is on disk later. `pinned`: the identity the
        repository was built for (the step's `checkpoint_identity` parameter); files of another are refused, naming
        the checkpoint, before any weight is read, so a reload never serves other weights."""
        from videoitg.engines.runtimes import drop_engine_part
        from videoitg.model.checkpoint import load_identified

        return load_identified(self.checkpoint, device, dtype, self.vision_tower, pinned=pinned,
                               with_tokenizer=part == "grounding", part=part,
                               drop=lambda model: drop_engine_part(model, part, runtime))

    def identity(self, pinned: str = "") -> str:
        """The identity of the checkpoint the steps serve: `pinned` (the repository's `checkpoint_identity`), which
        the steps load and nothing else; without one, as its files are now (the top-level model, which loads no
        weights, then takes it once at its start), its external tower the one the steps load."""
        return pinned or checkpoint_identity(self.checkpoint, self.vision_tower)


def repository_root(args: Mapping[str, Any]) -> Path | None:
    """The repository's root, from a model's `initialize(args)`: one above its own directory."""
    model_dir = args.get("model_repository")
    return Path(model_dir).parent if model_dir else None


def instance_device(args: Mapping[str, Any], configured: str = "cpu") -> str:
    """The device of the Triton model instance `args` (python_backend's `initialize(args)`) describes:
    "cuda:N" for a KIND_GPU instance (`model_instance_kind` "GPU", `model_instance_device_id` "N": Triton makes one
    instance per GPU and tells each which), "cpu" for KIND_CPU, else `configured` (KIND_MODEL, or no Triton).
    Names and values as python_backend r24.10-r25.07 `src/stub_launcher.cc` passes them (the kind is
    `TRITONSERVER_InstanceGroupKindString`: "AUTO", "CPU", "GPU" or "MODEL")."""
    kind = str(args.get("model_instance_kind", "")).upper()
    if kind == "GPU":
        raw = str(args.get("model_instance_device_id", "0")).strip()
        if not raw.isdigit():
            raise EngineError(f"model_instance_device_id must be a GPU index, got {raw!r}")
        return f"cuda:{int(raw)}"
    if kind == "CPU":
        return "cpu"
    return configured


def instance_processes(model_config: str | Mapping[str, Any], gpus: int) -> int:
    """The processes Triton starts for a python model (one per instance): each instance group's `count`, times its
    GPUs for KIND_GPU (those it lists, else all `gpus` visible ones). `model_config`: the normalized config as
    `initialize(args)["model_config"]` gives it (python_backend r24.10-r25.07: protobuf JSON, kinds by name, a
    KIND_GPU group's `gpus` filled with the visible GPUs)."""
    cfg = json.loads(model_config) if isinstance(model_config, str) else model_config
    total = 0
    for group in cfg.get("instance_group") or [{"count": 1}]:
        per = (len(group.get("gpus") or []) or gpus) if group.get("kind") == "KIND_GPU" else 1
        total += int(group.get("count", 1)) * per
    return total


def step_device(device: str, args: Mapping[str, Any] | None = None) -> str:
    """The device a step runs on, from its `device` parameter. With `args` (a step instance's `initialize(args)`),
    the one Triton gave the instance (`instance_device`)."""
    if args is not None:
        device = instance_device(args, device)
    if device.startswith("cuda"):
        import torch  # a GPU deployment's steps run torch

        if not torch.cuda.is_available():
            device = "cpu"  # a GPU repository started on a CPU machine still answers (slowly) instead of failing
    return device


def device_dtype(device: str, dtype: str = "", args: Mapping[str, Any] | None = None,
                 precision: str = "default") -> tuple[str, torch.dtype]:
    """The device a step runs on (`step_device`) and the dtype, from its `dtype` and `precision` parameters (fp8:
    bfloat16, `videoitg.pipeline.scorer.parse_precision`)."""
    from videoitg.pipeline.scorer import parse_precision

    device = step_device(device, args)
    return device, parse_precision(precision, dtype or None, device)[0]


def step_precision(precision: str) -> str | None:
    """A step's `precision` parameter as the runtimes take it: None for the default (every layer in the dtype)."""
    return None if precision == "default" else precision


def feature_dtype(params: TopParameters) -> tuple[str, str]:
    """The device kind ("cpu", "cuda") and dtype name the steps compute the features in, as the top-level model
    sees them (`step_device`, `videoitg.precision.resolve_precision`)."""
    device = step_device(params.device)
    return device.split(":")[0], resolve_precision(params.precision, params.dtype or None, device)[0]


def host_features(params: TopParameters) -> bool:
    """Whether the vision step's FEATURES reach the top-level model in host memory in a type numpy has: on a CPU,
    in anything but bfloat16."""
    kind, dtype = feature_dtype(params)
    return kind == "cpu" and dtype != "bfloat16"


def feature_identity(assets: StepAssets, params: TopParameters) -> str:
    """What the cached features depend on besides the video: weights (the repository's pinned identity, which the
    vision step loads and nothing else), dtype, precision, device kind, vision runtime and the engines it runs
    from."""
    kind, dtype = feature_dtype(params)
    parts = [assets.identity(params.checkpoint_identity), dtype, params.precision, kind, params.vision_runtime,
             str(assets.engines or "")]
    return "|".join(parts)
