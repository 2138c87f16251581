"""`videoitg.model.layout`: the one grounding sequence (order, segments, length budget, the head as a segment mean)."""

from __future__ import annotations

import pytest
import torch

from videoitg.model.layout import (
    PAD_SEGMENT,
    TEXT_SEGMENT,
    SequenceLayout,
    SequenceTooLongError,
    build_inputs,
    fit_instruction,
    frame_mean_logits,
)


def test_variant_c_segments_are_frame_major_then_text_then_padding() -> None:
    lay = SequenceLayout(num_frames=3, tokens_per_frame=2, num_text=2)
    assert (lay.num_visual, lay.fixed, lay.length) == (6, 6, 8)
    assert lay.segment_ids(pad_to=10).tolist() == [0, 0, 1, 1, 2, 2, TEXT_SEGMENT, TEXT_SEGMENT,
                                                    PAD_SEGMENT, PAD_SEGMENT]
    with pytest.raises(ValueError, match="shorter"):
        lay.segment_ids(pad_to=7)


def test_variant_b_reads_one_anchor_per_frame_after_the_text() -> None:
    lay = SequenceLayout(num_frames=2, tokens_per_frame=2, num_text=1, anchors=True)
    assert (lay.fixed, lay.length, lay.anchor_start) == (6, 7, 5)
    assert lay.segment_ids().tolist() == [TEXT_SEGMENT] * 5 + [0, 1]
    visual, text = torch.arange(8.0).view(2, 2, 2), torch.full((1, 2), -1.0)
    x = build_inputs(visual, text, anchors=True)
    assert x.shape == (7, 2) and torch.equal(x[5], visual[0].mean(0)) and torch.equal(x[4], text[0])


def test_the_head_as_a_segment_mean_equals_mean_pool_then_linear() -> None:
    torch.manual_seed(0)
    T, n, N, H = 3, 4, 2, 5
    lay = SequenceLayout(T, n, N)
    hidden, w, b = torch.randn(lay.length, H), torch.randn(H), torch.tensor(0.25)
    want = hidden[: T * n].view(T, n, H).mean(1) @ w + b  # the released head: pool each frame, then Linear(H, 1)
    got = frame_mean_logits((hidden @ w)[None], lay.segment_ids()[None], torch.arange(T), b)[0]
    torch.testing.assert_close(got, want)


def test_length_budget_refuses_or_truncates_as_asked() -> None:
    lay = SequenceLayout(num_frames=2, tokens_per_frame=3, num_text=0)
    ids = torch.arange(5)
    assert fit_instruction(ids, lay, limit=11, truncate=False).tolist() == ids.tolist()
    with pytest.raises(SequenceTooLongError, match="at most 4 tokens fit"):
        fit_instruction(ids, lay, limit=10, truncate=False)
    assert fit_instruction(ids, lay, limit=10, truncate=True).tolist() == [0, 1, 2, 3]
    with pytest.raises(SequenceTooLongError):  # the visual tokens alone over the budget: refused either way
        fit_instruction(ids, lay, limit=6, truncate=True)
