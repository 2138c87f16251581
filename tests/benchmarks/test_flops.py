"""FLOP counter against numbers worked out by hand and published estimates for Qwen2-7B and SigLIP-so400m."""

from __future__ import annotations

import pytest

from benchmarks.perf.flops import (
    llm_attention_flops,
    llm_linear_flops_per_token,
    request_flops,
    sequence_length,
    siglip_head_flops,
    siglip_layer_flops,
    vision_flops_per_frame,
)
from tests.support.model import tiny_config
from videoitg.config import VideoITGConfig

REAL = VideoITGConfig()


def test_siglip_layer_by_hand() -> None:
    # so400m: N = 27*27 = 729 tokens, D = 1152, I = 4304.
    # linear: qkv 2*729*1152*3456 + o 2*729*1152*1152 + fc1 2*729*1152*4304 + fc2 2*729*4304*1152
    #       = 2*729*1152*(3456 + 1152 + 4304 + 4304) = 2*729*1152*13216 = 22_197_805_056
    # attention: 4*729*729*1152 = 2_448_880_128
    assert siglip_layer_flops(REAL.vision) == (22_197_805_056, 2_448_880_128)


def test_vision_per_frame_matches_spec() -> None:
    per_frame = vision_flops_per_frame(REAL.vision, REAL.vision_layers_used)
    assert REAL.vision_layers_used == 26
    # patch embed 2*729*588*1152 = 987_614_208, + 26 layers
    assert per_frame == 987_614_208 + 26 * (22_197_805_056 + 2_448_880_128)
    assert per_frame == pytest.approx(0.64e12, rel=0.01)  # "~0.64 TFLOP a frame"
    # the original runs all 27 layers and the pooling head: ~4.4% more
    full = vision_flops_per_frame(REAL.vision, 27, include_head=True)
    assert full / per_frame == pytest.approx(1.0445, abs=0.002)
    # head: keys+values of 729 tokens, the probe's q and out projections, one attention row, MLP on one token
    assert siglip_head_flops(REAL.vision) == (
        2 * 729 * 1152 * 2304 + 2 * 2 * 1152 * 1152 + 4 * 729 * 1152 + 4 * 1152 * 4304
    )


def test_llm_per_token_and_request_match_anchors() -> None:
    # per layer: q,o 2*3584*3584 each, k,v 2*3584*512 each, gate/up/down 2*3584*18944 each
    per_layer = 2 * (2 * 3584 * 3584 + 2 * 3584 * 512 + 3 * 3584 * 18944)
    assert llm_linear_flops_per_token(REAL.text) == 28 * per_layer
    assert llm_linear_flops_per_token(REAL.text) == pytest.approx(13.1e9, rel=0.01)  # "~13.1 GFLOP/token"
    seq = sequence_length(REAL, 512, 150)
    assert seq == 512 * 25 + 150 == 12_950
    assert llm_attention_flops(REAL.text, seq) == 28 * 4 * seq * seq * 3584
    f = request_flops(REAL, 512, 150)
    assert 235e12 <= f.llm <= 250e12  # "about 235-250 TFLOP a request"
    assert f.vision == pytest.approx(330e12, rel=0.01)  # "~330 TFLOP for 512 frames"
    assert f.total == pytest.approx(570e12, rel=0.02)  # "~570 TFLOP a request"


def test_tiny_request_by_hand() -> None:
    cfg = tiny_config()  # image 112/14 -> 8x8 = 64 tokens, D=48, I=96, 3 layers (2 used); LLM H=64, I=128, kv 2x16
    t, instr = 16, 10
    hw = cfg.tokens_per_side(t)
    assert hw == 8  # min(floor(sqrt(1024/16)), 8)
    f = request_flops(cfg, t, instr)
    per_layer = 2 * 64 * 48 * (4 * 48 + 2 * 96) + 4 * 64 * 64 * 48
    assert f.vision == t * (2 * 64 * 588 * 48 + 2 * per_layer)
    assert f.projector == 2 * t * 64 * (48 * 64 + 64 * 64)
    seq = t * 64 + instr
    assert f.llm_linear == seq * 2 * 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128)
    assert f.llm_attention == 2 * 4 * seq * seq * 64
    assert f.head == 2 * t * 64
    assert f.total == f.vision + f.projector + f.llm_linear + f.llm_attention + f.head


def test_paths_cache_batch_and_causal() -> None:
    ours = request_flops(REAL, 256, 100)
    base = request_flops(REAL, 256, 100, path="baseline")
    assert base.vision > ours.vision and base.vision_head > 0 == ours.vision_head
    assert base.llm == ours.llm and base.projector == ours.projector
    cached = request_flops(REAL, 256, 100, cached_video=True)
    assert cached.vision == cached.projector == 0 and cached.total == ours.llm
    assert request_flops(REAL, 256, 100, batch=4).total == 4 * ours.total
    causal = VideoITGConfig(attention="causal")
    assert request_flops(causal, 256, 100).llm_attention * 2 == ours.llm_attention
    # attention is quadratic in the sequence, the linear layers are not
    assert llm_attention_flops(REAL.text, 2000) == 4 * llm_attention_flops(REAL.text, 1000)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        request_flops(REAL, 64, 10, path="fast")
    with pytest.raises(ValueError):
        request_flops(REAL, 64, -1)
    with pytest.raises(ValueError):
        request_flops(REAL, 0, 10)
