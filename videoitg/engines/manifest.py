"""The manifest written beside every engine, and the check a loader runs before it deserialises one.

Why: a TensorRT plan only loads on the TensorRT version that built it, and is tuned for one GPU model
("Serialization assertion stdVersionRead == kSERIALIZATION_VERSION failed" is the failure users of
TensorRT-LLM hit most). Recording the versions, GPU, precision, profiles and the source checkpoint's hash
next to the plan turns that crash into a message that names what to rebuild.

Layout: `<engine file>.manifest.json`, e.g. `vision.plan` -> `vision.plan.manifest.json`.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from videoitg.errors import EngineError, EngineMismatchError
from videoitg.libraries import library_version

MANIFEST_SUFFIX = ".manifest.json"
SCHEMA_VERSION = 1

# Engine kinds and which runtime versions lock them.
KINDS = ("onnx", "tensorrt")
# Kinds whose files are only valid for the exact library version and GPU that produced them.
GPU_LOCKED_KINDS = ("tensorrt",)


@dataclass
class Profile:
    """One TensorRT optimization profile entry: the shape range of one input."""

    input: str
    min: list[int]
    opt: list[int]
    max: list[int]


@dataclass
class EngineManifest:
    name: str  # "vision" | "llm"
    kind: str  # one of KINDS
    file: str  # engine file name, relative to the manifest's folder
    precision: str  # fp32 | fp16 | bf16 | fp8
    checkpoint: dict[str, str]  # {"sha256": full-content hash, "identity": videoitg.checkpoint_identity}
    versions: dict[str, str] = field(default_factory=dict)  # library -> version that produced the file
    gpu: dict[str, str] | None = None  # {"name", "compute_capability"} for GPU-locked kinds
    profiles: list[Profile] = field(default_factory=list)
    io: dict[str, Any] = field(default_factory=dict)  # input/output names, dtypes, dynamic axes
    extra: dict[str, Any] = field(default_factory=dict)  # variant, fused hw, rebuild command, ...
    created_utc: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    host: str = field(default_factory=platform.node)
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown engine kind {self.kind!r}; expected one of {KINDS}")
        self.profiles = [p if isinstance(p, Profile) else Profile(**p) for p in self.profiles]

    # ---- files -----------------------------------------------------------------------------------
    @staticmethod
    def path_for(engine_path: str | Path) -> Path:
        p = Path(engine_path)
        return p.with_name(p.name + MANIFEST_SUFFIX)

    def write(self, folder: str | Path) -> Path:
        path = self.path_for(Path(folder) / self.file)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, engine_path: str | Path) -> EngineManifest:
        path = cls.path_for(engine_path)
        if not path.is_file():
            raise EngineError(
                f"{engine_path}: no manifest ({path.name}) beside the engine; it was not built by "
                "`videoitg build` or the manifest was deleted. Rebuild the engine."
            )
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise EngineError(f"{path}: manifest is not valid JSON ({e}); rebuild the engine") from e
        if d.get("schema") != SCHEMA_VERSION:
            raise EngineMismatchError(f"{path}: manifest schema {d.get('schema')} != {SCHEMA_VERSION}; rebuild")
        return cls(**d)

    @property
    def rebuild_hint(self) -> str:
        return self.extra.get("rebuild_command", "videoitg build --checkpoint <checkpoint> --out <engines>")


# ---- environment ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RuntimeEnv:
    """What this machine offers: library versions (None = not installed) and the GPU."""

    versions: dict[str, str | None]
    gpu_name: str | None
    compute_capability: str | None

    @classmethod
    def current(cls, device_index: int = 0) -> RuntimeEnv:
        versions = {name: library_version(name) for name in ("tensorrt", "tensorrt_llm", "onnxruntime", "torch")}
        gpu_name = cc = None
        try:
            if torch.cuda.is_available():
                gpu_name = torch.cuda.get_device_name(device_index)
                major, minor = torch.cuda.get_device_capability(device_index)
                cc = f"{major}.{minor}"
        except Exception:  # a broken CUDA install must not hide the version report
            pass
        return cls(versions=versions, gpu_name=gpu_name, compute_capability=cc)


# ---- the check -----------------------------------------------------------------------------------
def manifest_problems(
    manifest: EngineManifest,
    env: RuntimeEnv,
    *,
    checkpoint_sha256: str | None = None,
    checkpoint_identity: str | None = None,
    precision: str | None = None,
    strict_gpu_name: bool = True,
) -> list[str]:
    """Every reason `manifest`'s engine cannot run here, one line each; empty when it can.

    `checkpoint_sha256` (full hash, slow on 16 GB) / `checkpoint_identity` (videoitg.model.checkpoint's fast id) /
    `precision`: what the caller expects (None = don't check).
    `strict_gpu_name`: TensorRT tunes tactics per GPU model, so a plan from another model of the same
    compute capability may load but is unsupported; refuse it unless the caller opts out.
    """
    problems: list[str] = []
    locked = manifest.kind in GPU_LOCKED_KINDS
    for lib, built in manifest.versions.items():
        have = env.versions.get(lib)
        if lib in ("torch", "onnx", "onnxruntime") and not locked:
            continue  # ONNX graphs are portable across these; recorded for information only
        if have is None:
            problems.append(f"{lib} {built} built this engine but {lib} is not importable here")
        elif have != built:
            problems.append(f"{lib} version mismatch: engine built with {built}, this machine has {have}")
    if locked:
        want = manifest.gpu or {}
        if env.compute_capability is None:
            problems.append("engine needs a CUDA GPU but none is visible")
        else:
            if want.get("compute_capability") != env.compute_capability:
                problems.append(
                    f"GPU compute capability mismatch: engine built for sm {want.get('compute_capability')} "
                    f"({want.get('name')}), this GPU is sm {env.compute_capability} ({env.gpu_name})"
                )
            elif strict_gpu_name and want.get("name") != env.gpu_name:
                problems.append(f"GPU model mismatch: engine built on {want.get('name')}, this GPU is {env.gpu_name}")
    if precision is not None and precision != manifest.precision:
        problems.append(f"precision mismatch: engine is {manifest.precision}, {precision} was requested")
    for key, given in (("sha256", checkpoint_sha256), ("identity", checkpoint_identity)):
        built = manifest.checkpoint.get(key)
        if given is not None and given != built:
            problems.append(
                f"checkpoint mismatch: engine built from checkpoint {key} {str(built)[:16]}, "
                f"the checkpoint given has {given[:16]}"
            )
    return problems


def check_manifest(manifest: EngineManifest, env: RuntimeEnv, **expected: Any) -> None:
    """Raise EngineMismatchError listing every reason `manifest`'s engine cannot run here: `manifest_problems`, with
    the same keyword arguments."""
    problems = manifest_problems(manifest, env, **expected)
    if problems:
        raise EngineMismatchError(
            f"engine {manifest.name!r} ({manifest.file}) cannot be used here:\n  - "
            + "\n  - ".join(problems)
            + f"\nRebuild it on this machine: {manifest.rebuild_hint}"
        )


# ---- checkpoint identity -------------------------------------------------------------------------
def checkpoint_sha256(checkpoint_dir: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 over config.json and every *.safetensors file (names, sizes and bytes), in sorted order.

    Weights change without the header changing when a model is fine-tuned, so every byte is hashed; for the
    7B checkpoint this reads ~16 GB once per build (progress shown)."""
    root = Path(checkpoint_dir)
    files = sorted(p for p in root.iterdir() if p.name == "config.json" or p.suffix == ".safetensors")
    if not files:
        raise EngineError(f"{root}: no config.json or *.safetensors to hash; is this a checkpoint directory?")
    h = hashlib.sha256()
    total = sum(p.stat().st_size for p in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc="hashing checkpoint", disable=total < (1 << 28)) as bar:
        for p in files:
            h.update(f"{p.name}\0{p.stat().st_size}\0".encode())
            with p.open("rb") as f:
                while block := f.read(chunk):
                    h.update(block)
                    bar.update(len(block))
    return h.hexdigest()
