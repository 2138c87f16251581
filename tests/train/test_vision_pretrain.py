"""The tower pretraining stage of the synthetic benchmark: per-frame object tags and the sigmoid-loss pretraining."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.support.train import SMALL_MODEL, small_config, small_dataset
from videoitg.errors import InputError
from videoitg.model.checkpoint import read_tensors
from videoitg.synthetic.task import FRAME_OBJECTS, OBJECT_NAMES
from videoitg.train.synthetic_run import main
from videoitg.train.trainer import init_model
from videoitg.train.vision_pretrain import load_tagged_frames, mean_auc, pretrain_tower


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return small_dataset(tmp_path_factory.mktemp("data"), videos=4, per_video=8)


def test_frame_tags_agree_with_the_semantic_labels(data: Path) -> None:
    tags = json.loads((data.parent / FRAME_OBJECTS).read_text())
    semantic = [r for r in json.loads(data.read_text()) if r["type"] == "semantic"]
    assert semantic and set(tags) == {r["video"] for r in json.loads(data.read_text())}
    for r in semantic:
        name = next(n for n in OBJECT_NAMES if n in r["question"])
        assert [t for t, visible in enumerate(tags[r["video"]]) if name in visible] == r["clip_num"], r


def test_pretraining_teaches_the_tower_which_objects_a_frame_shows(data: Path) -> None:
    torch.manual_seed(0)
    model, _ = init_model(small_config(data, Path("unused")))
    tower = model.model.vision_tower
    frames = load_tagged_frames(data.parent / "videos", data.parent / FRAME_OBJECTS, OBJECT_NAMES,
                                SMALL_MODEL["vision"]["image_size"])
    assert frames.pixels.shape[0] == frames.targets.shape[0] > 20 and frames.targets.shape[1] == 12
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    stats = pretrain_tower(tower, frames, frames, steps=150, batch=32, lr=3e-3)
    # It learns (the training frames themselves: this checks the loop, docs/training.md has held-out figures) ...
    assert stats["train_auc"] > 0.9 and stats["held_out_auc"] == stats["train_auc"]
    assert any(not torch.equal(before[k], v) for k, v in tower.state_dict().items())
    # ... and hands the tower back frozen, as the grounding recipe expects it.
    assert not any(p.requires_grad for p in tower.parameters())
    head = torch.nn.Linear(tower(frames.pixels[:1]).shape[-1], 12)
    assert 0.0 <= mean_auc(tower, head, frames) <= 1.0


def test_a_decoded_frame_count_that_disagrees_with_the_tags_is_refused(data: Path, tmp_path: Path) -> None:
    tags = json.loads((data.parent / FRAME_OBJECTS).read_text())
    video = sorted(tags)[0]
    bad = tmp_path / FRAME_OBJECTS
    bad.write_text(json.dumps({video: tags[video][:-1]}))
    with pytest.raises(InputError, match="sampled frames decoded"):
        load_tagged_frames(data.parent / "videos", bad, OBJECT_NAMES, 28)


def test_the_benchmark_command_pretrains_then_keeps_the_tower_frozen(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text(json.dumps(SMALL_MODEL))
    out = tmp_path / "run"
    assert main(["--out", str(out), "--train-videos", "4", "--eval-videos", "2", "--per-video", "4", "--steps", "3",
                 "--batch", "8", "--tower-steps", "5", "--model-json", str(tmp_path / "model.json")]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tower_pretraining"]["steps"] == 5 and "held_out_auc" in summary["tower_pretraining"]
    assert summary["train_config"]["train_vision"] is False and summary["train_config"]["group_by_video"] == 8
    assert summary["counts"]["all"] == 8  # 2 held-out videos x 4 instructions
    pre, final = read_tensors(out / "tower-pretrained"), read_tensors(out / "run" / "final")
    tower = [k for k in pre if k.startswith("model.vision_tower.")]
    assert tower and all(torch.equal(pre[k], final[k]) for k in tower)  # the grounding stage froze it
    assert any(not torch.equal(pre[k], final[k]) for k in pre if k not in tower)  # and trained the rest
