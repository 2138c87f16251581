"""ONNX export round trips checked with onnxruntime, `videoitg build` / `verify` on the tiny checkpoint, and the
TensorRT / TensorRT-LLM seams (skipped with the reason where the libraries are absent).

Tokens per frame change with T (HW = min(floor(sqrt(budget / T)), grid)), so every parity check runs several T,
and always with sizes different from the ones the graph was exported with (the axes must really be dynamic)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from fixtures_model import build_tiny_checkpoint, tiny_config
from videoitg.engine_build.build import BuildOptions, run_build
from videoitg.engine_build.onnx_export import export_llm, export_vision
from videoitg.engine_build.trt_builder import build_plan

from videoitg.checkpoint import checkpoint_identity, load_checkpoint
from videoitg.cli import main as cli_main
from videoitg.engines.manifest import BackendUnavailable, EngineManifest, EngineMismatchError, RuntimeEnv
from videoitg.engines.runtimes import open_best, open_llm, open_vision
from videoitg.engines.trtllm import TrtllmTorchScorer, hf_sources, qwen2_config_dict
from videoitg.model import VideoITG
from videoitg.model.layout import segment_ids_for

TOL = 1e-4  # the fp32 ONNX target of the issue
# tiny config: grid 8, budget 1024 -> T=8: hw 8 (64 tokens/frame), T=40: hw 5 (25), T=64: hw 4 (16), T=120: hw 2
FRAMES = (8, 40, 64, 120)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny checkpoint with a non-trivial head bias, built once by `run_build` (ONNX; TRT parts skip here)."""
    root = tmp_path_factory.mktemp("eng")
    ckpt = build_tiny_checkpoint(root / "ckpt", seed=3)
    model, tok = load_checkpoint(ckpt)
    rep = run_build(BuildOptions(checkpoint=ckpt, out=root / "engines", precision="fp16"))
    return ckpt, root / "engines", model, tok, rep


def _graph_inputs(path) -> dict[str, list]:
    g = onnx.load(str(path), load_external_data=False).graph
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in g.input}


def test_build_writes_graphs_manifests_and_reasons(built):
    ckpt, eng, _, _, rep = built
    summary = json.loads((eng / "build.json").read_text())
    assert {b["path"] for b in summary["built"]} >= {"onnx/vision.onnx", "onnx/llm.onnx"}
    for f in ("vision.onnx", "vision.onnx.data", "llm.onnx", "llm.onnx.data"):
        assert (eng / "onnx" / f).is_file()
    m = EngineManifest.read(eng / "onnx" / "llm.onnx")
    assert m.kind == "onnx" and m.precision == "fp32" and m.checkpoint["identity"] == checkpoint_identity(ckpt)
    assert "--checkpoint" in m.extra["rebuild_command"]
    for s in summary["skipped"]:  # every skipped part names why (here: no TensorRT / TensorRT-LLM)
        assert s["reason"] and "not importable" in s["reason"]


def test_axes_are_symbolic(built):
    eng = built[1]
    vin = _graph_inputs(eng / "onnx" / "vision.onnx")["pixel_values"]
    assert isinstance(vin[0], str) and vin[1:] == [3, 112, 112]
    lin = _graph_inputs(eng / "onnx" / "llm.onnx")
    assert isinstance(lin["inputs_embeds"][1], str) and lin["inputs_embeds"][2] == 64
    assert isinstance(lin["frame_ids"][0], str)
    assert lin["segment_ids"][1] == lin["inputs_embeds"][1]  # one shared sequence axis


def test_vision_graph_matches_torch_for_several_frame_counts(built):
    _, eng, model, _, _ = built
    vision = open_vision(eng, "onnxruntime", chunk=16)
    g = torch.Generator().manual_seed(0)
    for T in (1, 3, 37):  # 37 > chunk: several calls with different batch sizes
        px = torch.rand(T, 3, 112, 112, generator=g) * 2 - 1
        got = vision.encode(px)
        assert got.shape == (T, 64, 48)
        assert float((got - model.encode_frames(px)).abs().max()) <= TOL


def test_llm_graph_matches_reference_for_several_t(built):
    _, eng, model, tok, _ = built
    llm = open_llm(eng, "onnxruntime")
    ids = torch.tensor(tok("when is the red circle visible?\n")["input_ids"])
    g = torch.Generator().manual_seed(1)
    seen_tokens = set()
    for T in FRAMES:
        with torch.no_grad():
            vis = model.visual_features(torch.rand(T, 3, 112, 112, generator=g) * 2 - 1)
            ref = model.score_features([vis], [ids])[0]
            emb = torch.cat([vis.flatten(0, 1), model.model.embed_tokens(ids)])
        n = vis.shape[1]
        seen_tokens.add(n)
        got = llm.score(emb, segment_ids_for(T, n, len(ids)), T)
        assert got.shape == (T,)
        assert float((got - ref).abs().max()) <= TOL, T
    assert seen_tokens == {64, 25, 16, 4}


def test_padded_llm_and_fused_vision_graphs(tmp_path):
    torch.manual_seed(0)
    model = VideoITG(tiny_config(vocab_size=300)).eval()
    torch.nn.init.normal_(model.out_proj.bias)
    export_llm(model, tmp_path / "llm.onnx", padded=True)
    hw = model.config.tokens_per_side(40)  # 5
    export_vision(model, tmp_path / "vision.onnx", hw=hw)
    import onnxruntime as ort

    g = torch.Generator().manual_seed(2)
    vids = [torch.rand(T, 3, 112, 112, generator=g) * 2 - 1 for T in (40, 8, 64)]
    ids = [torch.randint(0, 300, (k,), generator=g) for k in (6, 11, 3)]
    with torch.no_grad():
        feats = [model.visual_features(v) for v in vids]
        ref = model.score_features(feats, ids)
        embs = [torch.cat([f.flatten(0, 1), model.model.embed_tokens(i)]) for f, i in zip(feats, ids, strict=True)]
    # fused vision at hw=5 reproduces visual_features for T=40 (tokens/frame 25), frames axis still dynamic
    vs = ort.InferenceSession(str(tmp_path / "vision.onnx"), providers=["CPUExecutionProvider"])
    fused = vs.run(None, {"pixel_values": vids[0].numpy()})[0]
    assert fused.shape == (40, hw * hw, 64) and np.abs(fused - feats[0].numpy()).max() <= TOL
    # one padded batch of three requests with different T and L equals each scored by the reference
    from videoitg.engines.runtimes import LLMRuntime, _OrtSession

    class Padded(LLMRuntime):
        padded = True

        def __init__(self):
            self.sess = _OrtSession(tmp_path / "llm.onnx")

        def run(self, inputs_embeds, segment_ids, frame_ids, attention_mask=None):
            out = self.sess(inputs_embeds=inputs_embeds, segment_ids=segment_ids, frame_ids=frame_ids,
                            attention_mask=attention_mask)
            return torch.from_numpy(out)

    segs = [segment_ids_for(f.shape[0], f.shape[1], len(i)) for f, i in zip(feats, ids, strict=True)]
    got = Padded().score_batch(embs, segs, [f.shape[0] for f in feats])
    for a, b in zip(got, ref, strict=True):
        assert a.shape == b.shape and float((a - b).abs().max()) <= TOL


def test_verify_cli_passes_and_refuses_a_mismatched_engine(built, capsys, tmp_path):
    ckpt, eng, *_ = built
    rc = cli_main(["verify", "--checkpoint", str(ckpt), "--engines", str(eng), "--frames", "8,40",
                   "--backends", "onnxruntime,tensorrt", "--json", str(tmp_path / "v.json")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "onnxruntime" in out and "pass" in out and "skipped" in out  # tensorrt: skipped with its reason
    res = {r["backend"]: r for r in json.loads((tmp_path / "v.json").read_text())}
    assert res["onnxruntime"]["parity"]["max_abs_diff"] <= TOL
    # an engine built from another checkpoint is refused by the loader, with the rebuild command
    # a server picks up whatever the build produced, saying why better backends were passed over
    vision, llm, passed_over = open_best(eng, checkpoint_identity=checkpoint_identity(ckpt))
    assert (vision.backend, llm.backend) == ("onnxruntime", "onnxruntime")
    assert passed_over and passed_over[0].startswith("tensorrt: ") and "was not built" in passed_over[0]
    other = build_tiny_checkpoint(tmp_path / "other", seed=4)
    msg = "checkpoint mismatch.*\n.*Rebuild it on this machine: videoitg build"
    with pytest.raises(EngineMismatchError, match=msg):
        open_llm(eng, "onnxruntime", checkpoint_identity=checkpoint_identity(other))


def test_tensorrt_builder_seam(built, tmp_path):
    eng = built[1]
    # fp8 needs Q/DQ nodes: refused before TensorRT is even needed
    with pytest.raises(Exception, match="QuantizeLinear"):
        build_plan(eng / "onnx" / "vision.onnx", tmp_path / "v.plan", [], precision="fp8")
    if RuntimeEnv.current().versions.get("tensorrt") is None:
        with pytest.raises(BackendUnavailable, match="TensorRT is not importable"):
            build_plan(eng / "onnx" / "vision.onnx", tmp_path / "v.plan", [], precision="fp16")
        pytest.skip("TensorRT is not importable on this machine: plan build not exercised")
    from videoitg.engine_build.trt_builder import VisionProfileSpec

    build_plan(eng / "onnx" / "vision.onnx", tmp_path / "v.plan", VisionProfileSpec(112, 8).profiles(), "fp16")
    assert (tmp_path / "v.plan").stat().st_size > 0


def test_trtllm_pytorch_model_pieces(built):
    ckpt, _, model, _, _ = built
    cfg = model.config
    d = qwen2_config_dict(cfg, torch.bfloat16)
    assert d["num_key_value_heads"] == cfg.text.num_key_value_heads and d["rope_scaling"] is None
    assert d["rope_theta"] == cfg.text.rope_theta and d["architectures"] == ["VideoITGForFrameScoring"]
    assert hf_sources("model.layers.3.self_attn.qkv_proj") == [f"model.layers.3.self_attn.{p}_proj" for p in "qkv"]
    gate_up = ["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"]
    assert hf_sources("model.layers.0.mlp.gate_up_proj") == gate_up
    assert hf_sources("model.norm") == ["model.norm"] and hf_sources("score") == ["out_proj"]
    # every HF tensor the PyTorch-backend model loads exists in the checkpoint under that name
    sd = model.state_dict()
    for name in ("model.layers.1.self_attn.o_proj", "model.layers.1.input_layernorm", "model.embed_tokens"):
        assert all(f"{src}.weight" in sd for src in hf_sources(name))
    try:
        TrtllmTorchScorer(ckpt)
    except BackendUnavailable as e:
        pytest.skip(f"TensorRT-LLM PyTorch backend not runnable here: {e}")
