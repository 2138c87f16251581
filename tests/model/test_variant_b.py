"""Variant B: causal attention with per-frame anchor tokens after the instruction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.model import tiny_config
from tests.support.train import small_config, small_dataset
from videoitg.model.checkpoint import load_checkpoint, save_checkpoint
from videoitg.model.grounding import VideoITG
from videoitg.model.variant_b import VideoITGAnchor
from videoitg.train.tiny_tokenizer import build_tiny_tokenizer
from videoitg.train.trainer import Trainer, read_metrics


def _model(attention: str) -> VideoITG:
    torch.manual_seed(0)
    cfg = tiny_config(attention=attention)
    m = (VideoITGAnchor if attention == "causal" else VideoITG)(cfg)
    m.reset_head()
    return m.eval()


def test_visual_outputs_do_not_see_the_instruction() -> None:
    m = _model("causal")
    visual = torch.randn(5, 4, m.config.text.hidden_size)  # T=5 frames, 2x2 tokens each
    a, b = torch.tensor([3, 17, 42, 9]), torch.tensor([100, 7, 7, 250, 31, 8])
    with torch.no_grad():
        ha = m.hidden_states([visual], [a])[0]
        hb = m.hidden_states([visual], [b])[0]
        la, lb = m.score_features([visual], [a])[0], m.score_features([visual], [b])[0]
    nv = 5 * 4
    # The video prefix does not depend on the instruction, so its KV is reusable. The two sequences differ in
    # length, so their kernels may differ in rounding (by CPU); an instruction seen would move it far more.
    torch.testing.assert_close(ha[:nv], hb[:nv], rtol=1e-5, atol=1e-5)
    assert la.shape == (5,) and not torch.allclose(la, lb)  # anchors after the instruction: they depend on it


def test_variant_c_visual_outputs_do_see_the_instruction() -> None:
    # The same check fails for the released bidirectional model, so the test above can tell the two apart.
    m = _model("bidirectional")
    visual = torch.randn(5, 4, m.config.text.hidden_size)
    la = m.score_features([visual], [torch.tensor([3, 17, 42, 9])])[0]
    lb = m.score_features([visual], [torch.tensor([100, 7, 7, 250, 31, 8])])[0]
    assert not torch.allclose(la, lb)


def test_padded_batch_equals_single_sequences() -> None:
    m = _model("causal")
    H = m.config.text.hidden_size
    v1, v2 = torch.randn(3, 4, H), torch.randn(6, 1, H)
    i1, i2 = torch.tensor([5, 6, 7]), torch.tensor([8, 9, 10, 11, 12, 13, 14])
    with torch.no_grad():
        batch = m.score_features([v1, v2], [i1, i2])
        alone = [m.score_features([v1], [i1])[0], m.score_features([v2], [i2])[0]]
    for x, y in zip(batch, alone, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_anchor_is_the_frame_mean_after_the_instruction() -> None:
    m = _model("causal")
    H = m.config.text.hidden_size
    v, ids = torch.randn(2, 4, H), torch.tensor([1, 2, 3])
    x, valid = m.embed_batch([v], [ids])
    assert valid is None and x.shape == (1, 2 * 4 + 3 + 2, H)
    torch.testing.assert_close(x[0, 11:], v.mean(dim=1))
    torch.testing.assert_close(x[0, 8:11], m.model.embed_tokens(ids))


def test_variant_b_checkpoint_round_trip(tmp_path: Path) -> None:
    m = _model("causal")
    save_checkpoint(m, tmp_path / "b", build_tiny_tokenizer())
    loaded, _ = load_checkpoint(tmp_path / "b")
    assert isinstance(loaded, VideoITGAnchor)
    v, ids = torch.randn(3, 4, m.config.text.hidden_size), torch.tensor([4, 5])
    with torch.no_grad():
        torch.testing.assert_close(loaded.score_features([v], [ids])[0], m.score_features([v], [ids])[0])
    with pytest.raises(ValueError, match="causal"):
        VideoITGAnchor(tiny_config())


def test_variant_b_trains(tmp_path: Path) -> None:
    data = small_dataset(tmp_path / "data", videos=2, per_video=2)
    final = Trainer(small_config(data, tmp_path / "run", variant="B", max_steps=3, global_batch=2)).run()
    model, _ = load_checkpoint(final)
    assert isinstance(model, VideoITGAnchor) and model.config.attention == "causal"
    assert len(read_metrics(tmp_path / "run")) == 3
