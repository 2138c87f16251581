"""Variant B -> TensorRT-LLM checkpoint: documented names, fused QKV re-layout, shapes, dtypes, and the
trtllm-build arguments.

The source checkpoint here is a directory of HF-named Qwen2 tensors (what `videoitg.checkpoint` writes),
filled with random values so that every re-layout is checked element for element."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from fixtures_model import tiny_config
from safetensors import safe_open
from safetensors.torch import save_file
from videoitg.engine_build.trtllm_convert import (
    TrtllmBuildSpec,
    check_trtllm_checkpoint,
    convert_variant_b,
    run_trtllm_build,
    trtllm_build_command,
)

from videoitg.engines.manifest import BackendUnavailable, EngineError


def _hf_tensors(cfg, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = cfg.text
    h, i, hd, nh, nkv = (
        t.hidden_size,
        t.intermediate_size,
        t.head_dim,
        t.num_attention_heads,
        t.num_key_value_heads,
    )

    def r(*shape):
        return torch.randn(*shape, generator=g)

    w = {
        "model.embed_tokens.weight": r(t.vocab_size, h),
        "model.norm.weight": r(h),
        "out_proj.weight": r(1, h),
        "out_proj.bias": r(1),
        # tensors the LLM checkpoint must ignore (they belong to the vision engine)
        "model.mm_projector.out_projection.0.weight": r(h, cfg.vision.hidden_size),
    }
    for li in range(t.num_hidden_layers):
        p = f"model.layers.{li}."
        w.update(
            {
                p + "self_attn.q_proj.weight": r(nh * hd, h),
                p + "self_attn.q_proj.bias": r(nh * hd),
                p + "self_attn.k_proj.weight": r(nkv * hd, h),
                p + "self_attn.k_proj.bias": r(nkv * hd),
                p + "self_attn.v_proj.weight": r(nkv * hd, h),
                p + "self_attn.v_proj.bias": r(nkv * hd),
                p + "self_attn.o_proj.weight": r(h, nh * hd),
                p + "mlp.gate_proj.weight": r(i, h),
                p + "mlp.up_proj.weight": r(i, h),
                p + "mlp.down_proj.weight": r(h, i),
                p + "input_layernorm.weight": r(h),
                p + "post_attention_layernorm.weight": r(h),
            }
        )
    return w


@pytest.fixture()
def hf_ckpt(tmp_path):
    cfg = tiny_config(attention="causal")
    d = tmp_path / "ckpt"
    d.mkdir()
    cfg.save(d / "config.json")
    tensors = _hf_tensors(cfg)
    names = sorted(tensors)  # split over two shards, as big checkpoints are
    save_file({k: tensors[k] for k in names[::2]}, str(d / "model-00001-of-00002.safetensors"))
    save_file({k: tensors[k] for k in names[1::2]}, str(d / "model-00002-of-00002.safetensors"))
    return d, cfg, tensors


def _load(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as st:
        return {k: st.get_tensor(k) for k in st.keys()}


def test_converted_weights_equal_source_after_relayout(hf_ckpt, tmp_path):
    src, cfg, hf = hf_ckpt
    out = convert_variant_b(src, tmp_path / "trtllm_ckpt", precision="fp32")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "rank0.safetensors"]
    w = _load(out / "rank0.safetensors")
    t = cfg.text
    q_rows, kv_rows = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    for li in range(t.num_hidden_layers):
        p, s = f"transformer.layers.{li}.", f"model.layers.{li}."
        qkv, qkv_b = w[p + "attention.qkv.weight"], w[p + "attention.qkv.bias"]
        assert qkv.shape == (q_rows + 2 * kv_rows, t.hidden_size)
        q, k, v = torch.split(qkv, [q_rows, kv_rows, kv_rows], dim=0)  # undo the documented fusion
        assert torch.equal(q, hf[s + "self_attn.q_proj.weight"])
        assert torch.equal(k, hf[s + "self_attn.k_proj.weight"])
        assert torch.equal(v, hf[s + "self_attn.v_proj.weight"])
        bq, bk, bv = torch.split(qkv_b, [q_rows, kv_rows, kv_rows])
        assert torch.equal(bk, hf[s + "self_attn.k_proj.bias"]) and torch.equal(bv, hf[s + "self_attn.v_proj.bias"])
        assert torch.equal(bq, hf[s + "self_attn.q_proj.bias"])
        # TensorRT-LLM's GatedMLP activates `fc` and multiplies by `gate`: fc <- gate_proj, gate <- up_proj
        assert torch.equal(w[p + "mlp.fc.weight"], hf[s + "mlp.gate_proj.weight"])
        assert torch.equal(w[p + "mlp.gate.weight"], hf[s + "mlp.up_proj.weight"])
        assert torch.equal(w[p + "mlp.proj.weight"], hf[s + "mlp.down_proj.weight"])
        assert torch.equal(w[p + "attention.dense.weight"], hf[s + "self_attn.o_proj.weight"])
        assert torch.equal(w[p + "input_layernorm.weight"], hf[s + "input_layernorm.weight"])
        assert torch.equal(w[p + "post_layernorm.weight"], hf[s + "post_attention_layernorm.weight"])
    assert torch.equal(w["transformer.vocab_embedding.weight"], hf["model.embed_tokens.weight"])
    assert torch.equal(w["transformer.ln_f.weight"], hf["model.norm.weight"])
    assert torch.equal(w["lm_head.weight"], hf["out_proj.weight"])
    assert not any("mm_projector" in k for k in w)

    conf = json.loads((out / "config.json").read_text())
    assert conf["architecture"] == "Qwen2ForSequenceClassification" and conf["num_labels"] == 1
    assert conf["qwen_type"] == "qwen2" and conf["position_embedding_type"] == "rope_gpt_neox"
    assert conf["rotary_base"] == t.rope_theta and conf["rotary_scaling"] is None
    assert conf["num_key_value_heads"] == t.num_key_value_heads and conf["head_size"] == t.head_dim
    assert conf["videoitg"]["score_bias"] == pytest.approx(float(hf["out_proj.bias"][0]))


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_reduced_precision_checkpoint(hf_ckpt, tmp_path, precision, dtype):
    src, _, hf = hf_ckpt
    out = convert_variant_b(src, tmp_path / precision, precision=precision)
    conf = check_trtllm_checkpoint(out)
    assert conf["dtype"] == {"bf16": "bfloat16", "fp16": "float16"}[precision]
    w = _load(out / "rank0.safetensors")
    assert all(x.dtype == dtype for x in w.values())
    assert torch.equal(w["transformer.ln_f.weight"], hf["model.norm.weight"].to(dtype))


def test_fp8_is_refused_with_a_reason(hf_ckpt, tmp_path):
    with pytest.raises(EngineError, match="ModelOpt"):
        convert_variant_b(hf_ckpt[0], tmp_path / "fp8", precision="fp8")


def test_format_check_catches_drift(hf_ckpt, tmp_path):
    out = convert_variant_b(hf_ckpt[0], tmp_path / "c", precision="fp32")
    w = _load(out / "rank0.safetensors")
    w["transformer.layers.0.attention.qkv.weight"] = w["transformer.layers.0.attention.qkv.weight"][:-1]
    save_file(w, str(out / "rank0.safetensors"))
    with pytest.raises(EngineError, match="attention.qkv.weight has shape"):
        check_trtllm_checkpoint(out)
    del w["lm_head.weight"]
    save_file(w, str(out / "rank0.safetensors"))
    with pytest.raises(EngineError, match="missing"):
        check_trtllm_checkpoint(out)


def test_missing_source_tensor_is_named(hf_ckpt, tmp_path):
    src, _, hf = hf_ckpt
    for f in src.glob("*.safetensors"):
        f.unlink()
    save_file({k: v for k, v in hf.items() if k != "model.layers.1.mlp.up_proj.weight"}, str(src / "m.safetensors"))
    with pytest.raises(EngineError, match="model.layers.1.mlp.up_proj.weight"):
        convert_variant_b(src, tmp_path / "x", precision="fp32")


def test_trtllm_build_command_sizes_prompt_table_for_512_frames(tmp_path):
    spec = TrtllmBuildSpec()
    cmd = trtllm_build_command(tmp_path / "ckpt", tmp_path / "eng", spec, "bfloat16")
    args = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert cmd[0] == "trtllm-build" and "--gather_context_logits" in cmd
    assert int(args["--max_prompt_embedding_table_size"]) >= 12800 + 512
    assert int(args["--max_input_len"]) >= 12800 + 512 + 300
    assert int(args["--max_num_tokens"]) >= int(args["--max_input_len"])  # no chunked context
    assert int(args["--max_seq_len"]) == int(args["--max_input_len"]) + 1


def test_trtllm_build_runs_or_skips(hf_ckpt, tmp_path):
    if shutil.which("trtllm-build") is None:
        with pytest.raises(BackendUnavailable, match="trtllm-build is not on PATH"):
            run_trtllm_build(tmp_path, tmp_path / "eng", TrtllmBuildSpec())
        pytest.skip("TensorRT-LLM (trtllm-build) is not installed on this machine; engine build not exercised")
    out = convert_variant_b(hf_ckpt[0], tmp_path / "c", precision="fp16")
    versions = run_trtllm_build(out, tmp_path / "eng", TrtllmBuildSpec(max_frames=8, max_visual_tokens=512))
    assert "tensorrt_llm" in versions and (tmp_path / "eng" / "rank0.engine").is_file()


def test_variant_b_request_layout_reproduces_the_causal_model(tmp_path):
    """Conversion + prompt-table layout + context-logit pooling give the causal reference's logits.

    The engine's transformer is stood in for by the core decoder (same weights): what is checked is everything
    around it that this project writes: the converted embedding / head tensors, fake ids for the video rows,
    and the per-frame pooling of the 1-label context logits with the bias from config.json."""
    from videoitg.engine_build.trtllm_convert import variant_b_logits, variant_b_request

    from videoitg.checkpoint import save_checkpoint
    from videoitg.model import VideoITG
    from videoitg.model.qwen2 import run_decoder

    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=300, attention="causal")
    model = VideoITG(cfg).eval()
    torch.nn.init.normal_(model.out_proj.bias)
    save_checkpoint(model, tmp_path / "ckpt")
    out = convert_variant_b(tmp_path / "ckpt", tmp_path / "trt", precision="fp32")
    w, conf = _load(out / "rank0.safetensors"), json.loads((out / "config.json").read_text())
    g = torch.Generator().manual_seed(5)
    for T in (8, 40):
        ids = torch.randint(0, 300, (9,), generator=g)
        with torch.no_grad():
            visual = model.visual_features(torch.rand(T, 3, 112, 112, generator=g) * 2 - 1)
            ref = model.score_features([visual], [ids])[0]
            req = variant_b_request(visual, ids, conf["vocab_size"])
            x = req["input_ids"].long()
            fake = x >= conf["vocab_size"]
            emb = w["transformer.vocab_embedding.weight"][x.clamp(max=conf["vocab_size"] - 1)]
            emb[fake] = req["prompt_table"][x[fake] - conf["vocab_size"]]  # what the ptuning embedding does
            h = run_decoder(model.model.layers, model.model.norm, cfg.text, emb[None], causal=True)[0]
            context_logits = h @ w["lm_head.weight"].T  # [L, 1]: the engine's gathered context logits
        got = variant_b_logits(context_logits, req["segment_ids"], T, conf["videoitg"]["score_bias"])
        assert int(req["prompt_vocab_size"]) == T * visual.shape[1]
        assert (got - ref).abs().max() <= 1e-4
