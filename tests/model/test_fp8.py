"""FP8 (videoitg/model/fp8.py) on the CPU: the quantization is the e4m3 rounding `_scaled_mm`'s operands get on a GPU
(hand-computed cases), the emulated product is the product of those operands rounded where the GPU rounds, fused
projections equal separate ones, only the language model's middle decoder layers are converted, and the FP8 model
against the fp32 one: random weights at the released depths (with the per-layer sensitivity sweep) and the trained
embedded checkpoint on the synthetic evaluation set."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from tests.support.model import one_torch_thread, tiny_config
from videoitg.config import TextConfig, VideoITGConfig, VisionConfig
from videoitg.engine_build.parity import compare
from videoitg.model.fp8 import (
    BLOCK,
    E4M3,
    E4M3_MAX,
    Float8Linear,
    dequantize,
    error_over_spread,
    fp8_layers,
    layer_sensitivity,
    quantize,
    quantize_rows,
    scaled_mm,
    to_fp8,
)
from videoitg.model.grounding import VideoITG
from videoitg.model.qwen2 import DecoderLayer


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def test_quantize_rounds_hand_computed_values_as_e4m3fn_with_saturation() -> None:
    """One row, worked by hand: amax 7 gives the scale 7/448 = 2^-6, so q = 64 x: 64, -192 and 448 are e4m3 values;
    19.2 lies between 18 and 20 (a step of 2 in [16, 32)) and rounds to 20; 17 is the tie between 16 and 18 and
    rounds to the even mantissa, 16; 1e-4 * 64 = 3.28 steps of the smallest subnormal (2^-9) and rounds to 3 of
    them; 1e-5 * 64 lies under half of one and is 0. A row whose
    scaled maximum rounds above 448 saturates at 448 (no inf or NaN)."""
    x = torch.tensor([[1.0, -3.0, 19.2 / 64, 7.0, 17 / 64, 1e-4, 1e-5]])
    q, s = quantize_rows(x)
    assert s.item() == 2**-6 and q.dtype == E4M3
    assert q.float().tolist() == [[64.0, -192.0, 20.0, 448.0, 16.0, 3 * 2**-9, 0.0]]
    assert dequantize(q, s, 1, 7).tolist() == [[1.0, -3.0, 0.3125, 7.0, 0.25, 3 * 2**-15, 0.0]]
    big, _ = quantize_rows(torch.tensor([[3.4e38, -3.4e38, 1.0]]))
    assert big.float().tolist() == [[448.0, -448.0, 0.0]]


def test_quantize_rows_rounds_each_row_to_e4m3_at_its_own_scale() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 256, generator=g) * torch.logspace(-3, 3, 64)[:, None]  # rows six decades apart
    x[5] = 0.0
    q, scale = quantize_rows(x.to(torch.bfloat16))
    assert q.dtype == E4M3 and scale.shape == (64, 1) and scale.dtype == torch.float32
    xb = x.to(torch.bfloat16).float()
    # each row's largest magnitude lands on 448, and q is that row scaled and cast (round to nearest even)
    assert torch.equal(q.float().abs().amax(1)[torch.arange(64) != 5], torch.full((63,), E4M3_MAX))
    amax = xb.abs().amax(1, keepdim=True).clamp(min=1e-12)
    assert torch.equal(scale, amax / E4M3_MAX)
    cast = (xb * (E4M3_MAX / amax)).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    assert torch.equal(q.view(torch.uint8), cast.view(torch.uint8))
    assert not q[5].float().any()
    # e4m3 keeps 3 mantissa bits: half a step is 2^-4 of the value (normals), 2^-10 of the scale (subnormals)
    err = (q.float() * scale - xb).abs()
    assert (err <= torch.maximum(xb.abs() * 2**-4, scale * 2**-10) * (1 + 1e-6)).all()


@pytest.mark.parametrize(("rows", "cols"), [(1, BLOCK), (BLOCK, BLOCK)])
def test_block_scales_map_each_block_to_448_ragged_edges_included(rows: int, cols: int) -> None:
    """1x128 (activations) and 128x128 (weights) blocks over a matrix whose sides are no multiple of 128: one scale
    per block, each block's largest magnitude on 448, each block the row-wise rule applied to its own values."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(130, 300, generator=g) * torch.logspace(-2, 2, 300)
    q, s = quantize(x, rows, cols)
    assert s.shape == (-(-130 // rows), -(-300 // cols)) and q.shape == x.shape and q.is_contiguous()
    for bi in range(s.shape[0]):
        for bj in range(s.shape[1]):
            rs, cs = slice(bi * rows, (bi + 1) * rows), slice(bj * cols, (bj + 1) * cols)
            block = x[rs, cs]
            assert s[bi, bj] == block.abs().max() / E4M3_MAX
            assert q[rs, cs].float().abs().max() == E4M3_MAX
            want = (block * (E4M3_MAX / block.abs().max())).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
            assert torch.equal(q[rs, cs].view(torch.uint8), want.view(torch.uint8))


def layer_pair(n: int, k: int, bias: bool, seed: int) -> tuple[nn.Linear, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.normal_(0, 0.05, generator=g)
        if bias:
            lin.bias.normal_(0, 0.1, generator=g)
    return lin.to(torch.bfloat16), torch.randn(3, 40, k, generator=g).to(torch.bfloat16)


def test_rowwise_product_is_the_product_of_its_quantized_operands() -> None:
    """The CPU path is the product of the e4m3 operands (exact in fp64), scaled, plus the bias, rounded to bf16 once
    (the row-wise `_scaled_mm` adds the bias in its epilogue): what the GPU returns from the same operands up to the
    order of its fp32 sums. Against the fp32 layer: the error FP8 adds."""
    lin, x = layer_pair(384, 512, True, 1)
    f8 = Float8Linear.from_linears([lin])
    assert f8.weight.dtype == E4M3 and f8.weight_scale.shape == (1, 384) and f8.bias.dtype == torch.bfloat16
    y = f8(x)
    assert y.shape == (3, 40, 384) and y.dtype == torch.bfloat16
    qx, sx = quantize_rows(x.reshape(-1, 512))
    exact = (qx.double() * sx.double()) @ (f8.weight.double() * f8.weight_scale.double().t()).t() + f8.bias.double()
    assert torch.allclose(y.reshape(-1, 384).double(), exact, rtol=2**-8, atol=1e-6)  # one bf16 rounding
    want = x.float() @ lin.weight.float().t() + lin.bias.float()
    rel = (y.float() - want).norm() / want.norm()
    assert rel < 0.05, rel  # measured 0.03: two e4m3 operands (2^-4 each at worst) over 512-term sums


def test_block_product_sums_each_block_at_its_scales_and_adds_the_bias_after_rounding() -> None:
    """The block scheme: sum over K-blocks of (1x128 activation scale) x (128x128 weight scale) x the block's e4m3
    dot product, rounded to bf16, then the bf16 bias added (the GPU adds it to `_scaled_mm`'s bf16 output)."""
    lin, x = layer_pair(256, 384, True, 3)
    f8 = Float8Linear.from_linears([lin], "block")
    assert f8.weight_scale.shape == (2, 3)
    y = f8(x).reshape(-1, 256)
    qx, sx = quantize(x.reshape(-1, 384), 1, BLOCK)
    assert sx.shape == (120, 3)
    acc = torch.zeros(120, 256, dtype=torch.float64)
    for kb in range(3):
        cols = slice(kb * BLOCK, (kb + 1) * BLOCK)
        part = qx[:, cols].double() @ f8.weight[:, cols].double().t()
        acc += part * sx[:, kb:kb + 1].double() * f8.weight_scale[:, kb].double().repeat_interleave(BLOCK)[None]
    want = acc.to(torch.bfloat16) + f8.bias
    assert torch.allclose(y.float(), want.float(), rtol=2**-7, atol=1e-6)  # the fp32 sums against fp64: one bf16 step
    hand = scaled_mm(torch.full((1, 128), E4M3_MAX).to(E4M3), torch.full((1, 1), 1 / E4M3_MAX),
                     torch.full((2, 128), E4M3_MAX).to(E4M3), torch.tensor([[0.5 / E4M3_MAX]]), None, "block", False)
    assert hand.tolist() == [[64.0, 64.0]]  # 128 ones times 0.5


@pytest.mark.parametrize("scheme", ["rowwise", "block"])
def test_fused_projections_equal_separate_ones(scheme: str) -> None:
    """q/k/v (and gate/up) in one FP8 layer: the input quantized once, one GEMM; each part's quantized weight and
    scales equal its own FP8 layer's bit for bit (row-wise: per-channel scales do not depend on the neighbours;
    block: the parts' rows are whole 128-row blocks, as at the released widths), and its output within one bf16 step
    of that layer's (two GEMMs of other widths may sum in another order)."""
    parts = [layer_pair(n, 256, True, s)[0] for n, s in ((256, 4), (128, 5), (128, 6))]
    _, x = layer_pair(8, 256, False, 7)
    fused = Float8Linear.from_linears(parts, scheme)
    got = fused.split(fused(x))
    rows = 0
    for part, y in zip(parts, got, strict=True):
        alone = Float8Linear.from_linears([part], scheme)
        n = alone.weight.shape[0]
        assert torch.equal(fused.weight[rows:rows + n], alone.weight)
        scales = (fused.weight_scale[:, rows:rows + n] if scheme == "rowwise"  # [1, N]
                  else fused.weight_scale[rows // 128:(rows + n) // 128])  # [N/128, K/128]
        assert torch.equal(scales, alone.weight_scale)
        torch.testing.assert_close(y, alone(x), rtol=2**-8, atol=0)
        rows += n


def test_to_fp8_converts_the_language_models_middle_layers_only() -> None:
    """The vision tower, the projector, the head and the first and last decoder layers stay 16-bit; each middle
    decoder layer holds four FP8 layers (q/k/v fused, o, gate/up fused, down) and none of its 16-bit projections;
    the model still runs, in bf16 out."""
    cfg = tiny_config()
    cfg.text = TextConfig(**{**vars(cfg.text), "num_hidden_layers": 4})
    model = VideoITG(cfg).to(torch.bfloat16).eval()
    middle = fp8_layers(model)
    assert middle == list(model.model.layers)[1:3]
    to_fp8(model)
    for layer in model.transformer_layers():
        fp8 = [m for m in layer.modules() if isinstance(m, Float8Linear)]
        if any(layer is m for m in middle):
            assert not [m for m in layer.modules() if isinstance(m, nn.Linear)] and len(fp8) == 4
            kv = cfg.text.num_key_value_heads * cfg.text.head_dim
            assert layer.self_attn.qkv.splits == [cfg.text.hidden_size, kv, kv]
            assert not hasattr(layer.self_attn, "q_proj") and not hasattr(layer.mlp, "gate_proj")
        else:
            assert not fp8
    assert isinstance(model.model.mm_projector.out_projection[0], nn.Linear) and isinstance(model.out_proj, nn.Linear)
    s = cfg.vision.image_size
    with torch.inference_mode():
        assert torch.isfinite(model(torch.zeros(2, 3, s, s), torch.arange(5))).all()
    with pytest.raises(ValueError, match="bfloat16"):
        to_fp8(VideoITG(tiny_config()))  # fp32: what stays 16-bit would not be bf16


def realish_config(frames_budget: int = 768) -> VideoITGConfig:
    """The released depths (SigLIP 26 of 27 layers, Qwen2 28 layers, GQA 8/2) at narrow widths, 112-px frames."""
    return VideoITGConfig(
        vision=VisionConfig(image_size=112, patch_size=14, hidden_size=128, intermediate_size=512, num_hidden_layers=27,
                            num_attention_heads=4),
        text=TextConfig(vocab_size=512, hidden_size=256, intermediate_size=1024, num_hidden_layers=28,
                        num_attention_heads=8, num_key_value_heads=2),
        vision_token_num=frames_budget)


def realish_pair(cfg: VideoITGConfig, frames: int) -> tuple[VideoITG, VideoITG, torch.Tensor, torch.Tensor]:
    """An fp32 model with random weights (the HF init: N(0, 0.02), norms 1, biases 0), its bf16 copy, and frames of
    distinct content (each frame its own colour under the noise, as frames of a video differ) with an
    instruction."""
    torch.manual_seed(0)
    ref = VideoITG(cfg).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.normal_(0, 0.02) if p.dim() > 1 else p.fill_(1.0 if name.endswith("weight") else 0.0)
    bf16 = VideoITG(cfg).eval()
    bf16.load_state_dict(ref.state_dict())
    bf16.to(torch.bfloat16)
    g = torch.Generator().manual_seed(1)
    s = cfg.vision.image_size
    px = (torch.randn(frames, 3, s, s, generator=g) * 0.3 + torch.rand(frames, 3, 1, 1, generator=g) * 2 - 1)
    return ref, bf16, px.clamp(-1, 1), torch.randint(0, cfg.text.vocab_size, (24,), generator=g)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["rowwise", "block"])
def test_fp8_model_against_fp32_at_realish_shape(scheme: str) -> None:
    """Random weights at the released depths and narrow widths, 48 frames (768 visual tokens): the FP8 model
    (emulated; the language model's 26 middle layers) against the fp32 one. Tolerance: Spearman >= 0.97, top-16
    overlap >= 0.875, error/spread (std of the difference over std of the fp32 logits) <= 0.15."""
    cfg = realish_config()
    ref, model, px, ids = realish_pair(cfg, 48)
    to_fp8(model, scheme=scheme)
    with torch.inference_mode():
        want = ref(px, ids).float()
        got = model(px.to(torch.bfloat16), ids).float()
    p = compare(want.numpy(), got.numpy(), k=16)
    ratio = error_over_spread(want, got)
    assert p.spearman >= 0.97 and p.topk_overlap >= 0.875 and ratio <= 0.15, (p, ratio)


@pytest.mark.slow
def test_the_sensitivity_sweep_puts_one_decoder_layer_at_a_time_in_fp8() -> None:
    """`layer_sensitivity` at the released depth of the language model (28 layers, 128 wide; a small tower, 8
    frames): one error/spread per decoder layer,
    each from that layer alone in FP8, the model's 16-bit layers back after (the logits equal bf16's again)."""
    cfg = realish_config(128)
    cfg.vision = VisionConfig(image_size=56, patch_size=14, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=2)
    cfg.text = TextConfig(**{**vars(cfg.text), "hidden_size": 128, "intermediate_size": 256,
                             "num_attention_heads": 4})
    ref, model, px, ids = realish_pair(cfg, 8)
    with torch.inference_mode():
        want = ref(px, ids).float()
        bf16 = model(px.to(torch.bfloat16), ids).float()

        def run() -> torch.Tensor:
            return model(px.to(torch.bfloat16), ids).float()

        sweep = layer_sensitivity(model, run, want)
        assert torch.equal(run(), bf16)
    assert len(sweep) == 28 and all(0 < x < 1 for x in sweep), sweep
    assert not [m for m in model.modules() if isinstance(m, Float8Linear)]
    assert all(isinstance(layer, DecoderLayer) and layer.self_attn.qkv is None for layer in model.model.layers)


# ---- the trained embedded checkpoint on the synthetic evaluation set ------------------------------------------
EVAL_VIDEOS = 40  # train/synthetic_run.py's held-out set: 40 videos (seed 2000), 8 instructions each


def evaluation_set() -> Iterator[tuple[np.ndarray, list[float], float, list[tuple[str, list[int], list]]]]:
    """The held-out set `train/synthetic_run.py` evaluates the embedded checkpoint on, rendered in memory (the
    scenes and instructions of `write_dataset(..., 40, seed=2000, instructions_per_video=8)`, without the video
    codec): per video its frames at the 1-fps sampling, their timestamps, its duration, and its instructions with
    their positive frames (`clip_num`) and segments."""
    from videoitg.synthetic.task import (
        INSTRUCTION_KINDS,
        _choose_instructions,
        candidate_instructions,
        clip_num,
        label_segments,
        random_scene,
        render,
        sampled_positions,
    )

    for seed in np.random.SeedSequence(2000).spawn(EVAL_VIDEOS):
        vseed = int(seed.generate_state(1)[0])
        scene = random_scene(np.random.default_rng(vseed))
        rendered = render(scene)
        rng = np.random.default_rng(vseed + 1)
        chosen = _choose_instructions(candidate_instructions(scene, rendered, rng), INSTRUCTION_KINDS, 8, rng)
        pos = sampled_positions(scene.num_frames, scene.fps)
        yield (rendered.frames[pos], [p / scene.fps for p in pos], scene.num_frames / scene.fps,
               [(c.text, clip_num(c.labels, scene.fps), label_segments(c.labels, scene.fps)) for c in chosen])


@pytest.mark.slow
def test_fp8_keeps_the_trained_checkpoints_ranking_on_the_synthetic_evaluation_set() -> None:
    """The embedded checkpoint (trained on the synthetic task) on its held-out evaluation set (320 instructions), in
    fp16 (the released precision) and bf16 (FP8's 16-bit precision), for reference, and in FP8 (emulated): as
    `--precision fp8` (its middle decoder layer, row-wise scales), with block scales, and with every decoder layer
    in FP8. Against fp32, per precision:
    the task's metrics (recall of the positive frames in the top 8; the top moment's IoU >= 0.5 with a true
    segment) within 0.01; every instruction's logits within error/spread 0.15; and where the top-8 set changes, the
    frames that trade places are near-ties of fp32 (their fp32 logits within 0.1 of the spread of the instruction's
    logits). Top-8 and moments are not asked to be fp32's in every instruction: the released fp16 already changes
    some at such near-ties. Measured here (2 cores, fp32's recall@8 0.514, R1@0.5 0.491): top-8 changed in 8 (fp16),
    18 (bf16), 32 (fp8), 27 (block scales), 40 (every layer) of 320; moments in 8, 19, 23, 28, 48; recall and R1
    within 0.004; worst error/spread 0.020, 0.058, 0.106, 0.088, 0.202; the widest trade 0.053 of the spread."""
    from videoitg.defaults import default_checkpoint
    from videoitg.eval.metrics import best_iou, recall_at_k
    from videoitg.model.checkpoint import load_checkpoint, load_tokenizer
    from videoitg.outputs import GroundingResult
    from videoitg.preprocess import preprocess_frames
    from videoitg.request.text import encode_instruction

    ckpt = default_checkpoint()
    ref, _ = load_checkpoint(ckpt, with_tokenizer=False)
    tok = load_tokenizer(ckpt)
    runs, dtypes = {}, {}
    for name, layers, scheme in (("fp16", None, None), ("bf16", None, None), ("fp8", None, "rowwise"),
                                 ("fp8_block", None, "block"), ("fp8_every_layer", "all", "rowwise")):
        dtypes[name] = torch.float16 if name == "fp16" else torch.bfloat16
        model, _ = load_checkpoint(ckpt, dtype=dtypes[name], with_tokenizer=False)
        runs[name] = model.eval() if scheme is None else to_fp8(model.eval(), list(model.model.layers) if layers
                                                                  else None, scheme)
    assert len(fp8_layers(ref)) == 1  # 3 decoder layers: the middle one
    rows: dict[str, dict[str, list]] = {k: {"recall": [], "r1": [], "ratio": [], "top8": [], "moments": [],
                                            "tie": []} for k in ("fp32", *runs)}
    with torch.inference_mode():
        for frames, stamps, duration, instructions in evaluation_set():
            px = preprocess_frames(frames, ref.config.vision.image_size)
            ids = [encode_instruction(tok, q) for q, _, _ in instructions]
            logits = {"fp32": ref.score_features([ref.visual_features(px)] * len(ids), ids)}
            for name, model in runs.items():
                logits[name] = model.score_features([model.visual_features(px.to(dtypes[name]))] * len(ids), ids)
            for i, (q, positives, segments) in enumerate(instructions):
                want = logits["fp32"][i].float()
                ref_res = GroundingResult(want.tolist(), list(range(len(stamps))), stamps, q, duration=duration)
                for name in rows:
                    got = logits[name][i].float()
                    res = GroundingResult(got.tolist(), list(range(len(stamps))), stamps, q, duration=duration)
                    row = rows[name]
                    row["recall"].append(recall_at_k(res.ranking, positives, 8))
                    row["r1"].append(best_iou(res.moments[0][:2], segments) >= 0.5)
                    row["ratio"].append(error_over_spread(want, got))
                    top, top_ref = set(res.top_k_positions(8)), set(ref_res.top_k_positions(8))
                    row["top8"].append(top != top_ref)
                    row["moments"].append([m[:2] for m in res.moments] != [m[:2] for m in ref_res.moments])
                    if top != top_ref:  # the fp32 logits of the frames that traded places, over the spread
                        traded = want[sorted(top ^ top_ref)]
                        row["tie"].append(float((traded.max() - traded.min()) / want.std()))
    assert len(rows["fp32"]["recall"]) == 8 * EVAL_VIDEOS
    summary = {k: {"recall@8": float(np.mean(r["recall"])), "r1@0.5": float(np.mean(r["r1"])),
                   "worst error/spread": max(r["ratio"]), "top-8 changed": sum(r["top8"]),
                   "moments changed": sum(r["moments"]), "widest trade": max(r["tie"], default=0.0)}
               for k, r in rows.items()}
    base = summary["fp32"]
    for name in runs:
        got = summary[name]
        assert abs(got["recall@8"] - base["recall@8"]) <= 0.01, summary
        assert abs(got["r1@0.5"] - base["r1@0.5"]) <= 0.01, summary
        assert got["widest trade"] <= 0.1, summary
        # the goal (0.15) for the mode and its block variant; every layer in FP8 measured 0.20 (why two stay 16-bit)
        assert got["worst error/spread"] <= (0.25 if name == "fp8_every_layer" else 0.15), summary
