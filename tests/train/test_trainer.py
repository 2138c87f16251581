"""The training recipe: labels and pos_weight, which parameters move, overfitting, exact resume, bad data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.support.train import small_config, small_dataset
from videoitg.eval.scoring import score_records
from videoitg.eval.summary import summarize
from videoitg.model.checkpoint import load_checkpoint, read_tensors
from videoitg.pipeline.scorer import Scorer
from videoitg.request.limits import Limits
from videoitg.train import recipe
from videoitg.train.data import TRAIN_SAMPLING, grouped_epoch_order, parse_records
from videoitg.train.trainer import Trainer, TrainModule, init_model, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return small_dataset(tmp_path_factory.mktemp("data"), videos=3, per_video=2)


def test_labels_and_pos_weight() -> None:
    y = recipe.frame_labels(6, [1, 4])
    assert y.tolist() == [0, 1, 0, 0, 1, 0]
    assert recipe.pos_weight(y) == pytest.approx(math.sqrt(4 / 2))
    assert recipe.pos_weight(torch.zeros(9)) == pytest.approx(3.0)  # no positives: sqrt(9 / max(1, 0))
    assert recipe.pos_weight(recipe.frame_labels(101, [0])) == 5.0  # sqrt(100) capped at 5
    # The loss is BCE over all frames of the batch, positives weighted by the batch's pos_weight.
    logits = [torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.5, 0.1])]
    labels = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0])]
    loss, pw = recipe.grounding_loss(logits, labels)
    assert pw == pytest.approx(2.0)
    x, t = torch.cat(logits), torch.cat(labels)
    manual = -(pw * t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x)).mean()
    assert float(loss) == pytest.approx(float(manual), rel=1e-6)


def test_schedule_and_groups() -> None:
    f = recipe.cosine_with_warmup(100, 0.05)
    assert f(0) == 0.0 and f(5) == 1.0 and f(100) == pytest.approx(0.0, abs=1e-12)
    assert f(3) == pytest.approx(0.6) and f(52) == pytest.approx(0.5 * (1 + math.cos(math.pi * 47 / 95)))
    cfg = small_config(Path("x"), Path("y"))
    model, _ = init_model(cfg)
    recipe.set_trainable(model)
    groups = recipe.param_groups(model, 2e-5, 2e-4)
    names = {g["name"]: g for g in groups}
    assert set(names) == {"llm+projector", "head"} and names["head"]["lr"] == 2e-4
    assert [id(p) for p in names["head"]["params"]] == [id(model.out_proj.weight), id(model.out_proj.bias)]
    assert not any(p.requires_grad for p in model.model.vision_tower.parameters())


def test_one_step_changes_exactly_the_trainable_parameters(data: Path, tmp_path: Path) -> None:
    # No warmup: HF's schedule gives the first step lr 0, which would change nothing.
    cfg = small_config(data, tmp_path / "run", max_steps=1, global_batch=2, warmup_ratio=0.0)
    before = {k: v.clone() for k, v in init_model(cfg)[0].state_dict().items()}
    final = Trainer(cfg).run()
    after = read_tensors(final)
    assert set(after) == set(before)
    for k, v in before.items():
        changed = not torch.equal(v, after[k])
        assert changed == (not k.startswith("model.vision_tower.")), k
    # The output is a core-layout checkpoint.
    model, tok = load_checkpoint(final)
    assert tok is not None and model.config.vision.image_size == 28


def test_grad_checkpointing_gives_the_same_step(data: Path, tmp_path: Path) -> None:
    a = Trainer(small_config(data, tmp_path / "a", max_steps=2, global_batch=2)).run()
    b = Trainer(small_config(data, tmp_path / "b", max_steps=2, global_batch=2, grad_checkpointing=True)).run()
    ta, tb = read_tensors(a), read_tensors(b)
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], rtol=1e-5, atol=1e-6)


def test_overfits_a_handful_of_samples(data: Path, tmp_path: Path) -> None:
    cfg = small_config(data, tmp_path / "run", max_steps=80, global_batch=6, micro_batch=6, warmup_ratio=0.0,
                       lr=5e-3, head_lr=1e-2, train_vision=True, tiny_overrides={
                           **small_config(data, tmp_path).tiny_overrides, "vision_min_num": 2})
    final = Trainer(cfg).run()
    losses = [m["loss"] for m in read_metrics(tmp_path / "run")]
    assert len(losses) == 80
    assert sum(losses[-5:]) / 5 < 0.35 * sum(losses[:5]) / 5
    # The trained model ranks the positives of its training samples first.
    model, tok = load_checkpoint(final)
    scorer = Scorer(final, model=model, tokenizer=tok, sampling=TRAIN_SAMPLING,
                    limits=Limits(max_sampled_frames=TRAIN_SAMPLING.num_frames))
    records, _ = parse_records(data)
    scored, bad = score_records(scorer, records, data.parent / "videos")
    assert not bad
    row = summarize(scored).rows["all"]
    assert row["recall@#pos"] >= 0.8 and row["recall@#pos"] > row["uniform_recall@#pos"] + 0.2


def test_resume_follows_the_same_curve(data: Path, tmp_path: Path) -> None:
    kw = dict(max_steps=6, global_batch=2)
    ref = Trainer(small_config(data, tmp_path / "ref", **kw)).run()
    # Interrupted after 3 steps of which only step 2 was saved; the rerun resumes from step 2.
    run = tmp_path / "cut"
    assert Trainer(small_config(data, run, save_every=2, stop_after=3, **kw)).run() == run
    step2 = run / "checkpoints" / "step-000002"
    assert not (run / "final").exists() and (step2 / "train_state" / "trainer_state.json").exists()
    load_checkpoint(step2)  # every saved step is also a plain core-layout checkpoint
    resumed = Trainer(small_config(data, run, save_every=2, **kw)).run()
    want = [m["loss"] for m in read_metrics(tmp_path / "ref")]
    got = [m["loss"] for m in read_metrics(run)]
    assert [m["step"] for m in read_metrics(run)] == [1, 2, 3, 4, 5, 6]
    assert got == pytest.approx(want, rel=1e-6, abs=1e-7)
    ta, tb = read_tensors(ref), read_tensors(resumed)
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], rtol=1e-6, atol=1e-7)
    # Only the newest `keep_checkpoints` step directories stay.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002", "step-000004"]


def test_bad_records_are_reported_and_skipped(data: Path, tmp_path: Path) -> None:
    root = data.parent
    good = json.loads(data.read_text())
    (root / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    bad = [
        {**good[0], "video": "missing.mp4"},
        {**good[0], "clip_num": [0, 999]},
        {**good[0], "video": "broken.mp4"},
        {**good[0], "question": "  "},
        {**good[0], "clip_num": "3"},
    ]
    ann = root / "with_bad.json"
    ann.write_text(json.dumps(good + bad))
    tr = Trainer(small_config(ann, tmp_path / "run", max_steps=1, global_batch=2, video_root=str(root / "videos")))
    tr.run()
    assert len(tr.samples) == len(good)
    skipped = [json.loads(x) for x in (tmp_path / "run" / "skipped_records.jsonl").read_text().splitlines()]
    reasons = {s["where"].split("[")[-1].split("]")[0]: s["reason"] for s in skipped}
    n = len(good)
    assert set(reasons) == {str(i) for i in range(n, n + 5)}
    assert "does not exist" in reasons[str(n)]
    assert "out of range" in reasons[str(n + 1)] and "999" in reasons[str(n + 1)]
    assert "unreadable" in reasons[str(n + 2)]
    assert "question" in reasons[str(n + 3)]
    assert "clip_num" in reasons[str(n + 4)]
    assert all(s["record"] for s in skipped)  # each report carries the record itself


def test_grouped_order_keeps_instructions_of_a_video_together() -> None:
    videos = [f"v{i % 5}" for i in range(23)]  # 5 videos with 4-5 instructions each
    order = grouped_epoch_order(videos, 3, seed=0, epoch=0)
    assert sorted(order) == list(range(23))  # a permutation: every sample once per epoch
    assert order == grouped_epoch_order(videos, 3, seed=0, epoch=0)  # same on every rank and after a resume
    assert order != grouped_epoch_order(videos, 3, seed=0, epoch=1)
    # Runs of one video, each at most 3 long; a video is split into ceil(n / 3) runs.
    runs = [1]
    for a, b in zip(order[:-1], order[1:], strict=True):
        runs[-1:] = [runs[-1] + 1] if videos[a] == videos[b] and runs[-1] < 3 else [runs[-1], 1]
    assert max(runs) <= 3 and len(runs) == sum(-(-videos.count(v) // 3) for v in set(videos))


def test_shared_video_runs_the_tower_once_with_the_same_result() -> None:
    cfg = small_config(Path("x"), Path("y"), train_vision=True)
    model, _ = init_model(cfg)
    recipe.set_trainable(model, train_vision=True)
    module = TrainModule(model, train_vision=True)
    S = model.config.vision.image_size
    px = torch.rand(4, 3, S, S)
    ids = [torch.tensor([5, 6, 7]), torch.tensor([8, 9])]
    calls = []
    hook = model.model.vision_tower.register_forward_hook(lambda *_: calls.append(1))
    shared = module([px, px], ids, [1, 1])
    assert len(calls) == 1
    separate = module([px, px.clone()], ids, [1, 1])
    assert len(calls) == 3
    hook.remove()
    for a, b in zip(shared, separate, strict=True):
        assert torch.equal(a, b)
    # Gradients flow to the tower through both uses.
    sum(x.sum() for x in shared).backward()
    assert model.model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight.grad is not None
