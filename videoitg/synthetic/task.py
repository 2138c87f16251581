"""Synthetic grounding data: short videos of coloured shapes that appear, move and vanish at known times,
with instructions of the paper's four kinds and exact per-frame labels.

Why it exists: the training code needs a task whose answer is known exactly to prove that the pipeline learns
without the released VideoITG-40K data or a 7B model, the tests need clips that a laptop trains on in minutes, and
the demo needs a clip whose answer a person can check by eye.

Scene model (all in pixels and seconds):
- every object has a colour, a kind (circle/square/triangle), a radius, an appear time and a vanish time;
- while present it follows motion segments (still, left, right, up, down) at a constant speed, chosen so
  that it never leaves the frame;
- objects are drawn in a fixed order, and labels come from the rendered pixels: an object counts as visible
  in a frame only if at least `VISIBLE_FRACTION` of its own area is not covered by later objects.

Instruction kinds and their positive frames (`labels` are per original frame of the encoded video):
- semantic         "When is the red circle visible?"      frames where that object is visible
- motion           "When does the square move left?"      frames where any visible square moves left
- semantic_motion  "When does the red circle move left?"  frames where that object is visible and moves left
- non_clue         "What happens in this video?"          frames where any shape is visible (the frames that
                                                          carry content; empty frames carry none)
A frame "moves left" when the object's velocity from that frame to the next points left.

Encoders: the PyAV wheel (av 18) ships libx264 (H.264) and libvpx-vp9 (VP9); it has no libopenh264.
Encoding uses one thread so the bytes are reproducible for a given seed and PyAV build.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from tqdm import tqdm

from videoitg.errors import InputError
from videoitg.sampling import SamplingParams, sample_frame_indices

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
}
KINDS = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[float, float]] = {
    "still": (0.0, 0.0),
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}
MOVES = ("left", "right", "up", "down")
INSTRUCTION_KINDS = ("semantic", "motion", "semantic_motion", "non_clue")
VISIBLE_FRACTION = 0.3
BACKGROUND = (24, 24, 32)
# Frames of the training rule (1 fps, at most 1024 frames): the sampling clip_num indexes into.
TRAIN_SAMPLING = SamplingParams(num_frames=1024, target_fps=1.0, rule="train")
OBJECT_NAMES = tuple(f"{c} {k}" for c in COLOURS for k in KINDS)
FRAME_OBJECTS = "frame_objects.json"  # written next to the annotations by write_dataset

Codec = Literal["h264", "vp9"]
CODECS: dict[str, tuple[str, str]] = {"h264": ("libx264", ".mp4"), "vp9": ("libvpx-vp9", ".webm")}

_SEMANTIC_TEMPLATES = (
    "When is the {colour} {kind} visible?",
    "Find the frames that show the {colour} {kind}.",
    "When does the {colour} {kind} appear on screen?",
)
_MOTION_TEMPLATES = ("When does the {kind} move {dir}?", "Find the moments when a {kind} moves {dir}.")
_SEMANTIC_MOTION_TEMPLATES = (
    "When does the {colour} {kind} move {dir}?",
    "Find the frames where the {colour} {kind} is moving {dir}.",
)
_NON_CLUE_TEMPLATES = ("What happens in this video?", "Summarize the video.", "Describe the video in detail.")


@dataclass
class Segment:
    start: float  # seconds
    end: float
    direction: str  # a key of DIRECTIONS


@dataclass
class ShapeObject:
    colour: str
    kind: str
    radius: float
    appear: float  # seconds, inclusive
    vanish: float  # seconds, exclusive
    x0: float  # centre at `appear`
    y0: float
    speed: float  # pixels per second while moving
    segments: list[Segment] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"

    def state(self, t: float) -> tuple[float, float, str] | None:
        """Centre and motion direction at time t, or None when the object is absent."""
        if not self.appear <= t < self.vanish:
            return None
        x, y = self.x0, self.y0
        for seg in self.segments:
            dx, dy = DIRECTIONS[seg.direction]
            if t < seg.end:
                dt = t - seg.start
                return x + dx * self.speed * dt, y + dy * self.speed * dt, seg.direction
            dt = seg.end - seg.start
            x, y = x + dx * self.speed * dt, y + dy * self.speed * dt
        return x, y, "still"


@dataclass
class Scene:
    width: int
    height: int
    fps: int
    num_frames: int
    objects: list[ShapeObject]

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- scene generation -------------------------------------------------------------------------------------
def random_scene(
    rng: np.random.Generator,
    *,
    width: int = 128,
    height: int = 128,
    fps: int = 4,
    duration_s: tuple[int, int] = (20, 30),
    num_objects: tuple[int, int] = (2, 4),
) -> Scene:
    """A random scene: distinct (colour, kind) objects with random lifetimes and motion."""
    duration = int(rng.integers(duration_s[0], duration_s[1] + 1))
    n = int(rng.integers(num_objects[0], num_objects[1] + 1))
    combos = [(c, k) for c in COLOURS for k in KINDS]
    picks = rng.choice(len(combos), size=n, replace=False)
    scale = min(width, height) / 128.0
    objects = []
    for p in picks:
        colour, kind = combos[int(p)]
        radius = float(rng.uniform(9.0, 13.0) * scale)
        # Whole seconds for lifetimes keep the 1-fps labels away from half-visible boundary frames.
        life = int(rng.integers(5, max(6, duration - 2) + 1))
        life = min(life, duration)
        appear = int(rng.integers(0, duration - life + 1))
        vanish = appear + life
        speed = float(rng.uniform(8.0, 12.0) * scale)
        x0 = float(rng.uniform(radius + 1, width - radius - 1))
        y0 = float(rng.uniform(radius + 1, height - radius - 1))
        segments = _random_segments(rng, appear, vanish, x0, y0, speed, radius, width, height)
        objects.append(ShapeObject(colour, kind, radius, appear, vanish, x0, y0, speed, segments))
    return Scene(width=width, height=height, fps=fps, num_frames=duration * fps, objects=objects)


def _random_segments(
    rng: np.random.Generator, start: float, end: float, x: float, y: float, speed: float, radius: float,
    width: int, height: int,
) -> list[Segment]:
    segs: list[Segment] = []
    t = start
    while t < end:
        length = float(min(end - t, int(rng.integers(2, 7))))
        feasible = []
        for d in DIRECTIONS:
            dx, dy = DIRECTIONS[d]
            nx, ny = x + dx * speed * length, y + dy * speed * length
            if radius <= nx <= width - radius and radius <= ny <= height - radius:
                feasible.append(d)
        # "still" is always feasible; moving is preferred so motion instructions have positives.
        weights = np.array([0.4 if d == "still" else 1.0 for d in feasible])
        d = feasible[int(rng.choice(len(feasible), p=weights / weights.sum()))]
        dx, dy = DIRECTIONS[d]
        x, y = x + dx * speed * length, y + dy * speed * length
        segs.append(Segment(t, t + length, d))
        t += length
    return segs


# ---- rendering --------------------------------------------------------------------------------------------
def _shape_mask(kind: str, cx: float, cy: float, r: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    if kind == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    if kind == "square":
        h = r * 0.9
        return (np.abs(xs - cx) <= h) & (np.abs(ys - cy) <= h)
    if kind == "triangle":
        # Upward isosceles triangle inscribed in the circle of radius r.
        top, bottom = cy - r, cy + r * 0.7
        half = (ys - top) / (bottom - top) * r
        return (ys >= top) & (ys <= bottom) & (np.abs(xs - cx) <= half)
    raise ValueError(f"unknown shape kind {kind!r}")


@dataclass
class Rendered:
    frames: np.ndarray  # [N, H, W, 3] uint8
    visible: np.ndarray  # [N, num_objects] bool
    direction: list[list[str | None]]  # [N][num_objects]: motion direction when visible, else None


def render(scene: Scene) -> Rendered:
    """Draw every frame and compute, from the pixels, which objects are visible."""
    h, w = scene.height, scene.width
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    frames = np.empty((scene.num_frames, h, w, 3), np.uint8)
    visible = np.zeros((scene.num_frames, len(scene.objects)), bool)
    direction: list[list[str | None]] = []
    owner = np.empty((h, w), np.int16)
    for i in range(scene.num_frames):
        t = i / scene.fps
        frame = frames[i]
        frame[:] = BACKGROUND
        owner[:] = -1
        areas = {}
        dirs: list[str | None] = [None] * len(scene.objects)
        for j, obj in enumerate(scene.objects):
            st = obj.state(t)
            if st is None:
                continue
            cx, cy, d = st
            m = _shape_mask(obj.kind, cx, cy, obj.radius, xs, ys)
            frame[m] = COLOURS[obj.colour]
            owner[m] = j
            areas[j] = int(m.sum())
            dirs[j] = d
        for j, area in areas.items():
            if area > 0 and (owner == j).sum() >= VISIBLE_FRACTION * area:
                visible[i, j] = True
            else:
                dirs[j] = None
        direction.append(dirs)
    return Rendered(frames=frames, visible=visible, direction=direction)


# ---- encoding ---------------------------------------------------------------------------------------------
def encode_video(frames: np.ndarray, path: str | Path, fps: int, codec: Codec = "h264") -> Path:
    """Write RGB frames [N, H, W, 3] uint8 as H.264 (.mp4) or VP9 (.webm)."""
    if codec not in CODECS:
        raise InputError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    encoder, _ = CODECS[codec]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n, h, w, _ = frames.shape
    _check_sizes(w, h)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(encoder, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.thread_count = 1  # reproducible bytes
        if codec == "h264":
            stream.options = {"preset": "veryfast", "crf": "18", "threads": "1"}
        else:
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0", "threads": "1"}
        for i in range(n):
            vf = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            vf.pts = i
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


# ---- instructions and labels ------------------------------------------------------------------------------
@dataclass
class Instruction:
    kind: str  # one of INSTRUCTION_KINDS
    text: str
    labels: np.ndarray  # [num_frames] bool, per original frame


def instruction_labels(scene: Scene, rendered: Rendered, kind: str, **q: str) -> np.ndarray:
    """Exact per-frame labels of one instruction (q: colour / kind / direction as the instruction needs)."""
    objs = scene.objects
    if kind == "semantic":
        j = _find(objs, q["colour"], q["shape"])
        return rendered.visible[:, j].copy()
    if kind == "semantic_motion":
        j = _find(objs, q["colour"], q["shape"])
        return np.array([d[j] == q["direction"] for d in rendered.direction])
    if kind == "motion":
        js = [j for j, o in enumerate(objs) if o.kind == q["shape"]]
        return np.array([any(d[j] == q["direction"] for j in js) for d in rendered.direction])
    if kind == "non_clue":
        return rendered.visible.any(axis=1)
    raise ValueError(f"unknown instruction kind {kind!r}")


def _find(objs: Sequence[ShapeObject], colour: str, shape: str) -> int:
    for j, o in enumerate(objs):
        if o.colour == colour and o.kind == shape:
            return j
    raise ValueError(f"no {colour} {shape} in the scene")


def candidate_instructions(scene: Scene, rendered: Rendered, rng: np.random.Generator) -> list[Instruction]:
    """Every answerable instruction of the scene (at least one positive frame), one template each."""

    def pick(templates: Sequence[str]) -> str:
        return templates[int(rng.integers(len(templates)))]

    out: list[Instruction] = []
    for o in scene.objects:
        lab = instruction_labels(scene, rendered, "semantic", colour=o.colour, shape=o.kind)
        text = pick(_SEMANTIC_TEMPLATES).format(colour=o.colour, kind=o.kind)
        out.append(Instruction("semantic", text, lab))
        for d in MOVES:
            lab = instruction_labels(
                scene, rendered, "semantic_motion", colour=o.colour, shape=o.kind, direction=d
            )
            text = pick(_SEMANTIC_MOTION_TEMPLATES).format(colour=o.colour, kind=o.kind, dir=d)
            out.append(Instruction("semantic_motion", text, lab))
    for shape in sorted({o.kind for o in scene.objects}):
        for d in MOVES:
            lab = instruction_labels(scene, rendered, "motion", shape=shape, direction=d)
            out.append(Instruction("motion", pick(_MOTION_TEMPLATES).format(kind=shape, dir=d), lab))
    lab = instruction_labels(scene, rendered, "non_clue")
    out.append(Instruction("non_clue", pick(_NON_CLUE_TEMPLATES), lab))
    return [ins for ins in out if ins.labels.any()]


def sampled_positions(num_frames: int, fps: float, params: SamplingParams = TRAIN_SAMPLING) -> list[int]:
    """Original frame numbers of the sampled frames (what `clip_num` indexes into)."""
    return sample_frame_indices(num_frames, fps, params)


def clip_num(labels: np.ndarray, fps: float, params: SamplingParams = TRAIN_SAMPLING) -> list[int]:
    """Indices into the sampled frames whose original frame is positive."""
    idx = sampled_positions(len(labels), fps, params)
    return [i for i, f in enumerate(idx) if labels[f]]


def label_segments(labels: np.ndarray, fps: float) -> list[list[float]]:
    """Contiguous positive runs as [start_s, end_s] (end = one frame after the last positive frame)."""
    segs: list[list[float]] = []
    start = None
    for i, v in enumerate(list(labels) + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            segs.append([round(start / fps, 6), round(i / fps, 6)])
            start = None
    return segs


# ---- datasets in the VideoITG-40K layout ------------------------------------------------------------------
def make_video(
    path: str | Path, seed: int, codec: Codec = "h264", **scene_kwargs: Any
) -> tuple[Scene, Rendered, Path]:
    rng = np.random.default_rng(seed)
    scene = random_scene(rng, **scene_kwargs)
    rendered = render(scene)
    return scene, rendered, encode_video(rendered.frames, path, scene.fps, codec)


def write_dataset(
    out_dir: str | Path,
    num_videos: int,
    *,
    seed: int = 0,
    codec: Codec = "h264",
    instructions_per_video: int = 6,
    kinds: Iterable[str] = INSTRUCTION_KINDS,
    annotation_name: str = "annotations.json",
    progress: bool = False,
    **scene_kwargs: Any,
) -> Path:
    """Write `num_videos` clips under `out_dir/videos/` and a JSON list of records to
    `out_dir/annotation_name`.

    `out_dir/frame_objects.json` maps each video to the names of the objects visible in each sampled frame.
    Each record has the VideoITG-40K fields `video` (relative to `out_dir/videos`), `question`, `clip_num`
    (indices into the 1-fps training sampling), plus `type` (instruction kind), `segments` (positive moments
    in seconds, for moment-level evaluation), `fps` and `num_frames`. Instructions are drawn so every kind
    present in `kinds` is represented in each video when it has an answerable instruction of that kind.
    Returns the annotation path.
    """
    kinds = tuple(kinds)
    for k in kinds:
        if k not in INSTRUCTION_KINDS:
            raise InputError(f"unknown instruction kind {k!r}; choose from {INSTRUCTION_KINDS}")
    out_dir = Path(out_dir)
    video_dir = out_dir / "videos"
    ext = CODECS[codec][1] if codec in CODECS else ""
    seeds = np.random.SeedSequence(seed).spawn(num_videos)
    records: list[dict[str, Any]] = []
    frame_objects: dict[str, list[list[str]]] = {}
    it: Iterable[int] = range(num_videos)
    if progress:
        it = tqdm(it, desc="synth videos", unit="video")
    for v in it:
        vseed = int(seeds[v].generate_state(1)[0])
        name = f"synth_{v:05d}{ext}"
        scene, rendered, _ = make_video(video_dir / name, vseed, codec, **scene_kwargs)
        frame_objects[name] = visible_objects(scene, rendered)
        rng = np.random.default_rng(vseed + 1)
        cands = [c for c in candidate_instructions(scene, rendered, rng) if c.kind in kinds]
        chosen = _choose_instructions(cands, kinds, instructions_per_video, rng)
        for ins in chosen:
            records.append(
                {
                    "video": name,
                    "question": ins.text,
                    "clip_num": clip_num(ins.labels, scene.fps),
                    "type": ins.kind,
                    "segments": label_segments(ins.labels, scene.fps),
                    "fps": scene.fps,
                    "num_frames": scene.num_frames,
                }
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    ann = out_dir / annotation_name
    ann.write_text(json.dumps(records, indent=1) + "\n")
    (out_dir / FRAME_OBJECTS).write_text(json.dumps(frame_objects) + "\n")
    return ann


def visible_objects(scene: Scene, rendered: Rendered) -> list[list[str]]:
    """Names ("red circle") of the objects visible in each frame of the training sampling (what clip_num
    indexes): the per-frame tags the tiny vision tower is pretrained on."""
    return [[o.name for j, o in enumerate(scene.objects) if rendered.visible[f, j]]
            for f in sampled_positions(scene.num_frames, scene.fps)]


def _choose_instructions(
    cands: list[Instruction], kinds: tuple[str, ...], n: int, rng: np.random.Generator
) -> list[Instruction]:
    by_kind = {k: [c for c in cands if c.kind == k] for k in kinds}
    chosen: list[Instruction] = []
    # Round-robin over kinds so each kind gets a fair share regardless of how many candidates it has.
    while len(chosen) < n and any(by_kind.values()):
        for k in kinds:
            pool = by_kind[k]
            if pool and len(chosen) < n:
                chosen.append(pool.pop(int(rng.integers(len(pool)))))
    return chosen


# ---- the fixed demo clip ----------------------------------------------------------------------------------
SAMPLE_INSTRUCTION = "When is the red circle visible?"


def sample_scene() -> Scene:
    """A hand-written 24 s scene at 4 fps, 128x128: the red circle is on screen from 8 s to 16 s only, while a
    blue square and a green triangle (distractors) are on screen at other times, partly during its lifetime,
    without ever overlapping it."""
    objs = [
        ShapeObject("blue", "square", 12.0, 0.0, 12.0, 20.0, 30.0, 10.0,
                    [Segment(0.0, 5.0, "right"), Segment(5.0, 12.0, "down")]),
        ShapeObject("red", "circle", 12.0, 8.0, 16.0, 110.0, 40.0, 10.0,
                    [Segment(8.0, 12.0, "left"), Segment(12.0, 16.0, "down")]),
        ShapeObject("green", "triangle", 12.0, 14.0, 24.0, 30.0, 100.0, 10.0,
                    [Segment(14.0, 19.0, "still"), Segment(19.0, 24.0, "right")]),
    ]
    return Scene(width=128, height=128, fps=4, num_frames=96, objects=objs)


def make_sample_video(path: str | Path, codec: Codec | None = None) -> dict[str, Any]:
    """Write the fixed demo clip (codec from the suffix: .webm -> VP9, otherwise H.264) and describe it.

    Returns a dict with `path`, `instruction`, `fps`, `num_frames`, `duration_s`, `labels` (per original
    frame), `clip_num` (positive indices into the 1-fps sampling), `positive_frames` (original frame numbers
    of those), `segments` (seconds) and `scene`.
    """
    path = Path(path)
    if codec is None:
        codec = "vp9" if path.suffix.lower() == ".webm" else "h264"
    scene = sample_scene()
    rendered = render(scene)
    encode_video(rendered.frames, path, scene.fps, codec)
    labels = instruction_labels(scene, rendered, "semantic", colour="red", shape="circle")
    sampled = sampled_positions(scene.num_frames, scene.fps)
    pos = clip_num(labels, scene.fps)
    return {
        "path": str(path),
        "instruction": SAMPLE_INSTRUCTION,
        "codec": codec,
        "fps": scene.fps,
        "num_frames": scene.num_frames,
        "duration_s": scene.duration,
        "labels": [bool(v) for v in labels],
        "sampled_frames": sampled,
        "clip_num": pos,
        "positive_frames": [sampled[i] for i in pos],
        "segments": label_segments(labels, scene.fps),
        "scene": scene.to_dict(),
    }


def _check_sizes(width: int, height: int) -> None:
    # yuv420p needs even sizes.
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise InputError(f"frame size must be even and >= 16, got {width}x{height}")


def describe_encoders() -> dict[str, bool]:
    """Which of the encoders this module can use are present in the installed PyAV build."""
    out = {}
    for name in ("libx264", "libvpx-vp9", "libopenh264"):
        try:
            av.codec.Codec(name, "w")
            out[name] = True
        except Exception:  # PyAV raises UnknownCodecError (its own subclass) or ValueError by version
            out[name] = False
    return out


__all__ = [
    "COLOURS", "KINDS", "INSTRUCTION_KINDS", "Scene", "ShapeObject", "Segment", "random_scene", "render",
    "encode_video", "instruction_labels", "candidate_instructions", "clip_num", "label_segments",
    "write_dataset", "visible_objects", "OBJECT_NAMES", "FRAME_OBJECTS", "make_sample_video", "sample_scene",
    "describe_encoders",
]
