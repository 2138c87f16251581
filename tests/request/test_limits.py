"""`videoitg.request.limits.Limits`: defaults, configuration (environment, flags, parameters), and every bound refused
with its typed error: video bounds through the real decoder, instruction bounds through the real tokenizer and
the model's own length check, the in-flight gate under real threads."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.model import tiny_config
from tests.support.video import write_clip
from videoitg.admission import InFlightGate, OverloadedError
from videoitg.config import VideoITGConfig
from videoitg.decode import DecodeLimits, VideoTooLargeError, decode_video
from videoitg.defaults import default_checkpoint
from videoitg.errors import InputError, VideoITGError
from videoitg.model.grounding import VideoITG
from videoitg.model.token_budget import max_visual_tokens, visual_tokens
from videoitg.model.variant_b import VideoITGAnchor
from videoitg.pipeline.scorer import Scorer, VideoFeatures
from videoitg.request.limit_names import add_arguments
from videoitg.request.limits import InstructionTooLongError, Limits
from videoitg.request.text import instruction_ids
from videoitg.sampling import SamplingParams
from videoitg.train.tiny_tokenizer import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("lim") / "c.mp4", frames=20, width=96, height=64, fps=10)


def test_defaults_compose_decode_limits() -> None:
    lim = Limits()
    assert lim.decode == DecodeLimits()  # one source of truth for the video bounds
    assert (lim.max_sampled_frames, lim.max_instruction_tokens, lim.max_in_flight) == (512, 1024, 8)
    lim.check_model(VideoITGConfig())  # the released 7B config admits the defaults
    lim.check_model(tiny_config())


def test_parameters_round_trip_and_env() -> None:
    lim = Limits().replace(max_bytes=123456, max_duration_s=90.5, max_in_flight=3, max_instruction_tokens=77)
    assert Limits.from_mapping(lim.to_parameters()) == lim
    env = {"VIDEOITG_MAX_VIDEO_BYTES": "512M", "VIDEOITG_MAX_WIDTH": "1920", "VIDEOITG_MAX_IN_FLIGHT": "2",
           "VIDEOITG_DECODE_TIME_BUDGET_S": "7.5", "VIDEOITG_MAX_PIXELS": "2KiB", "UNRELATED": "x",
           "VIDEOITG_MAX_SAMPLED_FRAMES": ""}
    got = Limits.from_env(env)
    assert got.decode.max_bytes == 512 << 20 and got.decode.max_width == 1920 and got.decode.max_pixels == 2048
    assert got.max_in_flight == 2 and got.decode_time_budget_s == 7.5 and got.max_sampled_frames == 512
    for bad in ({"VIDEOITG_MAX_IN_FLIGHT": "0"}, {"VIDEOITG_MAX_IN_FLIGHT": "many"},
                {"VIDEOITG_MAX_VIDEO_BYTES": "1.5"}, {"VIDEOITG_MAX_DURATION_S": "-1"},
                {"VIDEOITG_DECODE_TIME_BUDGET_S": "inf"}):
        with pytest.raises(InputError, match=next(iter(bad)).removeprefix("VIDEOITG_") + "|Limits|DecodeLimits"):
            Limits.from_env(bad)


def test_cli_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    p = argparse.ArgumentParser()
    add_arguments(p)
    monkeypatch.setenv("VIDEOITG_MAX_IN_FLIGHT", "5")
    monkeypatch.setenv("VIDEOITG_MAX_SAMPLED_FRAMES", "64")
    lim = Limits.from_args(p.parse_args(["--max-in-flight", "2", "--max-video-bytes", "1G"]))
    assert lim.max_in_flight == 2 and lim.decode.max_bytes == 1 << 30 and lim.max_sampled_frames == 64


def test_invalid_construction() -> None:
    for kw in ({"max_in_flight": 0}, {"max_sampled_frames": True}, {"decode_time_budget_s": float("nan")}):
        with pytest.raises(ValueError):
            Limits(**kw)
    with pytest.raises(TypeError):
        Limits(decode={"max_bytes": 1})
    cfg = tiny_config()  # 4096-token budget: 4096 frames at HW=1 leave no room for an instruction
    with pytest.raises(ValueError, match="no room"):
        Limits(max_sampled_frames=4096).check_model(cfg)


def test_sampled_frames_limit() -> None:
    lim = Limits(max_sampled_frames=64)
    assert lim.check_sampling(SamplingParams(64)).num_frames == 64
    with pytest.raises(InputError, match="num_frames=65 is over the limit of 64"):
        lim.check_sampling(SamplingParams(65))


def test_visual_token_bound_is_the_worst_case() -> None:
    cfg = VideoITGConfig()
    assert visual_tokens(cfg, 512) == 512 * 25 == 12800  # the released setting (spec: HW=5)
    worst = max_visual_tokens(cfg, 512)
    assert worst == max(visual_tokens(cfg, t) for t in range(1, 513)) and worst >= 12800
    assert worst <= cfg.vision_token_num


def test_instruction_bytes_utf8_and_empty(tok) -> None:
    cfg, lim = tiny_config(), Limits(max_instruction_bytes=64)
    assert len(instruction_ids(tok, "when is the red circle visible?", cfg, lim)) > 3
    assert len(instruction_ids(tok, b"when is the red circle visible?", cfg, lim)) > 3
    with pytest.raises(InstructionTooLongError, match="65 bytes, over the limit of 64"):
        instruction_ids(tok, "x" * 65, cfg, lim)
    with pytest.raises(InstructionTooLongError, match="bytes"):
        instruction_ids(tok, "é" * 33, cfg, lim)  # 33 characters, 66 UTF-8 bytes
    with pytest.raises(InputError, match="not valid UTF-8"):
        instruction_ids(tok, b"\xff\xfe abc", cfg, lim)
    with pytest.raises(InputError, match="UTF-8"):
        instruction_ids(tok, "a\ud800b", cfg, lim)
    for empty in ("", "   \n\t", "\x00\u200b", "\ufeff \u2060"):  # nothing visible: NUL and zero-width too
        with pytest.raises(InputError, match="empty"):
            instruction_ids(tok, empty, cfg, lim)
    with pytest.raises(InputError, match="string"):
        instruction_ids(tok, 42, cfg, lim)


def test_instruction_token_limit_agrees_with_the_model_layout(tok) -> None:
    cfg = tiny_config(vocab_size=len(tok))
    model = VideoITG(cfg)
    lim = Limits(max_instruction_tokens=10**6, max_instruction_bytes=10**6)
    for frames in (1, 16, 64, 512):
        n = lim.instruction_token_limit(cfg, frames)
        hw = cfg.tokens_per_side(frames)
        visual = torch.zeros(frames, hw * hw, cfg.text.hidden_size)
        model.layout(visual, torch.zeros(n, dtype=torch.long))  # exactly the budget: accepted by the model
        with pytest.raises(InputError, match="length budget"):
            model.layout(visual, torch.zeros(n + 1, dtype=torch.long))  # one more: refused, so the limit is tight
    text = "red " * 5000  # ~5000 tokens: over the tiny model's 4096-token budget whatever the video
    with pytest.raises(InstructionTooLongError, match="tokens, over the limit"):
        instruction_ids(tok, text, cfg, lim, num_frames=16)
    # The configured cap binds before the model budget.
    small = Limits(max_instruction_tokens=4)
    with pytest.raises(InstructionTooLongError, match="over the limit of 4"):
        instruction_ids(tok, "when is the red circle visible?", cfg, small, num_frames=16)
    assert issubclass(InstructionTooLongError, InputError)


def _decode(src: object, lim: Limits):
    return decode_video(src, image_size=16, params=SamplingParams(8), decoder="pyav", limits=lim.decode,
                        time_budget_s=lim.decode_time_budget_s)


def test_video_limits_reach_the_decoder(clip: Path) -> None:
    assert _decode(clip, Limits()).pixel_values.shape == (2, 3, 16, 16)  # 20 frames at 10 fps, 1 fps sampling
    size = clip.stat().st_size
    cases = [
        (Limits().replace(max_bytes=size - 1), "byte limit"),
        (Limits().replace(max_width=95), "96x64"),
        (Limits().replace(max_height=63), "96x64"),
        (Limits().replace(max_pixels=96 * 64 - 1), "96x64"),
        (Limits().replace(max_duration_s=1.5), "duration"),
        (Limits().replace(max_frames=19), "frame"),
    ]
    for lim, msg in cases:
        for src in (clip, clip.read_bytes()):
            with pytest.raises(VideoTooLargeError, match=msg):
                _decode(src, lim)
    # At the bound itself the video is admitted.
    _decode(clip, Limits().replace(max_bytes=size, max_width=96, max_height=64, max_pixels=96 * 64,
                                   max_frames=20, max_duration_s=2.0))


def test_in_flight_gate_under_threads() -> None:
    gate = Limits(max_in_flight=3).gate()
    assert isinstance(gate, InFlightGate)
    release = threading.Event()
    entered, refused = [], []
    lock = threading.Lock()

    def worker() -> None:
        try:
            with gate:
                with lock:
                    entered.append(1)
                release.wait(5)
        except OverloadedError as e:
            with lock:
                refused.append(str(e))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while len(entered) + len(refused) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(entered) == 3 and len(refused) == 5 and gate.in_flight == 3 and gate.refused == 5
    assert "max_in_flight=3" in refused[0]
    release.set()
    for t in threads:
        t.join()
    assert gate.in_flight == 0
    with pytest.raises(RuntimeError), gate:  # a failing request gives its slot back
        raise RuntimeError("boom")
    assert gate.in_flight == 0
    with gate, gate, gate:
        assert gate.in_flight == 3
    assert issubclass(OverloadedError, VideoITGError) and not issubclass(OverloadedError, InputError)


def test_gate_capacity_validated() -> None:
    with pytest.raises(ValueError):
        InFlightGate(0)


def test_gate_admit_and_release_without_a_with_block() -> None:
    """A slot held across calls (taken in one method, given back in another) uses admit() / release()."""
    gate = InFlightGate(1)
    gate.admit()
    assert gate.in_flight == 1
    with pytest.raises(OverloadedError, match="max_in_flight=1"):
        gate.admit()
    assert gate.refused == 1
    gate.release()
    assert gate.in_flight == 0
    gate.admit()
    gate.release()
    with pytest.raises(ValueError):  # a release with no slot taken is a bug, not a silent extra slot
        gate.release()


def test_variant_b_instruction_budget_counts_the_anchors(tok) -> None:
    c_cfg = tiny_config(vocab_size=len(tok))
    b_cfg = tiny_config(vocab_size=len(tok), attention="causal")
    lim = Limits(max_instruction_tokens=10**6, max_instruction_bytes=10**6)
    model = VideoITGAnchor(b_cfg)
    for frames in (16, 64):
        n = lim.instruction_token_limit(b_cfg, frames)
        assert n == lim.instruction_token_limit(c_cfg, frames) - frames  # one anchor per frame
        hw = b_cfg.tokens_per_side(frames)
        visual = torch.zeros(frames, hw * hw, b_cfg.text.hidden_size)
        model.layout(visual, torch.zeros(n, dtype=torch.long))
        with pytest.raises(InputError, match="anchors"):
            model.layout(visual, torch.zeros(n + 1, dtype=torch.long))


def test_released_truncation_is_an_explicit_option() -> None:
    """Default: an instruction over the model's length budget is refused. `truncate=True` (CLI
    --truncate-instruction) cuts its tail to the room this video leaves, as the released model does."""
    text = "red " * 5000  # ~5000 tokens: over the tiny model's 4096-token budget whatever the video
    strict, cut = Scorer(default_checkpoint()), Scorer(default_checkpoint(), truncate=True)
    cfg, T = strict.config, 16
    with torch.no_grad():
        visual = strict.model.visual_features(torch.rand(T, 3, cfg.vision.image_size, cfg.vision.image_size) * 2 - 1)
    feats = VideoFeatures(visual, list(range(T)), [float(t) for t in range(T)])
    with pytest.raises(InstructionTooLongError):
        strict.score_visual([(feats, text)])
    got = cut.score_visual([(feats, text)])[0]
    room = cfg.tokenizer_model_max_length - T * cfg.tokens_per_side(T) ** 2
    ids = cut.encode(text)
    assert len(ids) > room
    with torch.no_grad():
        want = cut.model.score_features([visual], [ids[:room]])[0]
    assert np.allclose(got.logits, want.tolist(), atol=1e-6)
