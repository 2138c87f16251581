"""The TensorRT-LLM grounding runtime's parts that run without TensorRT-LLM: the attention metadata built once per
scorer, the unfused-RoPE switch from the build to the model config, verify's case at the real sequence length, and
the model config and weight grouping at the released shapes (its runs on the library itself:
tests/engine_build/test_onnx_export.py, skipped where it is absent)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from videoitg.config import VideoITGConfig
from videoitg.defaults import default_checkpoint
from videoitg.engine_build.build import BuildOptions, run_build
from videoitg.engine_build.verify import (
    DEFAULT_INSTRUCTION,
    DEFAULT_INSTRUCTION_TOKENS,
    instruction_of_length,
    make_cases,
)
from videoitg.engines.runtimes import max_sequence_length, trtllm_options
from videoitg.engines.trtllm import (
    EMBEDDING_ROWS,
    TrtllmTorchScorer,
    hf_config,
    hf_sources,
    qwen2_config_dict,
    weight_keys,
)
from videoitg.model.checkpoint import index_tensors, load_checkpoint
from videoitg.model.files import load_config
from videoitg.model.layout import SequenceLayout
from videoitg.request.text import encode_instruction


class _Metadata:
    """TensorRT-LLM's attention metadata as the scorer uses it: built with its capacity, refilled and prepared
    per request (the fields its setters read)."""

    built: list[dict] = []

    def __init__(self, **kwargs) -> None:
        _Metadata.built.append(kwargs)
        self.prepared = 0

    def prepare(self) -> None:
        self.prepared += 1


def _scorer(max_num_tokens: int) -> TrtllmTorchScorer:
    scorer = TrtllmTorchScorer.__new__(TrtllmTorchScorer)  # no TensorRT-LLM here: the metadata part only
    scorer.metadata_cls, scorer.max_num_tokens, scorer.attn_metadata = _Metadata, max_num_tokens, None
    return scorer


def test_the_attention_metadata_is_built_once_and_refilled_per_request() -> None:
    """Built per request, the metadata's attention workspace starts at 0 bytes each time, and TensorRT-LLM warns and
    allocates it again at every request; built once (as its own encoders do), it grows once."""
    _Metadata.built = []
    scorer = _scorer(max_num_tokens=12_830)
    first = scorer._metadata(12_830)
    for n in (500, 12_830, 40):
        md = scorer._metadata(n)
        assert md is first and md.max_seq_len == n and md.prompt_lens == [n] and md.num_contexts == 1
        assert md.seq_lens.tolist() == [n] and md.seq_lens.dtype == torch.int32
    assert first.prepared == 4
    assert _Metadata.built == [{"max_num_requests": 1, "max_num_tokens": 12_830, "kv_cache_manager": None}]


def test_a_sequence_longer_than_the_metadata_was_sized_for_resizes_it_once() -> None:
    _Metadata.built = []
    scorer = _scorer(max_num_tokens=1000)
    scorer._metadata(900)
    longer = scorer._metadata(1500)
    assert scorer._metadata(1200) is longer
    assert [b["max_num_tokens"] for b in _Metadata.built] == [1000, 1500]


def test_unfused_rope_reaches_the_attribute_qwen_attention_reads() -> None:
    """TensorRT-LLM's QwenAttention builds its attention with `rope_fusion=not config.disable_fuse_rope` (read from
    the pretrained config): the switch sets exactly that attribute; off by default."""
    cfg = VideoITGConfig()
    assert hf_config(cfg, torch.float16).disable_fuse_rope is False
    unfused = hf_config(cfg, torch.float16, disable_fuse_rope=True)
    assert unfused.disable_fuse_rope is True and unfused.torch_dtype == torch.float16
    assert unfused.videoitg_attention == cfg.attention


def test_the_build_records_the_rope_choice_the_server_reads(tmp_path: Path) -> None:
    """`videoitg build --trtllm-unfused-rope` records the choice in build.json; the grounding step's
    `open_grounding` reads it there (`trtllm_options`); without a record, or an engines directory, RoPE is fused."""
    assert trtllm_options(None) == {"disable_fuse_rope": False}
    for unfused in (True, False):
        out = tmp_path / f"engines-{unfused}"
        opts = BuildOptions(default_checkpoint(), out, targets=("trtllm",), trtllm_unfused_rope=unfused)
        run_build(opts)
        assert json.loads((out / "build.json").read_text())["trtllm"] == {"disable_fuse_rope": unfused}
        assert trtllm_options(out) == {"disable_fuse_rope": unfused}
        assert ("--trtllm-unfused-rope" in opts.command()) is unfused
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "build.json").write_text(json.dumps({"runtimes": {}}))
    assert trtllm_options(tmp_path / "older") == {"disable_fuse_rope": False}


def test_verify_cases_carry_a_thirty_token_instruction() -> None:
    """verify's cases (the 512-frame one among them) hold an instruction of DEFAULT_INSTRUCTION_TOKENS tokens: at
    T = 512 the grounding half sees the real sequence length (12,830 tokens for VideoITG-8B's layout)."""
    assert DEFAULT_INSTRUCTION_TOKENS == 30
    ids = torch.arange(7)
    assert instruction_of_length(ids, 30).tolist() == (list(range(7)) * 5)[:30]
    assert instruction_of_length(ids, 3).tolist() == [0, 1, 2] and instruction_of_length(ids, None) is ids
    model, tok = load_checkpoint(default_checkpoint(), "cpu", torch.float32)
    (case,) = make_cases(model, tok, [8], DEFAULT_INSTRUCTION, seed=0)
    assert case.ids.numel() == 30
    assert case.ids[:4].tolist() == encode_instruction(tok, DEFAULT_INSTRUCTION)[:4].tolist()
    assert SequenceLayout.for_video(VideoITGConfig(), 512, DEFAULT_INSTRUCTION_TOKENS).length == 12_830


def test_the_trtllm_config_and_weights_take_the_real_shapes(real_shape_checkpoint) -> None:
    """The TensorRT-LLM model's config, derived from the real-shape checkpoint, carries Qwen2-7B's shapes (3584 wide,
    28 query and 4 key-value heads of 128, MLP 18944, RMSNorm eps 1e-6, RoPE theta 1e6, no scaling) with the
    checkpoint's own layer count, its RoPE positions cover the longest sequence any deployment admits (Variant B's
    17,859 tokens included), and it builds one embedding row whatever the vocabulary. Every tensor it loads is in
    the checkpoint with the shape its fused modules take: qkv_proj (28 + 2 x 4) x 128 = 4608 rows, gate_up_proj
    2 x 18944."""
    cfg, _ = load_config(real_shape_checkpoint)
    fields = qwen2_config_dict(cfg, torch.float16)  # what the pretrained config is built from
    released = {"hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28, "num_key_value_heads": 4,
                "rms_norm_eps": 1e-6, "rope_theta": 1e6, "rope_scaling": None, "hidden_act": "silu"}
    assert {k: fields[k] for k in released} == released
    assert fields["num_hidden_layers"] == cfg.text.num_hidden_layers == 1
    assert fields["vocab_size"] == EMBEDDING_ROWS and cfg.text.vocab_size == 413  # the tiny tokenizer's
    hf = hf_config(cfg, torch.float16)  # transformers' Qwen2Config of them (the attributes TensorRT-LLM reads)
    assert (hf.hidden_size, hf.num_attention_heads, hf.num_key_value_heads) == (3584, 28, 4)
    assert hf.hidden_size // hf.num_attention_heads == cfg.text.head_dim == 128 and hf.torch_dtype == torch.float16
    causal = dataclasses.replace(cfg, attention="causal")
    longest = max(max_sequence_length(c, 512, 1024) for c in (cfg, causal))
    assert longest == 17859 and fields["max_position_embeddings"] >= longest
    index = index_tensors(real_shape_checkpoint)  # names and shapes from the file headers, no weights read
    shapes = {k: tuple(index[k][2]) for k in weight_keys(list(index))}
    attn, mlp = "model.layers.0.self_attn", "model.layers.0.mlp"
    qkv = [shapes[f"{src}.weight"] for src in hf_sources(f"{attn}.qkv_proj")]
    assert qkv == [(3584, 3584), (512, 3584), (512, 3584)] and sum(r for r, _ in qkv) == (28 + 2 * 4) * 128
    assert [shapes[f"{src}.bias"] for src in hf_sources(f"{attn}.qkv_proj")] == [(3584,), (512,), (512,)]
    assert [shapes[f"{src}.weight"] for src in hf_sources(f"{mlp}.gate_up_proj")] == [(18944, 3584)] * 2
    assert shapes[f"{mlp}.down_proj.weight"] == (3584, 18944) and shapes[f"{attn}.o_proj.weight"] == (3584, 3584)
    assert shapes["out_proj.weight"] == (1, 3584) and not any(k.startswith("model.embed_tokens") for k in shapes)
