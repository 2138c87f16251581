"""Our model against a reference assembled from transformers' own SiglipVisionModel and Qwen2Model."""


import pytest
import torch

from tests.support.model import hf_reference, reference_logits, tiny_config
from videoitg.errors import InputError
from videoitg.model.grounding import VideoITG


@pytest.mark.parametrize("T", [3, 8, 20])
def test_logits_match_transformers_reference(T):
    torch.manual_seed(0)
    model = VideoITG(tiny_config(vocab_size=300)).eval()
    model.reset_head()
    sig, qwen = hf_reference(model)
    S = model.config.vision.image_size
    pixel_values = torch.randn(T, 3, S, S)
    ids = torch.randint(0, 300, (7,))
    with torch.no_grad():
        ours = model(pixel_values, ids)
        ref = reference_logits(model, sig, qwen, pixel_values, ids)
    assert ours.shape == (T,)
    assert (ours - ref).abs().max().item() < 1e-5, (ours - ref).abs().max()


def test_reference_is_not_causal():
    """Guard the test itself: a causal run of the same weights must differ, or the parity above proves nothing."""
    torch.manual_seed(0)
    model = VideoITG(tiny_config(vocab_size=300)).eval()
    model.reset_head()
    S = model.config.vision.image_size
    pv, ids = torch.randn(4, 3, S, S), torch.randint(0, 300, (5,))
    with torch.no_grad():
        full = model(pv, ids)
        model.config.attention = "causal"
        causal = model(pv, ids)
    assert (full - causal).abs().max() > 1e-4


def test_batched_equals_unbatched(tiny):
    S = tiny.config.vision.image_size
    g = torch.Generator().manual_seed(1)
    videos = [torch.randn(T, 3, S, S, generator=g) for T in (5, 12, 5)]
    ids = [torch.randint(0, 300, (n,), generator=g) for n in (4, 9, 13)]
    with torch.no_grad():
        feats = [tiny.visual_features(v) for v in videos]
        batched = tiny.score_features(feats, ids)
        alone = [tiny.score_features([f], [i])[0] for f, i in zip(feats, ids, strict=True)]
    assert [b.shape[0] for b in batched] == [5, 12, 5]
    for b, a in zip(batched, alone, strict=True):
        assert (b - a).abs().max() < 1e-5
    # and the three pairs are really different (no accidental sharing of one sample's output)
    assert (batched[0] - batched[2]).abs().max() > 1e-4


def test_instruction_conditions_visual_tokens(tiny):
    S = tiny.config.vision.image_size
    pv = torch.randn(6, 3, S, S)
    with torch.no_grad():
        a = tiny(pv, torch.tensor([1, 2, 3]))
        b = tiny(pv, torch.tensor([4, 5, 6]))
    assert (a - b).abs().max() > 1e-5  # full attention: the text after the video changes frame scores


def test_over_long_sequence_is_refused(tiny):
    S = tiny.config.vision.image_size
    feats = tiny.visual_features(torch.randn(4, 3, S, S))
    too_long = torch.zeros(tiny.config.tokenizer_model_max_length, dtype=torch.long)
    with pytest.raises(InputError, match="length budget"):
        tiny.score_features([feats], [too_long])
