"""A step's model parameters and what they name: its checkpoint, tower and engines, sampling, device and dtype, and
the identity the feature cache keys computed features by."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from videoitg.checkpoint import checkpoint_identity, load_checkpoint, load_config, resolve_checkpoint
from videoitg.config import VideoITGConfig
from videoitg.engines.runtimes import drop_engine_part, instance_device
from videoitg.pipeline import parse_dtype
from videoitg.sampling import SamplingParams


def model_parameters(model_config: str | dict[str, Any]) -> dict[str, str]:
    """The string parameters of a Triton model config (as given to `initialize(args)["model_config"]`)."""
    cfg = json.loads(model_config) if isinstance(model_config, str) else model_config
    return {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}


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
    def from_parameters(cls, params: Mapping[str, str], model_dir: str | Path | None = None) -> StepAssets:
        """`model_dir`: the model's own directory (`initialize(args)["model_repository"]`), one below the root."""
        root = Path(model_dir).parent if model_dir else None
        tower, engines = params.get("vision_tower", ""), params.get("engines", "")
        return cls(resolve_checkpoint(params.get("checkpoint", "default"), root),
                   _under(root, tower) if tower else None, _under(root, engines) if engines else None)

    def config(self) -> VideoITGConfig:
        return load_config(self.checkpoint, self.vision_tower)[0]

    def load_part(self, part: str, device: str, dtype: torch.dtype, runtime: str = "torch") -> tuple[Any, Any]:
        """Load only the half a step runs ('vision' or 'grounding'; `videoitg.checkpoint.drop_unused_half`), less
        what an engine of `runtime` runs (`runtimes.drop_engine_part`: never read from disk)."""
        return load_checkpoint(self.checkpoint, device, dtype, vision_tower=self.vision_tower,
                               with_tokenizer=part == "grounding", part=part,
                               drop=lambda model: drop_engine_part(model, part, runtime))

    def identity(self) -> str:
        return checkpoint_identity(self.checkpoint)


def sampling_from(params: Mapping[str, str]) -> SamplingParams:
    return SamplingParams(
        num_frames=int(params.get("num_frames", 512)),
        target_fps=float(params.get("target_fps", 1.0)),
        rule=params.get("sampling_rule", "eval"),
    )


def device_dtype(params: Mapping[str, str], args: Mapping[str, Any] | None = None) -> tuple[str, torch.dtype]:
    """The device and dtype a step runs in. With `args` (a step instance's `initialize(args)`), the device is the
    one Triton gave the instance (`videoitg.engines.runtimes.instance_device`), else the `device` parameter."""
    device = params.get("device", "cpu")
    if args is not None:
        device = instance_device(args, device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"  # a GPU repository started on a CPU machine still answers (slowly) instead of failing
    return device, parse_dtype(params.get("dtype") or None, device)


def feature_identity(assets: StepAssets, params: Mapping[str, str]) -> str:
    """What the cached features depend on besides the video: weights, dtype, device kind, vision runtime and the
    engines it runs from."""
    device, dtype = device_dtype(params)
    parts = [assets.identity(), str(dtype), device.split(":")[0], params.get("vision_runtime", "torch"),
             str(assets.engines or "")]
    return "|".join(parts)
