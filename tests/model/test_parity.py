"""Our model against a reference assembled from transformers' own SiglipVisionModel and Qwen2Model."""

import pytest
import torch

from tests.support.model import hf_reference, reference_logits, tiny_config
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
