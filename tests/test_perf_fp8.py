"""FP8 linear wrapper (torch._scaled_mm; the CPU build implements it too) and the top-k overlap metric."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmarks.perf.compare import score_agreement, topk_overlap
from benchmarks.perf.fp8 import FP8_MAX, Fp8Linear, convert_linears_to_fp8, quantize

pytestmark = pytest.mark.usefixtures("no_grad")


@pytest.fixture
def no_grad():
    with torch.no_grad():
        yield


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_quantize_roundtrip_and_saturation() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 128, generator=g).to(torch.bfloat16)
    x[3, 7] = 50.0  # an outlier token: row-wise scales keep it from flattening other rows
    q, s = quantize(x, "row")
    assert q.dtype == torch.float8_e4m3fn and s.shape == (64, 1) and s.dtype == torch.float32
    back = q.float() * s
    assert not torch.isnan(back).any()
    assert q.float().abs().max() <= FP8_MAX
    assert _rel(back, x) < 0.04  # e4m3: 3 mantissa bits
    rows_ok = _rel(back[torch.arange(64) != 3], x[torch.arange(64) != 3])
    qt, st = quantize(x, "tensor")
    assert st.shape == () and rows_ok < _rel(qt.float()[torch.arange(64) != 3] * st, x[torch.arange(64) != 3])


@pytest.mark.parametrize("granularity", ["row", "tensor"])
def test_fp8_linear_close_to_bf16(granularity: str) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(96, 48).to(torch.bfloat16)
    x = torch.randn(5, 7, 96).to(torch.bfloat16)  # M = 35: not a multiple of 16, which _scaled_mm allows
    fp8 = Fp8Linear.from_linear(lin, granularity)  # type: ignore[arg-type]
    y, ref = fp8(x), lin(x)
    assert y.shape == ref.shape == (5, 7, 48) and y.dtype == torch.bfloat16
    assert _rel(y, ref) < 0.06
    assert _rel(y, ref) > 0  # it really ran in reduced precision


def test_convert_skips_unfit_and_unselected() -> None:
    torch.manual_seed(0)
    model = nn.Module()
    model.layers = nn.ModuleList([nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))])
    model.embed = nn.Linear(32, 32)  # not selected by the default filter
    model.out_proj = nn.Linear(32, 1)  # N = 1: _scaled_mm cannot take it
    model = model.to(torch.bfloat16)
    x = torch.randn(10, 32).to(torch.bfloat16)

    def run(m: nn.Module) -> torch.Tensor:
        return m.out_proj(m.layers[0](m.embed(x)))

    ref = run(model)
    names = convert_linears_to_fp8(model)
    assert names == ["layers.0.0", "layers.0.2"]
    assert isinstance(model.layers[0][0], Fp8Linear) and isinstance(model.embed, nn.Linear)
    assert isinstance(model.out_proj, nn.Linear)
    assert _rel(run(model), ref) < 0.1
    with pytest.raises(ValueError):
        Fp8Linear.from_linear(nn.Linear(32, 1))


def test_topk_overlap() -> None:
    a = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    assert topk_overlap(a, a, 2) == 1.0
    assert topk_overlap(a, -a, 2) == 0.0
    assert topk_overlap(a, torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0]), 2) == 0.5
    assert topk_overlap(a, a, 32) == 1.0  # k clipped to T
    with pytest.raises(ValueError):
        topk_overlap(a, a[:3])
    agree = score_agreement(a, a + 0.5, k=3)
    assert agree["max_abs_diff"] == pytest.approx(0.5) and agree["top3_overlap"] == 1.0
