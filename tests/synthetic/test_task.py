"""The synthetic grounding data: labels agree with the pixels, both codecs decode, output is deterministic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest

from videoitg.errors import InputError
from videoitg.sampling import sample_frame_indices
from videoitg.synthetic import task as syn


def _decode(path: Path) -> tuple[list[np.ndarray], str, float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        return frames, s.codec_context.name, float(s.average_rate)


def _colour_pixels(frame: np.ndarray, colour: str) -> int:
    ref = np.array(syn.COLOURS[colour], int)
    return int((np.abs(frame.astype(int) - ref).max(axis=-1) < 40).sum())


@pytest.mark.parametrize("suffix,codec", [(".mp4", "h264"), (".webm", "vp9")])
def test_sample_video_labels_match_decoded_pixels(tmp_path: Path, suffix: str, codec: str) -> None:
    info = syn.make_sample_video(tmp_path / f"sample{suffix}")
    frames, name, fps = _decode(Path(info["path"]))
    assert name == codec and fps == info["fps"] == 4 and len(frames) == info["num_frames"] == 96
    assert 20 <= info["duration_s"] <= 30
    # The red circle is on screen exactly in the labelled frames (checked on the decoded video).
    red = np.array([_colour_pixels(f, "red") > 100 for f in frames])
    assert red.tolist() == info["labels"]
    assert info["segments"] == [[8.0, 16.0]]
    assert info["clip_num"] == list(range(8, 16))
    sampled = sample_frame_indices(96, 4, syn.TRAIN_SAMPLING)
    assert info["positive_frames"] == [sampled[i] for i in info["clip_num"]]


def test_deterministic_bytes_and_scenes(tmp_path: Path) -> None:
    a = syn.write_dataset(tmp_path / "a", 3, seed=7)
    b = syn.write_dataset(tmp_path / "b", 3, seed=7)
    c = syn.write_dataset(tmp_path / "c", 3, seed=8)
    assert a.read_text() == b.read_text() != c.read_text()
    for v in sorted((tmp_path / "a" / "videos").iterdir()):
        other = tmp_path / "b" / "videos" / v.name
        assert hashlib.sha256(v.read_bytes()).digest() == hashlib.sha256(other.read_bytes()).digest()


def test_dataset_layout_and_label_kinds(tmp_path: Path) -> None:
    ann = syn.write_dataset(tmp_path, 6, seed=3, codec="vp9", instructions_per_video=8)
    recs = json.loads(ann.read_text())
    assert {r["type"] for r in recs} == set(syn.INSTRUCTION_KINDS)
    for r in recs:
        assert (tmp_path / "videos" / r["video"]).suffix == ".webm"
        assert set(r) >= {"video", "question", "clip_num"}
        t = len(sample_frame_indices(r["num_frames"], r["fps"], syn.TRAIN_SAMPLING))
        assert r["clip_num"] and all(0 <= i < t for i in r["clip_num"])
        assert r["clip_num"] == sorted(set(r["clip_num"]))
        # Every positive 1-fps frame lies inside a labelled moment.
        for i in r["clip_num"]:
            sec = sample_frame_indices(r["num_frames"], r["fps"], syn.TRAIN_SAMPLING)[i] / r["fps"]
            assert any(s <= sec < e for s, e in r["segments"])


def test_motion_labels_follow_velocity() -> None:
    obj = syn.ShapeObject("red", "square", 10.0, 1.0, 5.0, 60.0, 60.0, 10.0,
                          [syn.Segment(1.0, 3.0, "left"), syn.Segment(3.0, 5.0, "up")])
    other = syn.ShapeObject(
        "blue", "square", 10.0, 0.0, 6.0, 20.0, 110.0, 10.0, [syn.Segment(0.0, 6.0, "right")]
    )
    scene = syn.Scene(width=128, height=128, fps=2, num_frames=12, objects=[obj, other])
    r = syn.render(scene)
    t = np.arange(12) / 2
    left_red = syn.instruction_labels(
        scene, r, "semantic_motion", colour="red", shape="square", direction="left"
    )
    assert left_red.tolist() == ((t >= 1) & (t < 3)).tolist()
    # "motion" names only the kind: any square moving right counts (the blue one, all its life).
    right = syn.instruction_labels(scene, r, "motion", shape="square", direction="right")
    assert right.tolist() == (t < 6).tolist()
    up = syn.instruction_labels(scene, r, "motion", shape="square", direction="up")
    assert up.tolist() == ((t >= 3) & (t < 5)).tolist()
    non_clue = syn.instruction_labels(scene, r, "non_clue")
    assert non_clue.all()
    # Position after 2 s left then 1 s up.
    x, y, d = obj.state(4.0)
    assert (x, y, d) == (40.0, 50.0, "up")


def test_occluded_object_is_not_visible() -> None:
    still = [syn.Segment(0.0, 2.0, "still")]
    under = syn.ShapeObject("red", "circle", 10.0, 0.0, 2.0, 64.0, 64.0, 0.0, still)
    late = [syn.Segment(1.0, 2.0, "still")]
    over = syn.ShapeObject("blue", "square", 14.0, 1.0, 2.0, 64.0, 64.0, 0.0, late)
    scene = syn.Scene(width=128, height=128, fps=2, num_frames=4, objects=[under, over])
    r = syn.render(scene)
    assert r.visible[:, 0].tolist() == [True, True, False, False]


def test_random_scenes_stay_in_frame() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        scene = syn.random_scene(rng)
        for o in scene.objects:
            for k in range(scene.num_frames):
                st = o.state(k / scene.fps)
                if st is not None:
                    assert o.radius - 1e-6 <= st[0] <= scene.width - o.radius + 1e-6
                    assert o.radius - 1e-6 <= st[1] <= scene.height - o.radius + 1e-6


def test_encoders_present() -> None:
    enc = syn.describe_encoders()
    assert enc["libx264"] and enc["libvpx-vp9"]


def test_bad_codec_and_kind(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        syn.encode_video(np.zeros((2, 16, 16, 3), np.uint8), tmp_path / "x.avi", 2, codec="mpeg2")
    with pytest.raises(InputError):
        syn.write_dataset(tmp_path, 1, kinds=["weird"])
