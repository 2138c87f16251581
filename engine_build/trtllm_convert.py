"""Variant B (causal, anchors after the instruction) -> TensorRT-LLM checkpoint, and the `trtllm-build` call.

Written against the TensorRT-LLM checkpoint format documented in `docs/source/architecture/checkpoint.md`
and the Qwen model definition (`tensorrt_llm/models/qwen/{config,model,convert}.py`) of TensorRT-LLM
0.17-1.2 (TensorRT backend; container `nvcr.io/nvidia/tritonserver:25.xx-trtllm-python-py3` or
`nvcr.io/nvidia/tensorrt-llm/release:1.2.x`). Facts used (read, not copied):

- A checkpoint is `config.json` + `rank{r}.safetensors`; Linear weights are (out_features, in_features).
- Qwen2 names: `transformer.vocab_embedding.weight`, `transformer.layers.{i}.input_layernorm.weight`,
  `.attention.qkv.{weight,bias}` (q, k, v stacked along the output dim), `.attention.dense.weight` (o_proj,
  no bias), `.post_layernorm.weight`, `.mlp.fc.weight` (HF gate_proj: the activated branch),
  `.mlp.gate.weight` (HF up_proj), `.mlp.proj.weight` (down_proj), `transformer.ln_f.weight`,
  `lm_head.weight`.
- With `architecture = "Qwen2ForSequenceClassification"` the QWen model's `lm_head` is a bias-free
  `hidden -> num_labels` ColumnLinear, loaded from HF `score.weight`. VideoITG's head `out_proj` (3584 -> 1)
  has a bias, so the weight becomes `lm_head.weight` and the bias is kept in `config.json` under `videoitg`
  and added by the runtime (`logit = context_logit[anchor] + bias`).

Only tensor parallel 1 is produced: a 1-row score head cannot be split across ranks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from videoitg.config import VideoITGConfig
from videoitg.engines.manifest import BackendUnavailable, EngineError

DTYPES = {
    "fp32": ("float32", torch.float32),
    "fp16": ("float16", torch.float16),
    "bf16": ("bfloat16", torch.bfloat16),
}
ARCHITECTURE = "Qwen2ForSequenceClassification"

# HF Qwen2 layer tensor -> TensorRT-LLM tensor (non-fused ones; q/k/v are fused separately).
LAYER_MAP = {
    "self_attn.o_proj.weight": "attention.dense.weight",
    "mlp.gate_proj.weight": "mlp.fc.weight",
    "mlp.up_proj.weight": "mlp.gate.weight",
    "mlp.down_proj.weight": "mlp.proj.weight",
    "input_layernorm.weight": "input_layernorm.weight",
    "post_attention_layernorm.weight": "post_layernorm.weight",
}
GLOBAL_MAP = {
    "model.embed_tokens.weight": "transformer.vocab_embedding.weight",
    "model.norm.weight": "transformer.ln_f.weight",
    "out_proj.weight": "lm_head.weight",
}


class _Tensors:
    """Lazy reader over every *.safetensors file of a checkpoint (a 7B model never sits in memory twice)."""

    def __init__(self, checkpoint_dir: Path):
        self._where: dict[str, Path] = {}
        for f in sorted(checkpoint_dir.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():
                    self._where[k] = f
        if not self._where:
            raise EngineError(f"{checkpoint_dir}: no *.safetensors files")

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def get(self, name: str) -> torch.Tensor:
        if name not in self._where:
            raise EngineError(f"checkpoint has no tensor {name!r} (needed for the TensorRT-LLM checkpoint)")
        with safe_open(str(self._where[name]), framework="pt") as st:
            return st.get_tensor(name)


def trtllm_config(cfg: VideoITGConfig, dtype: str, score_bias: float, max_frames: int) -> dict:
    """The checkpoint's config.json: PretrainedConfig's documented fields + QWenConfig's own."""
    t = cfg.text
    return {
        "architecture": ARCHITECTURE,
        "dtype": dtype,
        "logits_dtype": "float32",
        "vocab_size": t.vocab_size,
        "max_position_embeddings": t.max_position_embeddings,
        "hidden_size": t.hidden_size,
        "num_hidden_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads,
        "head_size": t.head_dim,
        "hidden_act": "silu",
        "intermediate_size": t.intermediate_size,
        "norm_epsilon": t.rms_norm_eps,
        "position_embedding_type": "rope_gpt_neox",
        "mapping": {"world_size": 1, "tp_size": 1, "pp_size": 1},
        "quantization": {"quant_algo": None, "kv_cache_quant_algo": None},
        "use_parallel_embedding": False,
        "embedding_sharding_dim": 0,
        "tie_word_embeddings": False,
        # QWenConfig
        "qwen_type": "qwen2",
        "attn_bias": True,
        "mlp_bias": False,
        "rotary_base": t.rope_theta,
        "rotary_scaling": None,  # the grounding model forces rope_scaling=None
        "use_logn_attn": False,
        "disable_weight_only_quant_plugin": False,
        "seq_length": t.max_position_embeddings,
        "num_labels": 1,
        "moe_intermediate_size": 0,
        "moe_shared_expert_intermediate_size": 0,
        # ours (PretrainedConfig keeps unknown keys as attributes)
        "videoitg": {
            "variant": "B",
            "score_bias": score_bias,
            "anchors": "one per frame, after the instruction; logit = context_logits[anchor] + score_bias",
            "max_frames": max_frames,
            "vision_token_num": cfg.vision_token_num,
        },
    }


def convert_variant_b(
    checkpoint_dir: str | Path, out_dir: str | Path, precision: str = "bf16", max_frames: int = 512
) -> Path:
    """Write `out_dir/config.json` + `out_dir/rank0.safetensors` from a VideoITG checkpoint (HF names)."""
    if precision not in DTYPES:
        raise EngineError(
            f"TensorRT-LLM checkpoint precision {precision!r} is not supported here ({sorted(DTYPES)}); "
            "fp8 needs calibrated scaling factors: quantize with NVIDIA ModelOpt and export its "
            "TensorRT-LLM checkpoint"
        )
    src, out = Path(checkpoint_dir), Path(out_dir)
    cfg = VideoITGConfig.from_json_dict(json.loads((src / "config.json").read_text()))
    dtype_name, dtype = DTYPES[precision]
    t, ts = cfg.text, _Tensors(src)
    weights: dict[str, torch.Tensor] = {}

    def put(name: str, x: torch.Tensor) -> None:
        weights[name] = x.to(dtype).contiguous()

    for hf, ours in GLOBAL_MAP.items():
        put(ours, ts.get(hf))
    if weights["lm_head.weight"].shape != (1, t.hidden_size):
        raise EngineError(
            f"out_proj.weight has shape {tuple(weights['lm_head.weight'].shape)}, expected (1, {t.hidden_size})"
        )
    for i in tqdm(range(t.num_hidden_layers), desc="converting layers", disable=t.num_hidden_layers < 8):
        hf, ours = f"model.layers.{i}.", f"transformer.layers.{i}."
        # Fused QKV: TensorRT-LLM's attention reads one [q; k; v] projection (rows = (nh + 2*nkv) * head_dim).
        put(
            ours + "attention.qkv.weight",
            torch.cat([ts.get(f"{hf}self_attn.{p}_proj.weight") for p in "qkv"], 0),
        )
        put(ours + "attention.qkv.bias", torch.cat([ts.get(f"{hf}self_attn.{p}_proj.bias") for p in "qkv"], 0))
        for a, b in LAYER_MAP.items():
            put(ours + b, ts.get(hf + a))
    bias = float(ts.get("out_proj.bias").float().reshape(-1)[0]) if "out_proj.bias" in ts else 0.0

    out.mkdir(parents=True, exist_ok=True)
    conf = trtllm_config(cfg, dtype_name, bias, max_frames)
    (out / "config.json").write_text(json.dumps(conf, indent=2) + "\n")
    save_file(weights, str(out / "rank0.safetensors"), metadata={"format": "pt"})
    check_trtllm_checkpoint(out)
    return out


def expected_shapes(conf: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor a tp=1 Qwen2ForSequenceClassification checkpoint must hold, with its shape."""
    h, i_sz, hd = conf["hidden_size"], conf["intermediate_size"], conf["head_size"]
    nh, nkv = conf["num_attention_heads"], conf["num_key_value_heads"]
    qkv = (nh + 2 * nkv) * hd
    shapes = {
        "transformer.vocab_embedding.weight": (conf["vocab_size"], h),
        "transformer.ln_f.weight": (h,),
        "lm_head.weight": (conf["num_labels"], h),
    }
    for i in range(conf["num_hidden_layers"]):
        p = f"transformer.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (h,),
                p + "attention.qkv.weight": (qkv, h),
                p + "attention.qkv.bias": (qkv,),
                p + "attention.dense.weight": (h, nh * hd),
                p + "post_layernorm.weight": (h,),
                p + "mlp.fc.weight": (i_sz, h),
                p + "mlp.gate.weight": (i_sz, h),
                p + "mlp.proj.weight": (h, i_sz),
            }
        )
    return shapes


MANDATORY = (
    "architecture",
    "dtype",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "hidden_act",
)


def check_trtllm_checkpoint(ckpt_dir: str | Path) -> dict:
    """Check a converted checkpoint against the documented format: mandatory config fields, exactly the
    expected tensor names, their shapes and the declared dtype. Returns the config."""
    ckpt = Path(ckpt_dir)
    conf = json.loads((ckpt / "config.json").read_text())
    missing = [k for k in MANDATORY if k not in conf]
    if missing:
        raise EngineError(f"{ckpt}/config.json lacks mandatory fields {missing}")
    world = conf.get("mapping", {}).get("world_size", 1)
    ranks = sorted(p.name for p in ckpt.glob("rank*.safetensors"))
    if ranks != [f"rank{r}.safetensors" for r in range(world)]:
        raise EngineError(f"{ckpt}: expected rank0..rank{world - 1}.safetensors, found {ranks}")
    want = expected_shapes(conf)
    st_dtype = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}.get(conf["dtype"])
    if st_dtype is None:
        raise EngineError(f"{ckpt}/config.json: dtype {conf['dtype']!r} is not float32/float16/bfloat16")
    with safe_open(str(ckpt / "rank0.safetensors"), framework="pt") as st:
        names = set(st.keys())
        if names != set(want):
            raise EngineError(
                f"{ckpt}: tensor names differ from the format: missing {sorted(set(want) - names)[:5]}, "
                f"unexpected {sorted(names - set(want))[:5]}"
            )
        for n, shape in want.items():
            x = st.get_slice(n)
            if tuple(x.get_shape()) != shape:
                raise EngineError(f"{ckpt}: {n} has shape {tuple(x.get_shape())}, the format needs {shape}")
            if x.get_dtype() != st_dtype:
                raise EngineError(f"{ckpt}: {n} is {x.get_dtype()}, config.json declares {conf['dtype']}")
    return conf


# ---- trtllm-build --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrtllmBuildSpec:
    """Sizes for the compiled Variant B engine. A request is [visual rows][instruction][T anchors]; the visual
    rows and the anchors come from the prompt-embedding table (fake ids >= vocab_size), so the table must hold
    every visual row and every anchor of a request: 12,800 + 512 for a 512-frame request, and the budget
    `vision_token_num` (16,384) bounds the visual rows for any T."""

    max_frames: int = 512
    max_visual_tokens: int = 16384
    max_text_tokens: int = 512
    max_batch_size: int = 1

    @property
    def max_input_len(self) -> int:
        return self.max_visual_tokens + self.max_frames + self.max_text_tokens

    @property
    def prompt_table_rows(self) -> int:
        return self.max_batch_size * (self.max_visual_tokens + self.max_frames)


def trtllm_build_command(ckpt_dir: str | Path, engine_dir: str | Path, spec: TrtllmBuildSpec, dtype: str) -> list[str]:
    """`trtllm-build` arguments (TensorRT-LLM 0.17-1.2 flag names)."""
    return [
        "trtllm-build",
        "--checkpoint_dir",
        str(ckpt_dir),
        "--output_dir",
        str(engine_dir),
        "--max_batch_size",
        str(spec.max_batch_size),
        "--max_input_len",
        str(spec.max_input_len),
        # The runtime must generate >= 1 token; only the context logits at the anchors are read.
        "--max_seq_len",
        str(spec.max_input_len + 1),
        # No chunked context: one request's whole prompt must fit one step.
        "--max_num_tokens",
        str(spec.max_batch_size * spec.max_input_len),
        "--max_prompt_embedding_table_size",
        str(spec.prompt_table_rows),
        "--gather_context_logits",
        "--logits_dtype",
        "float32",
        "--gemm_plugin",
        dtype,
        "--gpt_attention_plugin",
        dtype,
        "--context_fmha",
        "enable",
        "--remove_input_padding",
        "enable",
        # Paged KV + paged context FMHA let the runtime reuse the video prefix's KV across instructions.
        "--kv_cache_type",
        "paged",
        "--use_paged_context_fmha",
        "enable",
    ]


def run_trtllm_build(ckpt_dir: str | Path, engine_dir: str | Path, spec: TrtllmBuildSpec) -> dict[str, str]:
    exe = shutil.which("trtllm-build")
    if exe is None:
        raise BackendUnavailable("trtllm-build is not on PATH (TensorRT-LLM is not installed here)")
    dtype = json.loads((Path(ckpt_dir) / "config.json").read_text())["dtype"]
    cmd = trtllm_build_command(ckpt_dir, engine_dir, spec, dtype)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EngineError(f"trtllm-build failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    import tensorrt_llm  # noqa: PLC0415  (present: trtllm-build just ran)

    from videoitg.engines.libraries import import_tensorrt  # noqa: PLC0415

    return {"tensorrt_llm": tensorrt_llm.__version__, "tensorrt": import_tensorrt().__version__}


# ---- request layout for the compiled Variant B engine -----------------------------------------------------------
def variant_b_request(visual: torch.Tensor, text_ids: torch.Tensor, vocab_size: int) -> dict[str, torch.Tensor]:
    """One request for the compiled engine: visual rows enter through the prompt-embedding table.

    TensorRT-LLM's embedding layer maps ids >= vocab_size to rows of `prompt_embedding_table` (row = id -
    vocab_size, with `prompt_vocab_size` = number of rows), so the video becomes fake ids and the instruction
    stays ordinary token ids: input_ids = [vocab .. vocab + T*n) ++ text ids. `segment_ids` say which positions
    belong to which frame for pooling the context logits."""
    from videoitg.model.layout import segment_ids_for  # noqa: PLC0415

    T, n, h = visual.shape
    rows = T * n
    input_ids = torch.cat([torch.arange(vocab_size, vocab_size + rows), text_ids.long().cpu()])
    return {
        "input_ids": input_ids.to(torch.int32),
        "prompt_table": visual.reshape(rows, h),
        "prompt_vocab_size": torch.tensor([rows], dtype=torch.int32),
        "segment_ids": segment_ids_for(T, n, len(text_ids)),
        "num_frames": torch.tensor(T),
    }


def variant_b_logits(
    context_logits: torch.Tensor, segment_ids: torch.Tensor, num_frames: int, score_bias: float
) -> torch.Tensor:
    """Context logits [L, 1] of the 1-label engine (gather_context_logits) -> per-frame logits [T]."""
    from videoitg.model.layout import frame_mean_logits  # noqa: PLC0415

    scores = context_logits.float().reshape(1, -1)
    return frame_mean_logits(scores, segment_ids.reshape(1, -1), torch.arange(num_frames), score_bias)[0]
