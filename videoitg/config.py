"""Model configuration: one dataclass per tower plus the VideoITG glue, read from / written to the released
`config.json` layout (flat HF `Qwen2Config` text fields + `mm_*` fields; see docs/checkpoints.md, "Checkpoint format").

Every size in the model code comes from here, so the tiny test configs and the 7B model run the same code.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# Upper bounds far above any real model (Qwen2-72B: 80 layers, hidden 8192, intermediate 29568, vocab 152064), so
# that a corrupt or hostile config.json is refused here instead of building a model for minutes or exhausting
# memory: every size is checked before anything is allocated.
MAX_LAYERS = 1024
MAX_WIDTH = 1 << 17  # hidden / intermediate sizes
MAX_HEADS = 1024
MAX_VOCAB = 1 << 22
MAX_POSITIONS = 1 << 24  # also bounds image_size and the token budgets


def _check_types(obj: object) -> None:
    """Sizes must be ints and rates numbers: a string in config.json would otherwise fail deep inside nn.Linear."""
    for f in fields(obj):
        v = getattr(obj, f.name)
        if f.type == "int" and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"{f.name} must be an integer, got {v!r}")
        if f.type == "float" and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"{f.name} must be a number, got {v!r}")


def _check_range(where: str, name: str, value: int, lo: int, hi: int) -> None:
    if not lo <= value <= hi:
        raise ValueError(f"{where}.{name} must be between {lo} and {hi}, got {value}")


def _check_positive_finite(where: str, name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{where}.{name} must be a positive finite number, got {value}")


@dataclass
class VisionConfig:
    """SigLIP vision tower (HF `SiglipVisionConfig` field names). Defaults: siglip-so400m-patch14-384."""

    image_size: int = 384
    patch_size: int = 14
    num_channels: int = 3
    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 27
    num_attention_heads: int = 16
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        _check_types(self)
        w = "vision_config"
        _check_range(w, "image_size", self.image_size, 1, MAX_POSITIONS)
        _check_range(w, "patch_size", self.patch_size, 1, self.image_size)
        _check_range(w, "num_channels", self.num_channels, 1, 4)
        _check_range(w, "hidden_size", self.hidden_size, 1, MAX_WIDTH)
        _check_range(w, "intermediate_size", self.intermediate_size, 1, MAX_WIDTH)
        _check_range(w, "num_hidden_layers", self.num_hidden_layers, 1, MAX_LAYERS)
        _check_range(w, "num_attention_heads", self.num_attention_heads, 1, min(MAX_HEADS, self.hidden_size))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"{w}.hidden_size={self.hidden_size} is not a multiple of "
                             f"num_attention_heads={self.num_attention_heads}")
        _check_positive_finite(w, "layer_norm_eps", self.layer_norm_eps)

    @property
    def grid(self) -> int:
        """Patches per side (27 for so400m@384)."""
        return self.image_size // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> VisionConfig:
        # A SiglipModel config nests the vision part; a SiglipVisionModel config is flat.
        d = d.get("vision_config", d)
        if not isinstance(d, dict):
            raise ValueError(f"vision_config must be an object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_hf_dict(self) -> dict[str, Any]:
        return {"model_type": "siglip_vision_model", "hidden_act": "gelu_pytorch_tanh", **asdict(self)}


@dataclass
class TextConfig:
    """Qwen2 decoder (HF `Qwen2Config` field names). Defaults: Qwen2-7B."""

    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32768

    def __post_init__(self) -> None:
        _check_types(self)
        w = "config"
        _check_range(w, "vocab_size", self.vocab_size, 1, MAX_VOCAB)
        _check_range(w, "hidden_size", self.hidden_size, 1, MAX_WIDTH)
        _check_range(w, "intermediate_size", self.intermediate_size, 1, MAX_WIDTH)
        _check_range(w, "num_hidden_layers", self.num_hidden_layers, 1, MAX_LAYERS)
        _check_range(w, "num_attention_heads", self.num_attention_heads, 1, min(MAX_HEADS, self.hidden_size))
        _check_range(w, "num_key_value_heads", self.num_key_value_heads, 1, self.num_attention_heads)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"{w}.hidden_size={self.hidden_size} is not a multiple of "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"{w}.num_attention_heads={self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads}")
        if self.head_dim % 2:  # rotary embeddings rotate pairs of channels
            raise ValueError(f"{w}: head size hidden_size / num_attention_heads = {self.head_dim} must be even")
        _check_positive_finite(w, "rms_norm_eps", self.rms_norm_eps)
        _check_positive_finite(w, "rope_theta", self.rope_theta)
        _check_range(w, "max_position_embeddings", self.max_position_embeddings, 1, MAX_POSITIONS)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass
class VideoITGConfig:
    """The grounding model: vision tower -> seq_mlp projector -> Qwen2 (full attention) -> per-frame head."""

    text: TextConfig = field(default_factory=TextConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    mm_vision_tower: str = "google/siglip-so400m-patch14-384"
    mm_vision_select_layer: int = -2
    mm_projector_type: str = "seq_mlp"
    vision_token_num: int = 16384  # visual-token budget per video: HW = min(floor(sqrt(budget / T)), grid)
    vision_min_num: int = 1  # lower bound of the random HW drawn per sample in training
    tokenizer_model_max_length: int = 20480
    # "bidirectional" = Variant C (released); "causal" = Variant B (anchor tokens after the instruction).
    attention: str = "bidirectional"
    extra: dict[str, Any] = field(default_factory=dict)  # unknown config.json keys, written back unchanged

    def __post_init__(self) -> None:
        for name in ("mm_vision_select_layer", "vision_token_num", "vision_min_num", "tokenizer_model_max_length"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"config.{name} must be an integer, got {v!r}")
        _check_range("config", "vision_token_num", self.vision_token_num, 1, MAX_POSITIONS)
        _check_range("config", "vision_min_num", self.vision_min_num, 1, MAX_POSITIONS)
        _check_range("config", "tokenizer_model_max_length", self.tokenizer_model_max_length, 1, MAX_POSITIONS)
        if self.attention not in ("bidirectional", "causal"):
            raise ValueError(f"config.grounding_attention must be 'bidirectional' or 'causal', got {self.attention!r}")
        self.vision_layers_used  # noqa: B018 - raises for a select layer outside the tower

    @property
    def mm_hidden_size(self) -> int:
        return self.vision.hidden_size

    @property
    def vision_layers_used(self) -> int:
        """Encoder layers to run for `mm_vision_select_layer` (HF hidden_states[k] = output of layer k)."""
        n, s = self.vision.num_hidden_layers, self.mm_vision_select_layer
        k = n + 1 + s if s < 0 else s
        if not 1 <= k <= n:
            raise ValueError(f"mm_vision_select_layer={s} selects no encoder layer of a {n}-layer tower")
        return k

    def budget_per_side(self, num_frames: int) -> int:
        """floor(sqrt(vision_token_num / T)): the side the token budget allows, before the tower's grid caps it
        (training draws HW up to this, then caps)."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        # max(1, .): the original has no guard and crashes (HW=0) once T > vision_token_num.
        return max(1, math.floor(math.sqrt(self.vision_token_num / num_frames)))

    def tokens_per_side(self, num_frames: int) -> int:
        """Inference-time HW for a video of `num_frames` sampled frames, as the released model."""
        return min(self.budget_per_side(num_frames), self.vision.grid)

    # ---- config.json ----------------------------------------------------------------------------------------
    def to_json_dict(self, embed_vision_config: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = dict(self.extra)
        d.update(asdict(self.text))
        d.update(
            architectures=["EagleQwenG"],
            model_type="eagle_QwenG",
            mm_vision_tower=self.mm_vision_tower,
            mm_vision_select_layer=self.mm_vision_select_layer,
            mm_hidden_size=self.mm_hidden_size,
            mm_projector_type=self.mm_projector_type,
            vision_token_num=self.vision_token_num,
            vision_min_num=self.vision_min_num,
            tokenizer_model_max_length=self.tokenizer_model_max_length,
            rope_scaling=None,
            grounding_attention=self.attention,
        )
        if embed_vision_config:
            d["vision_config"] = self.vision.to_hf_dict()
        return d

    @classmethod
    def from_json_dict(cls, d: dict[str, Any], vision: VisionConfig | None = None) -> VideoITGConfig:
        text_names = {f.name for f in fields(TextConfig)}
        text = TextConfig(**{k: d[k] for k in text_names if k in d})
        if vision is None:
            if "vision_config" not in d:
                raise ValueError("config.json has no vision_config; the vision tower's own config is needed")
            vision = VisionConfig.from_hf_dict(d["vision_config"])
        known = text_names | {
            "architectures", "model_type", "mm_vision_tower", "mm_vision_select_layer", "mm_hidden_size",
            "mm_projector_type", "vision_token_num", "vision_min_num", "tokenizer_model_max_length",
            "rope_scaling", "grounding_attention", "vision_config",
        }
        if d.get("mm_projector_type", "seq_mlp") != "seq_mlp":
            raise ValueError(f"mm_projector_type={d['mm_projector_type']!r} is not supported (only 'seq_mlp')")
        if "mm_hidden_size" in d and d["mm_hidden_size"] != vision.hidden_size:
            raise ValueError(
                f"mm_hidden_size={d['mm_hidden_size']} does not match "
                f"the vision tower's hidden_size={vision.hidden_size}"
            )
        return cls(
            text=text,
            vision=vision,
            mm_vision_tower=d.get("mm_vision_tower", cls.mm_vision_tower),
            mm_vision_select_layer=d.get("mm_vision_select_layer", -2),
            vision_token_num=d.get("vision_token_num", 16384),
            vision_min_num=d.get("vision_min_num", 1),
            tokenizer_model_max_length=d.get("tokenizer_model_max_length", 20480),
            attention=d.get("grounding_attention", "bidirectional"),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def save(self, path: str | Path, embed_vision_config: bool = True) -> None:
        Path(path).write_text(json.dumps(self.to_json_dict(embed_vision_config), indent=2) + "\n")


# ---- named presets -------------------------------------------------------------------------------------------
def _tiny() -> VideoITGConfig:
    """CPU-sized, with the real model's structure (GQA, select layer -2, budgeted HW): the synthetic checkpoint
    (`videoitg train --init tiny`) and the test suite use it."""
    return VideoITGConfig(
        text=TextConfig(
            vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        ),
        vision=VisionConfig(
            image_size=112, patch_size=14, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
            num_attention_heads=4,
        ),
        mm_vision_tower="embedded",
        vision_token_num=1024,
        tokenizer_model_max_length=4096,
    )


PRESETS = {
    "videoitg-7b": VideoITGConfig,  # SigLIP-so400m/14@384 + Qwen2-7B, the released sizes
    "tiny": _tiny,
}


def preset(name: str, vocab_size: int | None = None, **overrides: Any) -> VideoITGConfig:
    """A named configuration; `vocab_size` sets the text vocabulary (a tokenizer's length), `overrides` set
    top-level fields (e.g. attention="causal")."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[name]()
    if vocab_size is not None:
        cfg.text.vocab_size = vocab_size
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise ValueError(f"VideoITGConfig has no field {k!r}")
        setattr(cfg, k, v)
    return cfg
