"""The CLI end to end, in-process: score a generated clip, write results.jsonl and the timeline PNG."""

import json
import os

import pytest

from videoitg.commands.cli import main
from videoitg.decode import DecodeLimits, VideoTooLargeError
from videoitg.defaults import default_checkpoint
from videoitg.errors import InputError
from videoitg.manifest.rows import load_manifest
from videoitg.outputs import GroundingResult
from videoitg.pipeline.scorer import Scorer
from videoitg.request.limits import Limits
from videoitg.sampling import SamplingParams
from videoitg.synthetic.sample import sample_video


def test_score_writes_results_and_plot(home, capsys):
    video, instruction = sample_video()
    out, png = home / "results.jsonl", home / "t.png"
    rc = main(["score", str(video), "-i", instruction, "--checkpoint", str(default_checkpoint()), "--top-k", "4",
               "--output", str(out), "--plot", str(png), "--doc-id", "12"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "top-4 in chronological order" in text
    rec = json.loads(out.read_text().splitlines()[0])
    assert rec["contexts"] == instruction and rec["doc_id"] == 12 and len(rec["top_k"]) == 4
    assert sorted(rec["index"]) == rec["frame_indices"] and rec["top_k"] == sorted(rec["top_k"])
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_bad_input_is_a_clear_cli_error(home, capsys):
    bad = home / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    assert main(["score", str(bad), "-i", "anything"]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["score", str(bad), "-i", "   "]) == 2
    assert "instruction is empty" in capsys.readouterr().err


def test_scorer_applies_the_configured_limits(home):
    video, instruction = sample_video()
    small = Limits(decode=DecodeLimits(max_bytes=1000), max_instruction_tokens=3)
    scorer = Scorer(default_checkpoint(), limits=small)
    with pytest.raises(InputError, match="over the limit of 3"):
        scorer.encode(instruction)
    with pytest.raises(VideoTooLargeError):
        scorer.load_video(video)
    with pytest.raises(InputError, match="over the limit of 16 sampled frames"):
        Scorer(default_checkpoint(), limits=Limits(max_sampled_frames=16), sampling=SamplingParams(32))


def test_video_path_is_one_rule_for_score_and_batch(home, monkeypatch) -> None:
    """`score` given a relative path through a symlink stores the same video_path as a batch manifest row naming
    that file (the manifest resolves it; batch passes the row's path to the same record writer)."""

    video, instruction = sample_video()
    work = home / "work"
    work.mkdir()
    (work / "link.mp4").symlink_to(video)
    (work / "m.jsonl").write_text(json.dumps({"video": "link.mp4", "instruction": instruction}) + "\n")
    monkeypatch.chdir(work)
    assert main(["score", "link.mp4", "-i", instruction, "--checkpoint", str(default_checkpoint()),
                 "--output", "r.jsonl"]) == 0
    stored = json.loads((work / "r.jsonl").read_text())["video_path"]
    assert stored == os.path.realpath(video) != "link.mp4"
    row = load_manifest(work / "m.jsonl", [str(video.parent), str(work)]).rows[0]
    batch_rec = GroundingResult([0.0], [0], [0.0], instruction).to_record(video_path=row.video)
    assert batch_rec["video_path"] == stored
