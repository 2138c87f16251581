"""SigLIP vision tower, truncated at `mm_vision_select_layer`.

Checkpoint names follow HF `SiglipVisionModel` (`vision_model.embeddings.*`, `vision_model.encoder.layers.{i}.*`)
so released weights load without renaming. Only the layers the grounding model reads are built: with select layer
-2 of 27, layers 0..25. The last layer, `post_layernorm` and the pooling head are never computed (HF computes them
and keeps every hidden state; ~18 GB at 384 frames).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videoitg.config import VisionConfig
from videoitg.model.hotpath import HOT_PATH, gelu_linear
from videoitg.model.norms import add_layer_norm


def embedding(num: int, dim: int) -> nn.Embedding:
    """`nn.Embedding(num, dim)` with its N(0, 1) init, which is skipped on the meta device, where a checkpoint load
    builds the model before it reads the weights: torch runs `normal_` on meta through its Python reference ops, and
    their first use imports sympy and 800 other modules (seconds of CPU in every process that loads a checkpoint,
    each served step's included)."""
    weight = torch.empty(num, dim)
    if not weight.is_meta:
        nn.init.normal_(weight)
    return nn.Embedding(num, dim, _weight=weight)


class SiglipEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = embedding(cfg.tokens_per_frame, cfg.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # [T, 3, S, S] -> [T, D, g, g] -> [T, g*g, D], patches row-major
        x = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        x = x.flatten(2).transpose(1, 2)
        return x + self.position_embedding.weight


class SiglipAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        d = cfg.hidden_size
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = (p(x).view(B, N, self.num_heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, hd]; no mask: every patch sees every patch
        return self.out_proj(y.transpose(1, 2).reshape(B, N, D))


class SiglipMLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.width = cfg.intermediate_size  # the checkpoint's; `pad` may widen fc1 and fc2 with zeros
        self.fc1 = nn.Linear(cfg.hidden_size, self.width)
        self.fc2 = nn.Linear(self.width, cfg.hidden_size)
        # padded or not, state_dict gives and load_state_dict takes the checkpoint's shapes
        self.register_state_dict_post_hook(SiglipMLP._unpadded_state)
        self.register_load_state_dict_pre_hook(SiglipMLP._padded_load)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_linear(self.fc1, x))

    @property
    def padded(self) -> bool:
        return self.fc1.out_features != self.width

    def pad(self, multiple: int) -> None:
        """fc1's outputs and fc2's inputs widened in place with zeros to a multiple of `multiple` (1: back to the
        checkpoint's width). The function is unchanged: a zero row of fc1 with a zero bias gives GELU(0) = 0, which
        meets a zero column of fc2. The parameters keep their identity (their `.data` is replaced)."""
        width = -(-self.width // multiple) * multiple
        if width == self.fc1.out_features:
            return
        extra = width - self.width
        w1, b1 = self.fc1.weight.data[: self.width], self.fc1.bias.data[: self.width]
        w2 = self.fc2.weight.data[:, : self.width]
        self.fc1.weight.data, self.fc1.bias.data = F.pad(w1, (0, 0, 0, extra)), F.pad(b1, (0, extra))
        self.fc2.weight.data = F.pad(w2, (0, extra))
        self.fc1.out_features = self.fc2.in_features = width

    def _unpadded_state(self, state: dict, prefix: str, *_: object) -> None:
        if not self.padded:  # training's sharded parameters included: untouched
            return
        n = self.width
        for key, cut in (("fc1.weight", slice(n)), ("fc1.bias", slice(n)), ("fc2.weight", (slice(None), slice(n)))):
            if prefix + key in state:
                state[prefix + key] = state[prefix + key][cut]

    def _padded_load(self, state: dict, prefix: str, *_: object) -> None:
        extra = self.fc1.out_features - self.width
        if extra:
            for key, pad in (("fc1.weight", (0, 0, 0, extra)), ("fc1.bias", (0, extra)), ("fc2.weight", (0, extra))):
                if prefix + key in state:
                    state[prefix + key] = F.pad(state[prefix + key], pad)


class SiglipEncoderLayer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x = x + attn(ln1(x)); x + mlp(ln2(x)): the first residual add and ln2 in one pass where
        # `HOT_PATH.one_pass_norms` is on (videoitg.model.norms)
        one_pass = HOT_PATH.one_pass_norms
        x, y = add_layer_norm(x, None, self.layer_norm1, one_pass)
        x, y = add_layer_norm(x, self.self_attn(y), self.layer_norm2, one_pass)
        return x + self.mlp(y)


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(num_layers))


class SiglipVisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig, num_layers: int):
        super().__init__()
        self.embeddings = SiglipEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg, num_layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixel_values)
        for layer in self.encoder.layers:
            x = layer(x)
        return x  # [T, g*g, D] = HF hidden_states[num_layers]


class SiglipVisionModel(nn.Module):
    """HF-named container: `vision_model.*`."""

    def __init__(self, cfg: VisionConfig, num_layers: int):
        super().__init__()
        self.vision_model = SiglipVisionTransformer(cfg, num_layers)


class VisionTower(nn.Module):
    """Eagle's `SiglipVisionTower`: holds `vision_tower` (a SiglipVisionModel), frozen, run in frame chunks."""

    def __init__(self, cfg: VisionConfig, num_layers: int):
        super().__init__()
        self.vision_tower = SiglipVisionModel(cfg, num_layers)

    def forward(self, pixel_values: torch.Tensor, chunk_frames: int = 64) -> torch.Tensor:
        # [T, 3, S, S] -> [T, g*g, D]; bounded chunks keep activation memory flat in T.
        vm = self.vision_tower.vision_model
        return torch.cat([vm(c) for c in pixel_values.split(chunk_frames)], dim=0)
