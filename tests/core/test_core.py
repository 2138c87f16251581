"""Core package: config rules, batching, checkpoint format, sampling, outputs."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.support.model import plain_writer_checkpoint, tiny_config
from videoitg.config import VideoITGConfig
from videoitg.engines.runtimes import open_vision
from videoitg.errors import CheckpointError, InputError
from videoitg.model.checkpoint import checkpoint_identity, load_checkpoint, save_checkpoint
from videoitg.model.grounding import VideoITG
from videoitg.outputs import GroundingResult, read_frame_indices_jsonl, write_results_jsonl
from videoitg.request.text import encode_instruction
from videoitg.sampling import SamplingParams, frame_timestamps, sample_frame_indices
from videoitg.train.tiny_tokenizer import build_tiny_checkpoint, build_tiny_tokenizer

# ---- config ------------------------------------------------------------------------------------------------------
SPEC_HW = {8: 27, 16: 27, 22: 27, 23: 26, 32: 22, 64: 16, 100: 12, 128: 11, 200: 9, 256: 8, 300: 7, 400: 6, 512: 5}


@pytest.mark.parametrize("T,hw", SPEC_HW.items())
def test_hw_table_of_the_spec(T, hw):
    cfg = VideoITGConfig()
    assert cfg.tokens_per_side(T) == hw
    assert cfg.vision.grid == 27 and cfg.vision_layers_used == 26


def test_config_json_round_trip():
    cfg = tiny_config(vocab_size=300)
    cfg.extra["something_custom"] = 3
    again = VideoITGConfig.from_json_dict(json.loads(json.dumps(cfg.to_json_dict())))
    assert again == cfg


# ---- model -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = VideoITG(tiny_config(vocab_size=300)).eval()
    model.reset_head()
    torch.nn.init.normal_(model.out_proj.bias)
    return model


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


# ---- checkpoint --------------------------------------------------------------------------------------------------
def test_checkpoint_round_trip_single_and_sharded(tmp_path, tiny):
    tok = build_tiny_tokenizer()
    S = tiny.config.vision.image_size
    pv, ids = torch.randn(4, 3, S, S), torch.tensor([3, 1, 4, 1, 5])
    with torch.no_grad():
        want = tiny(pv, ids)
    for name, shard in (("single", None), ("sharded", 20_000)):
        d = save_checkpoint(tiny, tmp_path / name, tok, max_shard_bytes=shard)
        if shard:
            assert (d / "model.safetensors.index.json").exists() and len(list(d.glob("model-*.safetensors"))) > 2
        model, tok2 = load_checkpoint(d)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in tiny.state_dict().items())  # bit for bit
        with torch.no_grad():  # the forward within float32 rounding (kernels may differ by CPU and alignment)
            torch.testing.assert_close(model(pv, ids), want, rtol=1e-5, atol=1e-5)
        assert tok2("when is the red circle visible?\n")["input_ids"] == tok("when is the red circle visible?\n")[
            "input_ids"]
        # Re-saving a loaded checkpoint gives the same tokenizer files (no loader-only keys written into them).
        again = save_checkpoint(model, tmp_path / f"{name}-again", tok2)
        for f in ("tokenizer_config.json", "tokenizer.json"):
            assert (again / f).read_text() == (d / f).read_text(), f


@pytest.mark.parametrize("external_tower", [False, True])
def test_checkpoint_from_a_plain_safetensors_writer_loads(tmp_path, tiny, external_tower):
    d = plain_writer_checkpoint(tmp_path, tiny, external_tower)
    model, _ = load_checkpoint(d)
    for k, v in tiny.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_mismatched_checkpoint_names_every_tensor(tmp_path, tiny):
    d = plain_writer_checkpoint(tmp_path, tiny, external_tower=False)
    sd = load_file(str(d / "model.safetensors"))
    del sd["out_proj.weight"]
    sd["model.norm.weight"] = torch.ones(7)
    sd["model.extra_thing"] = torch.ones(2)
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(d)
    msg = str(e.value)
    assert "missing tensor out_proj.weight (expected shape (1, 64))" in msg
    assert "tensor model.norm.weight has shape (7,), expected (64,)" in msg
    assert "unexpected tensor model.extra_thing" in msg


def test_corrupt_and_pickle_checkpoints_are_refused(tmp_path, tiny):
    d = save_checkpoint(tiny, tmp_path / "c", build_tiny_tokenizer())
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:100])
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        load_checkpoint(d)
    (d / "model.safetensors").unlink()
    torch.save({}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle weights are refused"):
        load_checkpoint(d)
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path / "nothing")


def test_missing_tower_is_a_clear_error_not_a_download(tmp_path, tiny):
    d = plain_writer_checkpoint(tmp_path, tiny, external_tower=False)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["vision_config"]
    cfg["mm_vision_tower"] = "google/siglip-so400m-patch14-384"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="nothing is fetched from a hub"):
        load_checkpoint(d)


def test_checkpoint_identity_changes_with_weights(tmp_path):
    a = build_tiny_checkpoint(tmp_path / "a", seed=0)
    b = build_tiny_checkpoint(tmp_path / "b", seed=1)
    c = build_tiny_checkpoint(tmp_path / "c", seed=0)
    assert checkpoint_identity(a) == checkpoint_identity(c) != checkpoint_identity(b)


# ---- text --------------------------------------------------------------------------------------------------------
def test_instruction_encoding_plain_format():
    tok = build_tiny_tokenizer()
    ids = encode_instruction(tok, "when is the red circle visible?")
    assert tok.decode(ids.tolist()) == "when is the red circle visible?\n"  # no BOS, no template, trailing \n
    with pytest.raises(InputError, match="empty"):
        encode_instruction(tok, "   ")
    with pytest.raises(InputError, match="more than the limit"):
        encode_instruction(tok, "red " * 50, max_tokens=10)


# ---- sampling ----------------------------------------------------------------------------------------------------
def test_eval_rule_matches_the_released_wrapper():
    # 30 fps, 1000 s: step 30, 1000 candidates -> 512 floor-spaced
    idx = sample_frame_indices(30_000, 30.0, SamplingParams(512, 1.0, "eval"))
    cand = list(range(0, 30_000, 30))
    assert idx == [cand[int(i * 1000 / 512)] for i in range(512)]
    assert idx[0] == 0 and len(set(idx)) == 512


def test_train_rule_is_end_aligned():
    idx = sample_frame_indices(30_000, 30.0, SamplingParams(512, 1.0, "train"))
    assert idx[-1] == 29_970 and idx[0] > 0 and len(idx) == 512


@pytest.mark.parametrize("rule", ["eval", "train"])
def test_sampling_edge_cases(rule):
    p = SamplingParams(512, 1.0, rule)
    assert sample_frame_indices(1, 25.0, p) == [0]  # one frame
    assert sample_frame_indices(10, 25.0, p) == [0]  # shorter than a second
    assert sample_frame_indices(100, 0.3, p) == list(range(100))  # fps < 0.5: step 0 crashed the original
    assert sample_frame_indices(90, 29.97, p) == [0, 30, 60]  # odd fps
    assert sample_frame_indices(100, 2.5, p) == list(range(0, 100, 2))  # round(2.5) = 2 (Python rounding)
    long = sample_frame_indices(10 * 3600 * 30, 30.0, p)  # ten hours
    assert len(long) == 512 and long == sorted(long)
    for bad_total in (0, -1, None):
        with pytest.raises(InputError, match="no frames"):
            sample_frame_indices(bad_total, 30.0, p)
    for bad_fps in (0.0, float("nan"), None, float("inf")):
        with pytest.raises(InputError, match="frame rate"):
            sample_frame_indices(100, bad_fps, p)
    with pytest.raises(InputError):
        SamplingParams(0)
    assert frame_timestamps([0, 30, 60], 30.0) == [0.0, 1.0, 2.0]


# ---- outputs -----------------------------------------------------------------------------------------------------
def test_ranking_topk_and_results_jsonl(tmp_path):
    r = GroundingResult(logits=[0.0, 2.0, -1.0, 2.0, 1.0], frame_indices=[0, 30, 60, 90, 120],
                        timestamps=[0.0, 1.0, 2.0, 3.0, 4.0], instruction="q?", video="v.mp4")
    assert r.ranking == [1, 3, 4, 0, 2]  # tie between positions 1 and 3 goes to the earlier frame
    assert r.top_k_frames(3) == [30, 90, 120]  # chronological
    assert r.top_k_frames(99) == [0, 30, 60, 90, 120]
    rec = r.to_record(doc_id=7, top_k=2)
    assert list(rec)[:6] == ["index", "logits", "num_frames", "contexts", "video_path", "doc_id"]
    assert rec["index"] == [30, 90, 120, 0, 60]
    assert rec["logits"] == [0.88, 0.88, 0.73, 0.5, 0.27]
    assert rec["contexts"] == "q?" and rec["top_k"] == [30, 90]
    assert rec["video_path"] == os.path.realpath("v.mp4") and os.path.isabs(rec["video_path"])
    out = tmp_path / "results.jsonl"
    write_results_jsonl(out, [rec, {**rec, "index": [1]}, r.to_record(doc_id=8)])
    assert read_frame_indices_jsonl(out) == {7: [30, 90, 120, 0, 60], 8: [30, 90, 120, 0, 60]}  # first line wins


def test_load_one_half_reads_only_its_tensors(tmp_path, tiny):
    d = save_checkpoint(tiny, tmp_path / "c", build_tiny_tokenizer())
    S = tiny.config.vision.image_size
    pv, ids = torch.randn(5, 3, S, S), torch.tensor([3, 1, 4])
    vision, _ = load_checkpoint(d, part="vision", with_tokenizer=False)
    grounding, tok = load_checkpoint(d, part="grounding")
    assert not any(k.startswith("model.layers.") for k in vision.state_dict())
    assert not any(k.startswith("model.vision_tower.") for k in grounding.state_dict())
    with torch.no_grad():
        split = grounding.score_features([vision.visual_features(pv)], [ids])[0]
        # two models, two code paths: equal within float32 rounding (kernels may differ by CPU and alignment)
        torch.testing.assert_close(split, tiny(pv, ids), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown model part"):
        load_checkpoint(d, part="llm")


def test_eagle_base_checkpoint_starts_a_grounding_run(tmp_path, tiny):
    """The released recipe starts from the Eagle video-LLM: it has an lm_head and no out_proj."""
    d = save_checkpoint(tiny, tmp_path / "base", build_tiny_tokenizer())
    sd = load_file(str(d / "model.safetensors"))
    del sd["out_proj.weight"], sd["out_proj.bias"]
    sd["lm_head.weight"] = torch.zeros(300, 64)
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing tensor out_proj.weight"):
        load_checkpoint(d)
    torch.manual_seed(0)
    model, _ = load_checkpoint(d, init_missing_head=True, attention="causal")
    assert type(model).__name__ == "VideoITGAnchor" and model.config.attention == "causal"
    assert torch.equal(model.out_proj.bias, torch.zeros(1)) and model.out_proj.weight.abs().sum() > 0
    assert torch.equal(model.model.norm.weight, tiny.model.norm.weight)


def test_vision_runtime_features_of_chunks_are_the_whole_videos(tiny):
    """The streaming decode step sends a video's frames in chunks with the video's frame count: every step after
    the tower is per frame, so the chunks' features concatenated equal the whole video's (the projector's grid is
    set by the video's count, not the chunk's)."""
    S = tiny.config.vision.image_size
    t, chunk = 24, 10
    assert tiny.config.tokens_per_side(t) != tiny.config.tokens_per_side(chunk)  # the count changes the grid
    pv = torch.rand(t, 3, S, S, generator=torch.Generator().manual_seed(0)) * 2 - 1
    vision = open_vision("torch", tiny)
    whole = vision.visual_features(pv)
    chunks = torch.cat([vision.visual_features(c, num_frames=t) for c in pv.split(chunk)])
    assert chunks.shape == whole.shape and float((chunks - whole).abs().max()) <= 1e-5
