"""Our model against a reference assembled from transformers' own SiglipVisionModel and Qwen2Model."""

import pytest
import torch
import torch.nn.functional as F
from fixtures_model import tiny_config
from transformers import Qwen2Config, Qwen2Model, SiglipVisionConfig, SiglipVisionModel

from videoitg.model import VideoITG


def hf_reference(model: VideoITG):
    cfg = model.config
    v = cfg.vision
    sig = SiglipVisionModel(SiglipVisionConfig(
        image_size=v.image_size, patch_size=v.patch_size, hidden_size=v.hidden_size,
        intermediate_size=v.intermediate_size, num_hidden_layers=v.num_hidden_layers,
        num_attention_heads=v.num_attention_heads, layer_norm_eps=v.layer_norm_eps,
        attn_implementation="eager",
    )).eval()
    t = cfg.text
    qwen = Qwen2Model(Qwen2Config(
        vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_hidden_layers, num_attention_heads=t.num_attention_heads,
        num_key_value_heads=t.num_key_value_heads, rms_norm_eps=t.rms_norm_eps, rope_theta=t.rope_theta,
        max_position_embeddings=t.max_position_embeddings, attn_implementation="eager",
    )).eval()
    # Random HF weights become the truth; copy them into our model (the unused last layer stays HF-only).
    ours = {k.removeprefix("model.vision_tower.vision_tower."): k for k in model.state_dict()
            if k.startswith("model.vision_tower.")}
    sd = model.state_dict()
    for k, val in sig.state_dict().items():
        k = k if k.startswith("vision_model.") else "vision_model." + k  # transformers 5 drops the prefix
        if k in ours:
            sd[ours[k]] = val.clone()
    for k, val in qwen.state_dict().items():
        sd["model." + k] = val.clone()
    model.load_state_dict(sd)
    return sig, qwen


def reference_logits(model, sig, qwen, pixel_values, ids):
    cfg = model.config
    T = pixel_values.shape[0]
    feats = sig(pixel_values, output_hidden_states=True).hidden_states[cfg.mm_vision_select_layer]  # [T, g², Cv]
    g = cfg.vision.grid
    hw = min(int((cfg.vision_token_num / T) ** 0.5), g)
    x = feats.transpose(1, 2).reshape(T, -1, g, g)
    if hw < g:
        x = F.interpolate(x, size=(hw, hw), mode="bilinear", align_corners=False)
    x = x.flatten(2).transpose(1, 2)
    mlp = model.model.mm_projector.out_projection
    x = mlp[2](F.gelu(mlp[0](x)))  # exact (erf) GELU
    seq = torch.cat([x.reshape(-1, x.shape[-1]), qwen.embed_tokens(ids)])[None]
    L = seq.shape[1]
    full = torch.zeros(1, 1, L, L)  # additive mask of zeros = every token attends to every token
    h = qwen(inputs_embeds=seq, attention_mask=full).last_hidden_state[0]
    pooled = h[: T * hw * hw].view(T, hw * hw, -1).mean(1)
    return model.out_proj(pooled)[:, 0]


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
