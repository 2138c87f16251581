"""The trained tiny checkpoint shipped in videoitg/assets/tiny-videoitg grounds the demo clip."""

from __future__ import annotations

from pathlib import Path

import videoitg
from videoitg.model.checkpoint import load_checkpoint
from videoitg.pipeline.scorer import Scorer
from videoitg.synthetic.task import clip_num, instruction_labels, make_sample_video, render, sample_scene

SHIPPED = Path(videoitg.__file__).parent / "assets" / "tiny-videoitg"  # `python -m videoitg.train.synthetic_run --ship`


def test_shipped_checkpoint_grounds_the_sample_clip(tmp_path: Path) -> None:
    size = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert size < 5 * 2**20, f"shipped checkpoint is {size} bytes"
    model, tok = load_checkpoint(SHIPPED)
    assert model.config.attention == "bidirectional"  # the default must be the released variant
    info = make_sample_video(tmp_path / "sample.mp4")
    res = Scorer(SHIPPED, model=model, tokenizer=tok).score(info["path"], info["instruction"])
    positives = set(info["clip_num"])  # the 8 seconds the red circle is on screen
    top = set(res.top_k_positions(len(positives)))
    # The shipped model gets all 8 (RESULTS.md: held-out semantic recall@#pos 0.95); uniform gets 2 or 3.
    assert len(top & positives) >= len(positives) - 1
    # The sigmoid scores say so too: positives above 0.5 on average, the typical other frame below.
    neg = sorted(res.scores[i] for i in range(len(res.scores)) if i not in positives)
    assert sum(res.scores[i] for i in positives) / len(positives) > 0.5 > neg[len(neg) // 2]
    # It reads the instruction: asked for a distractor, it ranks that object's seconds first instead.
    scorer = Scorer(SHIPPED, model=model, tokenizer=tok)
    scene = sample_scene()
    rendered = render(scene)
    for colour, shape in (("blue", "square"), ("green", "triangle")):
        want = set(clip_num(instruction_labels(scene, rendered, "semantic", colour=colour, shape=shape), scene.fps))
        got = scorer.score(info["path"], f"When is the {colour} {shape} visible?").top_k_positions(len(want))
        assert len(set(got) & want) >= len(want) - 1, (colour, shape, got, sorted(want))
