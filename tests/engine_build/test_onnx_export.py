"""ONNX export round trips checked with onnxruntime, `videoitg build` / `verify` on the tiny checkpoint, and the
TensorRT / TensorRT-LLM seams (skipped with the reason where the libraries are absent).

Tokens per frame change with T (HW = min(floor(sqrt(budget / T)), grid)), so every parity check runs several T,
and always with sizes different from the ones the graph was exported with (the axes must really be dynamic)."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from tests.support.model import one_torch_thread, tiny_config
from videoitg.commands.cli import main as cli_main
from videoitg.config import VisionConfig
from videoitg.engine_build.build import BuildOptions, run_build
from videoitg.engine_build.onnx_export import patch_embed
from videoitg.engine_build.parity import compare
from videoitg.engine_build.trt_builder import VisionProfileSpec, build_plan
from videoitg.engine_build.verify import verify
from videoitg.engines.manifest import EngineManifest
from videoitg.engines.runtimes import (
    EngineGrounding,
    EngineVision,
    max_sequence_length,
    open_grounding,
    open_vision,
)
from videoitg.engines.trtllm import FrameScoreHead, TrtllmTorchScorer, hf_sources, qwen2_config_dict, weight_keys
from videoitg.errors import BackendUnavailable, EngineError, EngineMismatchError
from videoitg.libraries import probe_import
from videoitg.model import checkpoint as checkpoint_module
from videoitg.model.checkpoint import load_checkpoint, load_indexed
from videoitg.model.files import checkpoint_identity
from videoitg.model.grounding import VideoITG
from videoitg.model.vision import SiglipEmbeddings
from videoitg.request.limits import Limits
from videoitg.train.tiny_tokenizer import build_tiny_checkpoint

# Its tests share exports of tens of CPU seconds each (`built`, `low_precision`): made once, in one worker
pytestmark = pytest.mark.one_worker
TOL = 1e-4  # the fp32 ONNX target (docs/engines.md)
# tiny config: grid 8, budget 1024 -> T=8: hw 8 (64 tokens/frame), T=40: hw 5 (25), T=64: hw 4 (16), T=120: hw 2
FRAMES = (8, 40, 64, 120)


@pytest.fixture(scope="module")
def built(tiny_engines):
    """The session's tiny engines (conftest's `tiny_engines`: `run_build` of a tiny checkpoint with a non-trivial head
    bias; ONNX, the TRT parts skip here) with the checkpoint loaded."""
    ckpt, engines, rep = tiny_engines
    model, tok = load_checkpoint(ckpt)
    return ckpt, engines, model, tok, rep


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
    ckpt, eng, model, _, _ = built
    vision = open_vision("onnxruntime", model, engines=eng, checkpoint_identity=checkpoint_identity(ckpt),
                         chunk_frames=16)
    g = torch.Generator().manual_seed(0)
    for T in (1, 3, 37):  # 37 > chunk: several calls with different batch sizes
        px = torch.rand(T, 3, 112, 112, generator=g) * 2 - 1
        got = vision.encode(px)
        assert got.shape == (T, 64, 48)
        assert float((got - model.encode_frames(px)).abs().max()) <= TOL
        with torch.no_grad():
            assert float((vision.visual_features(px) - model.visual_features(px)).abs().max()) <= TOL


def test_llm_graph_matches_reference_for_several_t(built):
    _, eng, model, tok, _ = built
    grounding = open_grounding("onnxruntime", model, engines=eng)
    ids = torch.tensor(tok("when is the red circle visible?\n")["input_ids"])
    g = torch.Generator().manual_seed(1)
    seen_tokens = set()
    for T in FRAMES:
        with torch.no_grad():
            vis = model.visual_features(torch.rand(T, 3, 112, 112, generator=g) * 2 - 1)
            ref = model.score_features([vis], [ids])[0]
        seen_tokens.add(vis.shape[1])
        got = grounding.score(vis, ids)
        assert got.shape == (T,)
        assert float((got - ref).abs().max()) <= TOL, T
    assert seen_tokens == {64, 25, 16, 4}


def test_variant_b_runs_on_onnx_with_its_anchors_and_a_mismatched_variant_is_refused(built, tmp_path, monkeypatch):
    """A Variant B checkpoint's graph is causal and pools at the anchors: equal to `VideoITGAnchor`; the Variant C
    graph refuses to serve it. Its build has the grounding step only (`--steps grounding`), which reads no tensor of
    the tower and writes the grounding graph alone."""
    ckpt_b = build_tiny_checkpoint(tmp_path / "b", seed=5, cfg=tiny_config(vocab_size=len(built[3]),
                                                                            attention="causal"))
    model_b, tok = load_checkpoint(ckpt_b)
    assert type(model_b).__name__ == "VideoITGAnchor"
    read: list[str] = []

    def spy(index, keys):  # the loader's one reader of tensors, called through: records what a build reads
        read.extend(keys)
        return load_indexed(index, keys)

    monkeypatch.setattr(checkpoint_module, "load_indexed", spy)
    # the grounding graph only: Variant B's vision tower is Variant C's (`built` checks that graph)
    assert cli_main(["build", "--checkpoint", str(ckpt_b), "--out", str(tmp_path / "eng_b"), "--precision", "fp32",
                     "--steps", "grounding", "--targets", "onnx"]) == 0
    assert read and not any(k.startswith("model.vision_tower.") for k in read), read
    assert sorted(p.name for p in (tmp_path / "eng_b" / "onnx").glob("*.onnx")) == ["llm.onnx"]
    assert [b["name"] for b in json.loads((tmp_path / "eng_b" / "build.json").read_text())["built"]] == ["llm"]
    ids = torch.tensor(tok("where is the ball?\n")["input_ids"])
    grounding = open_grounding("onnxruntime", model_b, engines=tmp_path / "eng_b")
    g = torch.Generator().manual_seed(3)
    for T in (8, 40):
        with torch.no_grad():
            vis = model_b.visual_features(torch.rand(T, 3, 112, 112, generator=g) * 2 - 1)
            ref = model_b.score_features([vis], [ids])[0]
        got = grounding.score(vis, ids)
        assert float((got - ref).abs().max()) <= TOL, T
    with pytest.raises(EngineMismatchError, match="Variant C, the checkpoint is Variant B"):
        open_grounding("onnxruntime", model_b, engines=built[1])


def test_causal_attention_without_anchors_is_refused():
    with pytest.raises(ValueError, match="Variant B"):
        VideoITG(tiny_config(attention="causal"))


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
    other = build_tiny_checkpoint(tmp_path / "other", seed=4)
    msg = "checkpoint mismatch.*\n.*Rebuild it on this machine: videoitg build"
    with pytest.raises(EngineMismatchError, match=msg):
        open_grounding("onnxruntime", built[2], engines=eng, checkpoint_identity=checkpoint_identity(other))


def test_build_names_the_runtime_each_step_serves_with(built):
    summary = json.loads((built[1] / "build.json").read_text())
    # no TensorRT / TensorRT-LLM here: ONNX Runtime is the best built runtime of both steps
    assert summary["runtimes"] == {"vision": "onnxruntime", "grounding": "onnxruntime"}


def test_tensorrt_builder_seam(built, tmp_path):
    eng = built[1]
    # fp8 needs Q/DQ nodes: refused before TensorRT is even needed
    with pytest.raises(Exception, match="QuantizeLinear"):
        build_plan(eng / "onnx" / "vision.onnx", tmp_path / "v.plan", [], precision="fp8")
    if probe_import("tensorrt") is not None:  # not importable (a wheel may be installed without its libraries)
        with pytest.raises(BackendUnavailable, match="TensorRT is not importable"):
            build_plan(eng / "onnx" / "vision.onnx", tmp_path / "v.plan", [], precision="fp16")
        pytest.skip("TensorRT is not importable on this machine: plan build not exercised")
    build_plan(eng / "onnx" / "vision.onnx", tmp_path / "v.plan", VisionProfileSpec(112, 8).profiles(), "fp32")
    assert (tmp_path / "v.plan").stat().st_size > 0


def test_trtllm_score_head_runs_in_fp32_on_fp16_hidden_states(built):
    """The TensorRT-LLM model's head is the torch model's: fp32 per-token scores and pooling on the fp16 decoder
    output, so its logits equal `VideoITG.score_features` of the same hidden states to fp32 rounding; an fp16
    per-token head (rounding each score before the pooling) is measurably off (measured: 3e-7 against 1.0e-4)."""
    ckpt, _, _, tok, _ = built
    model16, _ = load_checkpoint(ckpt, "cpu", torch.float16, with_tokenizer=False)
    head = FrameScoreHead(model16.config.text.hidden_size)
    head.load({k: v for k, v in model16.state_dict().items() if k.startswith("out_proj.")})
    head.half()  # what casting the whole TensorRT-LLM model to fp16 does to it
    assert head.weight.dtype == head.bias.dtype == torch.float32
    ids = torch.tensor(tok("when is the red circle visible?\n")["input_ids"])
    px = (torch.rand(40, 3, 112, 112, generator=torch.Generator().manual_seed(4)) * 2 - 1).half()
    with torch.no_grad():
        visual = model16.visual_features(px)
        ref = model16.score_features([visual], [ids])[0]  # fp32 pooling and head on fp16 hidden states
        h = model16.hidden_states([visual], [ids])[0]  # [L, H] fp16
        layout = model16.layout(visual, ids)
        got = head(h, layout.segment_ids(), torch.arange(layout.num_frames))
        w16 = model16.out_proj.weight[0]  # the fp16 per-token head: h @ w in fp16, then the same pooling
        per_token16 = (h @ w16).float()
        onehot = (layout.segment_ids()[:, None] == torch.arange(layout.num_frames)[None]).float()
        fp16_head = (per_token16 @ onehot) / onehot.sum(0) + model16.out_proj.bias.float()
    assert got.dtype == torch.float32 and got.shape == ref.shape
    err, err16 = float((got - ref).abs().max()), float((fp16_head - ref).abs().max())
    assert err <= 1e-6 and err16 > 10 * max(err, 1e-8), (err, err16)


def test_trtllm_pytorch_model_pieces(built):
    ckpt, _, model, _, _ = built
    cfg = model.config
    d = qwen2_config_dict(cfg, torch.bfloat16)
    assert d["num_key_value_heads"] == cfg.text.num_key_value_heads and d["rope_scaling"] is None
    assert d["rope_theta"] == cfg.text.rope_theta and d["architectures"] == ["VideoITGForFrameScoring"]
    assert hf_sources("model.layers.3.self_attn.qkv_proj") == [f"model.layers.3.self_attn.{p}_proj" for p in "qkv"]
    gate_up = ["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"]
    assert hf_sources("model.layers.0.mlp.gate_up_proj") == gate_up
    assert hf_sources("model.norm") == ["model.norm"]
    # every HF tensor the PyTorch-backend model loads exists in the checkpoint under that name
    sd = model.state_dict()
    for name in ("model.layers.1.self_attn.o_proj", "model.layers.1.input_layernorm", "model.norm"):
        assert all(f"{src}.weight" in sd for src in hf_sources(name))
    loaded = weight_keys(list(sd))  # decoder layers, final norm, head; no token embeddings (inputs_embeds are fed)
    assert "out_proj.weight" in loaded and "model.norm.weight" in loaded
    assert not any(k.startswith("model.embed_tokens") for k in loaded)
    assert {k for k in sd if k.startswith("model.layers.")} <= set(loaded)
    try:
        TrtllmTorchScorer(ckpt)
    except BackendUnavailable as e:
        pytest.skip(f"TensorRT-LLM PyTorch backend not runnable here: {e}")


def test_verify_runs_trtllm_in_its_own_precision_against_the_fp32_reference(built):
    """TensorRT-LLM has no fp32 path: verify runs it in fp16 (`trtllm`) and bf16 (`trtllm-bf16`) against the fp32
    reference. Where the library is absent it is skipped for that reason, never for the reference's fp32."""
    ckpt = built[0]
    results = {r.backend: r for r in verify(ckpt, None, [8], backends=["trtllm", "trtllm-bf16",
                                                                      "trtllm-unfused-rope"])}
    for name, prec in (("trtllm", "fp16"), ("trtllm-bf16", "bf16"), ("trtllm-unfused-rope", "fp16")):
        r = results[name]
        if r.status == "skipped":
            assert "TensorRT-LLM" in r.reason or "CUDA" in r.reason, r.reason
            assert "float16 or bfloat16" not in r.reason, r.reason
        else:  # a GPU node with TensorRT-LLM: it ran, judged by its precision's target
            assert r.status in ("pass", "fail") and r.precision == prec and r.parity is not None, r


class _Counted:
    """An engine session whose calls are counted (the session itself runs: ONNX Runtime on the built graph)."""

    def __init__(self, session, max_batch: int | None, profiles: dict | None = None):
        self.session, self.max_batch, self.batches = session, max_batch, []
        if profiles is not None:
            self.profiles = profiles

    def __call__(self, **feeds):
        self.batches.append(int(next(iter(feeds.values())).shape[0]))
        return self.session(**feeds)


def test_vision_engines_run_at_their_profile_max_not_64(built):
    """A plan built with --vision-chunk 128 (profile max 128) runs 128 frames a call: 200 frames are 128 + 72
    calls, with the same features as the reference."""
    ckpt, eng, model, _, _ = built
    ort_vision = open_vision("onnxruntime", model, engines=eng, checkpoint_identity=checkpoint_identity(ckpt))
    session = _Counted(ort_vision.session, max_batch=128)
    vision = EngineVision(model, "tensorrt", session, EngineManifest.read(eng / "onnx" / "vision.onnx"))
    px = torch.rand(200, 3, 112, 112, generator=torch.Generator().manual_seed(5)) * 2 - 1
    got = vision.encode(px)
    assert vision.chunk_frames == 128 and session.batches == [128, 72]
    assert float((got - model.encode_frames(px)).abs().max()) <= TOL


def test_a_grounding_plan_shorter_than_the_admitted_sequences_is_refused_at_load(built):
    ckpt, eng, model, _, _ = built
    ort = open_grounding("onnxruntime", model, engines=eng, checkpoint_identity=checkpoint_identity(ckpt))
    assert ort.max_length is None  # ONNX Runtime takes any length
    cfg, limits = model.config, Limits()
    longest = max_sequence_length(cfg, limits.max_sampled_frames, limits.max_instruction_tokens)
    h = cfg.text.hidden_size
    manifest = EngineManifest.read(eng / "onnx" / "llm.onnx")
    for max_len in (longest, longest - 1):  # the profile `for_model` builds; one token short
        embeds = ((1, 2, h), (1, min(1000, max_len), h), (1, max_len, h))
        grounding = EngineGrounding(model, "tensorrt", _Counted(ort.session, None, {"inputs_embeds": embeds}),
                                    manifest)
        assert grounding.max_length == max_len
        if max_len == longest:
            grounding.check_admits(longest)
        else:
            with pytest.raises(EngineMismatchError, match=f"up to {max_len} tokens.*admit {longest}"):
                grounding.check_admits(longest)


# ---- graphs in the build's precision (what a strongly typed TensorRT build runs) ----------------------------------
# fp16 graph on ONNX Runtime (CPU) against torch: measured on this tiny checkpoint (logit spread 0.03-0.05) at most
# 1.24e-3 from torch fp16 and 6.8e-4 from torch fp32, top-32 overlap 1.0. Bounds: 2.5e-3 and 1.5e-3, overlap >= 0.97.
FP16_VS_TORCH16, FP16_VS_FP32 = 2.5e-3, 1.5e-3
ONNX_FLOAT, ONNX_FLOAT16, ONNX_BFLOAT16 = 1, 10, 16


@pytest.fixture(scope="module")
def low_precision(built, tmp_path_factory):
    out = {}
    for prec in ("fp16", "bf16"):
        d = tmp_path_factory.mktemp(prec)
        run_build(BuildOptions(checkpoint=built[0], out=d, precision=prec, targets=("onnx",)))
        out[prec] = d
    return out


def _typed_graph(path) -> onnx.ModelProto:
    """The graph with every tensor's type inferred; checker and strict shape inference must both accept it."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


@pytest.mark.parametrize("prec", ["fp16", "bf16"])
def test_graphs_hold_their_precision_with_fp32_norms_and_fp32_io(low_precision, prec):
    """Weights and activations in the build's precision; layer norms, RMSNorm statistics and the I/O in fp32."""
    want = {"fp16": ONNX_FLOAT16, "bf16": ONNX_BFLOAT16}[prec]
    for name in ("vision", "llm"):
        path = low_precision[prec] / "onnx" / f"{name}.onnx"
        assert EngineManifest.read(path).precision == prec
        model = _typed_graph(path)
        types = _elem_types(model)
        matrices = [t for t in model.graph.initializer if len(t.dims) == 2 and min(t.dims) > 1]  # weights
        assert matrices and all(t.data_type == want for t in matrices), name
        assert [types[i.name] for i in model.graph.input if i.name != "segment_ids" and i.name != "frame_ids"] == \
            [ONNX_FLOAT]
        assert [types[o.name] for o in model.graph.output] == [ONNX_FLOAT]
        # the norms: SigLIP's LayerNormalization runs on fp32 inputs; Qwen2's RMSNorm statistic (the only
        # ReduceMean of the grounding graph) too
        op = "LayerNormalization" if name == "vision" else "ReduceMean"
        norms = [n for n in model.graph.node if n.op_type == op]
        assert norms and all(types[n.input[0]] == ONNX_FLOAT for n in norms), name
        matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
        assert sum(types[n.input[0]] == want for n in matmuls) >= len(matmuls) - 2  # all but the fp32 head


def test_fp16_graphs_on_onnxruntime_match_torch_fp16(built, low_precision):
    ckpt, _, model32, tok, _ = built
    eng = low_precision["fp16"]
    model16, _ = load_checkpoint(ckpt, "cpu", torch.float16, with_tokenizer=False)
    vision, grounding = open_vision("onnxruntime", model16, engines=eng), open_grounding("onnxruntime", model16,
                                                                                            engines=eng)
    assert vision.precision == grounding.precision == "fp16"
    ids = torch.tensor(tok("when is the red circle visible?\n")["input_ids"])
    g = torch.Generator().manual_seed(1)
    for T in FRAMES:
        px = torch.rand(T, 3, 112, 112, generator=g) * 2 - 1
        with torch.no_grad():
            ref32 = model32.score_features([model32.visual_features(px)], [ids])[0]
            ref16 = model16.score_features([model16.visual_features(px.half())], [ids])[0].float()
        got = grounding.score(vision.visual_features(px), ids)
        assert float((got - ref16).abs().max()) <= FP16_VS_TORCH16, T
        parity = compare(ref32.numpy(), got.numpy())
        assert parity.max_abs_diff <= FP16_VS_FP32 and parity.meets("fp16"), (T, parity)


def test_bf16_graphs_check_and_run_where_onnxruntime_can(built, low_precision):
    """bf16 graphs pass the checker and strict shape inference (the test above); ONNX Runtime's CPU provider has no
    bf16 MatMul kernel (1.32), so they run only where it has one, and are then held to the bf16 target."""
    ort = pytest.importorskip("onnxruntime")
    path = low_precision["bf16"] / "onnx" / "llm.onnx"
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # NOT_IMPLEMENTED: the kernel this provider lacks
        assert "NOT_IMPLEMENTED" in str(e), e
        pytest.skip(f"onnxruntime {ort.__version__} CPU cannot run the bf16 graph: {str(e).splitlines()[0][:160]}")
    ckpt, _, model32, tok, _ = built
    model_bf, _ = load_checkpoint(ckpt, "cpu", torch.bfloat16, with_tokenizer=False)
    eng = low_precision["bf16"]
    vision, grounding = open_vision("onnxruntime", model_bf, engines=eng), open_grounding("onnxruntime", model_bf,
                                                                                            engines=eng)
    ids = torch.tensor(tok("where is the ball?\n")["input_ids"])
    px = torch.rand(40, 3, 112, 112, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        ref = model32.score_features([model32.visual_features(px)], [ids])[0]
    assert compare(ref.numpy(), grounding.score(vision.visual_features(px), ids).numpy()).meets("bf16")


# ---- patch embedding at any image size ----------------------------------------------------------------------------
@pytest.mark.parametrize("image_size", [384, 112, 116, 125])
def test_patch_embedding_sees_the_patches_the_convolution_sees(image_size):
    """The export's patch embedding (a matrix product) equals SigLIP's stride-14 convolution at any image size it
    takes: 384 px gives 27 x 27 patches and drops the last 6 pixels of each side, as the convolution does (116 and
    125: 4 and 13 pixels dropped; 112: none). The released widths (1152) at 384."""
    vcfg = VisionConfig(image_size=image_size, **({} if image_size == 384 else {"hidden_size": 48}))
    emb = SiglipEmbeddings(vcfg).eval()
    assert vcfg.grid == image_size // 14 and emb.position_embedding.num_embeddings == vcfg.grid ** 2
    px = torch.rand(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(6)) * 2 - 1
    with torch.no_grad():
        got, ref = patch_embed(emb, px), emb(px)
    assert got.shape == ref.shape == (2, vcfg.grid ** 2, vcfg.hidden_size)
    assert float((got - ref).abs().max()) <= 1e-5  # fp32: the same products, summed in another order


# ---- the real-shape tier --------------------------------------------------------------------------------------------
# The released widths, heads and head dims (SigLIP-so400m/14 at 384 px: 1152 wide, 16 heads of 72; Qwen2-7B: 3584
# wide, 28 query and 4 key-value heads of 128, MLP 18944) with one Qwen2 layer and one SigLIP layer run
# (tests/support/model.py, `real_shape_config`), exported by `videoitg build --precision fp32` (conftest's
# `real_shape_engines`) and run in ONNX Runtime against the torch model, fp32. Measured on the 2-core machine: SigLIP
# features within 1.9e-6 of torch, projected features within 3.9e-7, logits within 7.2e-7. Bounds: 1e-4, the fp32
# ONNX target of `videoitg verify`.
REAL_FEATURES_TOL, REAL_LOGITS_TOL = 1e-4, 1e-4
# Tokens per frame as the released budget gives them (HW = min(floor(sqrt(16384 / T)), 27)): T = 64, 256, 512
BUDGETS = {64: 16, 256: 8, 512: 5}


@pytest.fixture(scope="module")
def real_model(real_shape_checkpoint):
    """The real-shape checkpoint loaded in fp32 (model, tokenizer), two frames at 384 px and their SigLIP features."""
    model, tok = load_checkpoint(real_shape_checkpoint)
    px = torch.rand(2, 3, 384, 384, generator=torch.Generator().manual_seed(7)) * 2 - 1
    with torch.no_grad(), one_torch_thread():
        return model, tok, px, model.encode_frames(px)


def test_real_shape_graphs_take_the_released_shapes(real_shape_engines):
    vin = _graph_inputs(real_shape_engines / "onnx" / "vision.onnx")["pixel_values"]
    assert isinstance(vin[0], str) and vin[1:] == [3, 384, 384]
    lin = _graph_inputs(real_shape_engines / "onnx" / "llm.onnx")
    assert isinstance(lin["inputs_embeds"][1], str) and lin["inputs_embeds"][2] == 3584


def test_real_shape_vision_graph_matches_torch_at_384_px(real_shape_checkpoint, real_shape_engines, real_model,
                                                         one_thread):
    """SigLIP at 384 px (27 x 27 patches, the last 6 pixels dropped; 16 heads of 72) through the exported graph equals
    torch; the runtime's projection of it from the real 27 x 27 grid to the token budget of T = 64, 256 and 512
    frames (16, 8 and 5 tokens per side) equals torch's."""
    model, _, px, ref = real_model
    vision = open_vision("onnxruntime", model, engines=real_shape_engines, threads=1,
                         checkpoint_identity=checkpoint_identity(real_shape_checkpoint))
    with torch.no_grad():
        got = vision.encode(px)
        assert got.shape == ref.shape == (2, 729, 1152)
        diffs = [float((got - ref).abs().max())]
        for t, hw in BUDGETS.items():
            assert model.config.tokens_per_side(t) == hw
            v = vision.visual_features(px[:1], num_frames=t)  # one frame of a T-frame video
            assert v.shape == (1, hw * hw, 3584)
            diffs.append(float((v - model.project(ref[:1], hw)).abs().max()))
    assert max(diffs) <= REAL_FEATURES_TOL, diffs


def test_real_shape_grounding_graph_matches_torch(real_shape_engines, real_model, one_thread):
    """The grounding graph (3584 wide, GQA: 28 query and 4 key-value heads of 128, MLP 18944) equals torch on
    sequences laid out as the released budget lays out T = 64, 256 and 512 frames (256, 64 and 25 tokens per frame;
    one, two and two frames of them): the graph's sequence and frame axes are dynamic, so the per-frame pattern, not
    the 12,800-16,384 tokens of a whole video, is what these sizes change in it."""
    model, tok, _, feats = real_model
    grounding = open_grounding("onnxruntime", model, engines=real_shape_engines, threads=1)
    ids = torch.tensor(tok("when is the red circle visible?\n")["input_ids"])
    diffs = {}
    with torch.no_grad():
        for (t, hw), frames in zip(BUDGETS.items(), (1, 2, 2), strict=True):
            visual = model.project(feats[:frames], hw)
            ref = model.score_features([visual], [ids])[0]
            got = grounding.score(visual, ids)
            assert got.shape == (frames,)
            diffs[t] = float((got - ref).abs().max())
    assert max(diffs.values()) <= REAL_LOGITS_TOL, diffs


def test_a_vision_only_build_exports_and_reads_no_llm(built, tmp_path, monkeypatch):
    """`videoitg build --steps vision`: the SigLIP graph (and, where TensorRT imports, its plan) without the LLM: no
    decoder, embedding or head tensor is read from the checkpoint, no grounding graph or plan is written, the
    grounding step serves with torch, and the rebuild command repeats the steps. `--steps grounding`: Variant B's
    test."""
    ckpt = built[0]
    read: list[str] = []

    def spy(index, keys):  # the loader's one reader of tensors, called through: records what a build reads
        read.extend(keys)
        return load_indexed(index, keys)

    monkeypatch.setattr(checkpoint_module, "load_indexed", spy)
    out = tmp_path / "vision-only"
    assert cli_main(["build", "--checkpoint", str(ckpt), "--out", str(out), "--precision", "fp32",
                     "--steps", "vision"]) == 0
    assert read and all(k.startswith(("model.vision_tower.", "model.mm_projector.")) for k in read), read
    summary = json.loads((out / "build.json").read_text())
    assert [b["path"] for b in summary["built"]] == ["onnx/vision.onnx"]
    assert [s["what"] for s in summary["skipped"]] in ([], ["tensorrt/vision.plan"])  # skipped: no TensorRT here
    assert summary["runtimes"] == {"vision": "onnxruntime", "grounding": "torch"}
    assert not (out / "onnx" / "llm.onnx").exists()
    assert summary["command"].endswith("--steps vision")
    assert EngineManifest.read(out / "onnx" / "vision.onnx").rebuild_hint == summary["command"]
    with pytest.raises(EngineError, match="choose one or both of"):
        run_build(BuildOptions(checkpoint=ckpt, out=tmp_path / "x", steps=("audio",)))


def test_verify_checks_the_fp8_mode_against_the_fp32_reference() -> None:
    """`videoitg verify --backends torch-fp8`: the FP8 mode (`--precision fp8`) on a checkpoint, judged by the fp8
    target, so a user checks its ranking on their own checkpoint before serving with it (the CPU emulates FP8)."""
    from videoitg.defaults import default_checkpoint

    (r,) = verify(default_checkpoint(), None, [8], backends=["torch-fp8"])
    assert r.backend == "torch-fp8" and r.precision == "fp8" and r.status in ("pass", "fail"), r
    assert 0 < r.parity.max_abs_diff < 1 and 0 <= r.parity.topk_overlap <= 1
