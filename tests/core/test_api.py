"""What a user touches: `from videoitg import Scorer, Client`, the CLI's light `--help`, clear errors instead of
tracebacks, the demo-checkpoint notice, doc_id warnings for lmms-eval files, and the timeline picture."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmarks.clips import random_clip
from videoitg import Client, Scorer
from videoitg.client.kserve import VideoITGClient
from videoitg.commands.cli import main
from videoitg.commands.plot import _score_limits, display_aspect, plot_timeline, thumbnails_from_pixels
from videoitg.defaults import default_checkpoint
from videoitg.errors import InputError
from videoitg.outputs import GroundingResult, doc_id_problems
from videoitg.synthetic.sample import sample_video


def test_help_and_import_do_not_load_torch() -> None:
    code = ("import sys, videoitg\n"
            "assert 'torch' not in sys.modules\n"
            "from videoitg.commands.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'numpy', 'av', 'transformers', 'tritonclient', 'ray') if m in sys.modules]\n"
            "print(heavy)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
    assert "score" in r.stdout and "manifest" in r.stdout and "perf" in r.stdout  # every command is listed


@pytest.mark.parametrize("command", [["score"], ["serve"], ["repo"], ["repo", "build"], ["batch"], ["perf"],
                                     ["eval"], ["demo"], ["answer"], ["answer-table"]])
def test_command_help_does_not_load_torch(command: list[str]) -> None:
    """Each command's --help builds its parser (limits, sampling and deployment flags included) without torch,
    numpy or PyAV: it answers in a tenth of a second instead of the seconds torch takes to import."""
    code = ("import sys\n"
            "from videoitg.commands.cli import main\n"
            f"try:\n    main({command + ['--help']!r})\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('torch', 'numpy', 'av', 'tritonclient', 'ray') if m in sys.modules])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "usage: videoitg" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_scorer_api(home, tmp_path: Path) -> None:
    assert Client is VideoITGClient
    clip = tmp_path / "clip.mp4"
    random_clip(clip, seed=3)
    a = Scorer.default()
    b = Scorer.from_pretrained(default_checkpoint())
    questions = ["when is the red circle visible?", "when does the square move left?", "anything at all"]
    many = b.score_many(clip, questions, batch_size=2)  # one decode and vision pass, two padded batches
    for q, r in zip(questions, many, strict=True):
        one = a.score(clip, q)
        assert r.instruction == q and r.frame_indices == one.frame_indices
        assert r.logits == pytest.approx(one.logits, abs=1e-5) and r.moments
    with pytest.raises(InputError, match="does not exist"):
        Scorer.from_pretrained(tmp_path / "nope")
    with pytest.raises(InputError, match="list of instructions"):
        b.score_many(clip, "one string")
    with pytest.raises(InputError, match="URLs are not fetched"):
        b.score("https://example.com/v.mp4", "q")
    assert b.load_video(f"file://{clip}").frame_indices == many[0].frame_indices  # a file:// URI is a path


def test_scorer_in_fp8_runs_the_language_models_middle_decoder_layers_in_float8(home) -> None:
    """`Scorer(precision="fp8")` (the language model's linear layers but its first and last decoder layers' in
    float8, emulated on a CPU, videoitg/model/fp8.py) against the fp32 scorer on the sample clip
    (24 frames, the embedded checkpoint): Spearman >= 0.97 and max |logit difference| <= 0.05 of the logits' range
    (measured 0.995 and 0.02); fp8 with a dtype other than bfloat16 is refused."""
    from videoitg.engine_build.parity import compare
    from videoitg.model.fp8 import Float8Linear

    path, question = sample_video()
    fp8 = Scorer.default(precision="fp8")
    assert fp8.dtype is torch.bfloat16 and fp8.precision == "fp8"
    assert any(isinstance(m, Float8Linear) for m in fp8.model.modules())
    want, got = Scorer.default().score(path, question), fp8.score(path, question)
    assert got.frame_indices == want.frame_indices
    p = compare(np.array(want.logits), np.array(got.logits))
    assert p.spearman >= 0.97 and p.max_abs_diff <= 0.05 * np.ptp(want.logits), p
    with pytest.raises(InputError, match="bfloat16, not float16"):
        Scorer.default(precision="fp8", dtype="float16")
    with pytest.raises(InputError, match="unknown precision"):
        Scorer.default(precision="int4")


def test_demo_checkpoint_notice_once_and_not_for_the_sample(home, tmp_path: Path, caplog) -> None:
    video, instruction = sample_video()
    clip = tmp_path / "other.mp4"
    random_clip(clip, seed=4)
    scorer = Scorer.default()
    with caplog.at_level(logging.WARNING, logger="videoitg.pipeline.scorer"):
        scorer.score(video, instruction)
        scorer.score(video.read_bytes(), instruction)  # the sample's bytes are the sample too
        assert not caplog.records
        scorer.score(clip, "q")
        scorer.score(clip, "q")
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and "NOTICE" in notices[0] and "\n" not in notices[0]
    assert "not a video model" in notices[0] and "--checkpoint" in notices[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_clear_cli_errors(home, capsys) -> None:
    video, instruction = sample_video()
    cases = [
        (["--device", "cuda"], "no CUDA support" if torch.version.cuda is None else "no CUDA device"),
        (["--top-k", "0"], "--top-k must be an integer from 1"),
    ]
    for extra, msg in cases:
        assert main(["score", str(video), "-i", instruction, *extra]) == 2
        assert msg in capsys.readouterr().err
    assert main(["score", "https://example.com/a.mp4", "-i", instruction]) == 2
    assert "URLs are not fetched" in capsys.readouterr().err
    assert main(["score", "http://example.com/a.mp4", "-i", instruction, "--server", "127.0.0.1:1"]) == 2
    assert "URLs are not fetched" in capsys.readouterr().err


def test_doc_id_warnings_for_lmms_eval_files(home, tmp_path: Path, capsys) -> None:
    assert doc_id_problems([{"doc_id": 1}, {"doc_id": "2"}]) == []
    probs = doc_id_problems([{"doc_id": None}, {"doc_id": "x"}, {"doc_id": 3}, {"doc_id": "3"}])
    assert len(probs) == 3 and "no doc_id" in probs[0] and "not an integer" in probs[1] and "'3'" in probs[2]

    video, instruction = sample_video()
    out = tmp_path / "r.jsonl"
    assert main(["score", str(video), "-i", instruction, "--output", str(out)]) == 0
    assert "no doc_id" in capsys.readouterr().err
    assert main(["score", str(video), "-i", instruction, "--output", str(out), "--doc-id", "5"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["score", str(video), "-i", instruction, "--output", str(out), "--doc-id", "5"]) == 0
    assert "doc_id 5 already present" in capsys.readouterr().err
    assert [json.loads(x)["doc_id"] for x in out.read_text().splitlines()] == [None, 5, 5]


def test_timeline_keeps_aspect_and_zooms_a_narrow_band(tmp_path: Path) -> None:

    assert display_aspect(SimpleNamespace(width=640, height=360, rotation=0)) == pytest.approx(16 / 9)
    assert display_aspect(SimpleNamespace(width=640, height=360, rotation=90)) == pytest.approx(9 / 16)
    px = torch.zeros(3, 3, 36, 36)
    assert thumbnails_from_pixels(px, 16 / 9)[0].shape == (36, 64, 3)
    assert thumbnails_from_pixels(px, 9 / 16)[0].shape == (64, 36, 3)
    (lo, hi), zoomed = _score_limits([0.95, 0.97, 0.99])
    assert zoomed and 0.9 < lo < 0.95 and 0.99 < hi < 1.0
    assert _score_limits([0.01, 0.99]) == ((-0.02, 1.02), False)
    logits = [2.9, 3.0, 3.5, 4.5, 4.4, 3.1, 2.95, 3.0]  # sigmoid 0.948..0.989
    r = GroundingResult(logits, list(range(8)), [float(i) for i in range(8)], "q", "v")
    png = plot_timeline(r, tmp_path / "t.png", r.top_k_positions(3),
                        thumbnails_from_pixels(torch.zeros(8, 3, 36, 36), 16 / 9))
    assert png.read_bytes()[:4] == b"\x89PNG"
