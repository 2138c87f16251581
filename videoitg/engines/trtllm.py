"""The grounding half on the TensorRT-LLM PyTorch backend, as an out-of-tree model (Variant C, and Variant B).

Why not the compiled TensorRT-LLM engine: its Qwen decoder hard-codes a causal mask and the fused context
attention has no plain bidirectional mode (TRT-LLM #1384, #1037). The PyTorch backend's attention takes a
per-call mask type, and `PredefinedAttentionMask.FULL` is what its vision encoders (SigLIP, Qwen2.5-VL)
use with `kv_cache_manager=None`. So the grounding LLM is: TRT-LLM's `QwenModel` with every layer's
attention called with FULL (Variant C; CAUSAL for a Variant B checkpoint, whose anchors the segment ids
select), fed `inputs_embeds` (the sequence of `videoitg.model.layout`), then a 1-label per-token head pooled per
frame. No KV cache, no chunked context, one forward pass. The head (`FrameScoreHead`) runs in fp32 on the fp16/bf16
hidden states, as the torch model and the ONNX graph do: per-token scores are never rounded before the pooling.

Written against the TensorRT-LLM 1.2 PyTorch backend (`tensorrt_llm._torch`: `ModelConfig`,
`models.modeling_qwen.{QwenModel,QwenDecoderLayer}`, `models.modeling_utils.register_auto_model`,
`attention_backend.utils.get_attention_backend`, `attention_backend.interface.PredefinedAttentionMask`,
`modules.linear.Linear` with fused `qkv_proj` / `gate_up_proj` weight loading), container
`nvcr.io/nvidia/tensorrt-llm/release:1.2.x`. These are internal (underscore) modules: pin the version.
The pure-torch parts (config mapping, weight grouping, pooling) are tested on CPU; the parts that import
TensorRT-LLM are tested only where it is installed (docs/engines.md says which have not been run).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from videoitg.config import VideoITGConfig
from videoitg.errors import BackendUnavailable
from videoitg.libraries import import_trtllm
from videoitg.model.checkpoint import index_tensors, load_indexed
from videoitg.model.files import load_config
from videoitg.model.layout import frame_mean_logits

ARCHITECTURE = "VideoITGForFrameScoring"

# fused TRT-LLM module -> the HF tensors it is loaded from, in the order its weight mode expects
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
# What the model loads from the checkpoint: the decoder layers, the final norm and the head. Not the token
# embeddings: the model is fed `inputs_embeds` built by the core model (`VideoITG.sequence`), never token ids.
WEIGHT_PREFIXES = ("model.layers.", "model.norm.", "out_proj.")
# Rows of the embedding table QwenModel builds (and VideoITGForFrameScoring then drops): one, not the checkpoint's
# 152,064 (544.9M parameters, 1.09 GB at fp16, that would sit unused on the GPU).
EMBEDDING_ROWS = 1


def weight_keys(names: list[str]) -> list[str]:
    """The checkpoint tensors the TensorRT-LLM model loads (`WEIGHT_PREFIXES`), in the checkpoint's order."""
    return [k for k in names if k.startswith(WEIGHT_PREFIXES)]


def qwen2_config_dict(cfg: VideoITGConfig, dtype: torch.dtype) -> dict[str, Any]:
    """`transformers.Qwen2Config` fields for TRT-LLM's QwenModel (full attention, no rope scaling). `vocab_size` is
    EMBEDDING_ROWS: QwenModel always builds an embedding table of that many rows, and this model never looks a
    token up (QwenModel.forward embeds only when given no `inputs_embeds`). Of the modules it builds (QwenModel,
    QwenDecoderLayer, QwenAttention, GatedMLP, RMSNorm, read at the version docs/engines.md names) only that
    table reads vocab_size; the LM head that would also read it is not built."""
    t = cfg.text
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "qwen2",
        "vocab_size": EMBEDDING_ROWS,
        "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads,
        "rms_norm_eps": t.rms_norm_eps,
        "rope_theta": t.rope_theta,
        "max_position_embeddings": t.max_position_embeddings,
        "rope_scaling": None,
        "hidden_act": "silu",
        "torch_dtype": str(dtype).removeprefix("torch."),
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "num_labels": 1,
    }


def hf_config(cfg: VideoITGConfig, dtype: torch.dtype, disable_fuse_rope: bool = False) -> transformers.Qwen2Config:
    """The pretrained config TRT-LLM's modules are built from: `qwen2_config_dict`, the dtype as a torch.dtype
    (which they take as their `dtype`), the attention (`videoitg_attention`: FULL or CAUSAL, read by
    VideoITGForFrameScoring) and `disable_fuse_rope` (QwenAttention builds its attention with
    `rope_fusion=not config.disable_fuse_rope`: True applies RoPE with the unfused rotary-embedding module before
    the attention kernel instead of inside it)."""
    hf_cfg = transformers.Qwen2Config(**qwen2_config_dict(cfg, dtype))
    hf_cfg.torch_dtype = dtype
    hf_cfg.videoitg_attention = cfg.attention
    hf_cfg.disable_fuse_rope = disable_fuse_rope
    return hf_cfg


def hf_sources(module_name: str) -> list[str]:
    """HF tensor prefixes that feed one TRT-LLM module (its parameters are `<prefix>.weight` / `.bias`).

    QwenModel's modules carry the HF names, except the fused projections."""
    parent, _, leaf = module_name.rpartition(".")
    if leaf in FUSED:
        return [f"{parent}.{src}" for src in FUSED[leaf]]
    return [module_name]


class FrameScoreHead(nn.Module):
    """`out_proj` as the grounding head, in fp32 whatever the decoder's dtype: w·h per token (fp32), the per-frame
    mean (fp32, `frame_mean_logits`), then the bias. Equal to the released mean-pool-then-linear head because
    `out_proj` is linear. Its tensors stay fp32 through `.to(dtype)` / `.half()` of the model that holds it."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(hidden_size, dtype=torch.float32))
        self.register_buffer("bias", torch.zeros((), dtype=torch.float32))

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True):
        super()._apply(fn, recurse)
        self.weight, self.bias = self.weight.float(), self.bias.float()  # device moves apply, dtype casts do not
        return self

    def load(self, weights: dict[str, torch.Tensor]) -> None:
        """From the checkpoint's `out_proj.weight` [1, H] and `out_proj.bias` [1] (zero when absent)."""
        self.weight.copy_(weights["out_proj.weight"].reshape(-1).float())
        self.bias.fill_(float(weights["out_proj.bias"].reshape(-1)[0]) if "out_proj.bias" in weights else 0.0)

    def forward(self, hidden: torch.Tensor, segment_ids: torch.Tensor | None = None,
                frame_ids: torch.Tensor | None = None) -> torch.Tensor:
        """hidden [num_tokens, H] -> fp32 per-token scores [num_tokens], or with segment_ids [num_tokens] and
        frame_ids [T] the fp32 per-frame logits [T]."""
        scores = hidden.float() @ self.weight
        if segment_ids is None:
            return scores
        return frame_mean_logits(scores.unsqueeze(0), segment_ids.view(1, -1), frame_ids, self.bias)[0]


@functools.cache
def model_classes() -> tuple[type, type]:
    """Define (and register with TRT-LLM's auto-model registry) the out-of-tree classes. Deferred so that this
    module imports without TensorRT-LLM."""
    import_trtllm()
    from tensorrt_llm._torch.attention_backend.interface import PredefinedAttentionMask
    from tensorrt_llm._torch.models.modeling_qwen import QwenDecoderLayer, QwenModel
    from tensorrt_llm._torch.models.modeling_utils import register_auto_model

    class FullAttentionQwenLayer(QwenDecoderLayer):
        """QwenDecoderLayer whose self-attention sees every token (the released model sets is_causal=False in
        all 28 layers). Only the attention call differs; norms, MLP and residuals are the parent's modules.
        `mask` is set per model: FULL for Variant C, CAUSAL for Variant B."""

        mask = PredefinedAttentionMask.FULL

        def forward(self, position_ids: torch.Tensor, hidden_states: torch.Tensor, attn_metadata: Any,
                residual: torch.Tensor | None = None, **kwargs: Any):
            if residual is None:
                residual = hidden_states
                hidden_states = self.input_layernorm(hidden_states)
            else:
                hidden_states, residual = self.input_layernorm(hidden_states, residual)
            hidden_states = self.self_attn(
                position_ids=position_ids,
                hidden_states=hidden_states,
                attn_metadata=attn_metadata,
                attention_mask=self.mask,
            )
            hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
            return self.mlp(hidden_states), residual

    @register_auto_model(ARCHITECTURE)
    class VideoITGForFrameScoring(torch.nn.Module):
        """QwenModel (full attention) + the fp32 frame score head; no hidden state or vocabulary logits ever leave
        the model."""

        def __init__(self, model_config: Any):  # TensorRT-LLM's ModelConfig
            super().__init__()
            self.model_config = model_config
            self.model = QwenModel(model_config)
            # inputs_embeds come from the core model: drop the (EMBEDDING_ROWS-row) table QwenModel always builds
            self.model.embed_tokens = None
            causal = getattr(model_config.pretrained_config, "videoitg_attention", "bidirectional") == "causal"
            for layer in self.model.layers:
                # Same modules and weights, our attention call: swapping the class avoids building (and
                # allocating) a second 28-layer stack.
                layer.__class__ = FullAttentionQwenLayer
                if causal:
                    layer.mask = PredefinedAttentionMask.CAUSAL
            self.score = FrameScoreHead(model_config.pretrained_config.hidden_size)

        def forward(
            self,
            attn_metadata: Any,
            input_ids: torch.Tensor | None = None,
            position_ids: torch.Tensor | None = None,
            inputs_embeds: torch.Tensor | None = None,
            segment_ids: torch.Tensor | None = None,
            frame_ids: torch.Tensor | None = None,
            **kwargs: Any,
        ):
            h = self.model(
                attn_metadata=attn_metadata,
                input_ids=input_ids,
                position_ids=position_ids,
                inputs_embeds=inputs_embeds,
            )  # [num_tokens, H], after the final RMSNorm
            return self.score(h, segment_ids, frame_ids)

        def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
            for name, module in self.named_modules():
                params = {k: p for k, p in module._parameters.items() if p is not None}
                if not params or name == "":
                    continue
                groups = [
                    {k.rsplit(".", 1)[1]: v for k, v in weights.items() if k.rsplit(".", 1)[0] == src}
                    for src in hf_sources(name)
                ]
                if any(not g for g in groups):
                    raise KeyError(f"no weights for {name} (looked for {hf_sources(name)})")
                if hasattr(module, "load_weights"):
                    module.load_weights(weights=groups)
                else:
                    for pname, p in params.items():
                        p.data.copy_(groups[0][pname])
            self.score.load(weights)
            for m in self.modules():
                if m is not self and hasattr(m, "post_load_weights"):
                    m.post_load_weights()

    return FullAttentionQwenLayer, VideoITGForFrameScoring


class TrtllmTorchScorer:
    """Runs the grounding half on the TRT-LLM PyTorch backend, one request per call (one context, no KV cache)."""

    def __init__(self, checkpoint_dir: str | Path, dtype: torch.dtype = torch.float16, attn_backend: str = "TRTLLM",
                 device: torch.device | str | None = None, max_num_tokens: int = 0, disable_fuse_rope: bool = False):
        """device: the GPU to build on and run, with its index (the runtime seam passes the model's, `runtimes._cuda`;
        default: the current CUDA device); it is made the current one, since TRT-LLM's attention backend allocates
        on the current device. max_num_tokens: the longest sequence the attention metadata is sized for at once (a
        longer request resizes it once). disable_fuse_rope: RoPE by TRT-LLM's unfused rotary-embedding module
        before the attention call instead of inside the fused attention kernel (QwenAttention reads
        `disable_fuse_rope` from the model config): the fallback docs/engines.md names."""
        import_trtllm()
        if not torch.cuda.is_available():
            raise BackendUnavailable("the TensorRT-LLM PyTorch backend needs a CUDA GPU")
        self.device = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(self.device)
        from tensorrt_llm._torch.attention_backend.utils import get_attention_backend  # optional: as model_classes
        from tensorrt_llm._torch.model_config import ModelConfig

        ckpt = Path(checkpoint_dir)
        self.cfg, _ = load_config(ckpt)
        self.model_config = ModelConfig(pretrained_config=hf_config(self.cfg, dtype, disable_fuse_rope),
                                        attn_backend=attn_backend)
        _, cls = model_classes()
        with torch.device(self.device):
            # Each TRT-LLM module is built in the config's dtype; no blanket `.to(dtype)`, which would also cast
            # what is kept in fp32 (the score head, rotary tables).
            self.model = cls(self.model_config)
        index = index_tensors(ckpt)  # the loader's reader: safetensors only, shards and index
        self.model.load_weights(load_indexed(index, weight_keys(list(index))))
        self.model.eval()
        self.metadata_cls = get_attention_backend(attn_backend).Metadata
        self.max_num_tokens = max_num_tokens
        self.attn_metadata = None  # built once (`_metadata`), refilled per request

    def _metadata(self, num_tokens: int):
        """The attention metadata for one context of `num_tokens` tokens, no KV cache. Built once per scorer and
        refilled per request, as TensorRT-LLM's own encoders do: the attention workspace it holds grows once instead
        of being allocated again (with a warning) for every request. Rebuilt only for a sequence longer than any
        it was sized for."""
        if self.attn_metadata is None or num_tokens > self.max_num_tokens:
            self.max_num_tokens = max(num_tokens, self.max_num_tokens)
            self.attn_metadata = self.metadata_cls(max_num_requests=1, max_num_tokens=self.max_num_tokens,
                                                   kv_cache_manager=None)
        md = self.attn_metadata
        md.seq_lens = torch.tensor([num_tokens], dtype=torch.int)
        md.num_contexts = 1
        md.request_ids = [1]
        md.prompt_lens = [num_tokens]
        md.max_seq_len = num_tokens
        md.prepare()
        return md

    @torch.inference_mode()
    def score(self, inputs_embeds: torch.Tensor, segment_ids: torch.Tensor, num_frames: int) -> torch.Tensor:
        """inputs_embeds [L, H] (visual rows then instruction embeddings), segment_ids [L] -> logits [T]."""
        x = inputs_embeds.to(self.device, self.model_config.pretrained_config.torch_dtype)
        n = x.shape[0]
        out = self.model(
            attn_metadata=self._metadata(n),
            inputs_embeds=x,
            position_ids=torch.arange(n, dtype=torch.int32, device=self.device).unsqueeze(0),
            segment_ids=segment_ids.to(self.device),
            frame_ids=torch.arange(num_frames, device=self.device),
        )
        return out.cpu()
