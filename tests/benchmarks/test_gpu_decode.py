"""The GPU check's decode sections without a GPU: each decoder's run in a child process of its own, so that one that
crashes or hangs (native NVDEC code) costs its own rows only, and the check's time budget. (Every line of both
sections runs in the bare-image rehearsal, tests/benchmarks/test_gpu_check.py.)"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.gpu import gpu_check, gpu_decode


def write_then_crash(spec: dict[str, Any]) -> None:
    """A decoder child that answers for the first clip, then dies of SIGABRT (as a native decoder's crash ends)."""
    first = next(iter(spec["clips"]))
    with open(spec["result"], "a") as f:
        f.write(json.dumps({"clip": first, "row": {"wall_s": 1.5}}) + "\n")
    os.abort()


def hang(spec: dict[str, Any]) -> None:
    time.sleep(120)


def check(tmp_path: Path, remaining: float | None) -> SimpleNamespace:
    return SimpleNamespace(cuda=False, tiny=True, work=tmp_path, remaining=lambda: remaining)


def test_a_decoder_that_crashes_its_process_costs_only_its_own_rows(tmp_path: Path) -> None:
    clips = {"a": tmp_path / "a.mp4", "b": tmp_path / "b.mp4"}
    rows = gpu_decode.in_child(check(tmp_path, None), "pynvvideocodec", clips, 2, tmp_path, target=write_then_crash)
    assert rows["a"] == {"wall_s": 1.5}  # what it wrote before the crash is kept
    assert rows["b"] == {"error": "pynvvideocodec on b: its process ended with -6 (signal SIGABRT)"}


def test_a_decoder_that_hangs_is_stopped_at_the_budget(tmp_path: Path) -> None:
    t0 = time.monotonic()
    rows = gpu_decode.in_child(check(tmp_path, 3.0), "dali_batch", {"a": tmp_path / "a.mp4"}, 2, tmp_path,
                               target=hang)
    assert rows == {"a": {"error": "dali_batch on a: no answer within 3 s: stopped"}}
    assert time.monotonic() - t0 < 60  # stopped, not waited out (the child sleeps 120 s)


def test_the_budget_says_what_can_still_start() -> None:
    now = [100.0]
    budget = gpu_check.Budget(60, clock=lambda: now[0])
    assert budget.affords(60) and not budget.affords(61)
    now[0] = 130.0
    assert budget.remaining() == 30 and budget.affords(30) and not budget.affords(31)
    unlimited = gpu_check.Budget(None)
    assert unlimited.remaining() is None and unlimited.affords(1e9)


def test_a_section_the_budget_cannot_hold_is_not_started_and_says_why(tmp_path: Path) -> None:
    args = SimpleNamespace(tiny=True, device="cpu", out=tmp_path / "out", workdir=tmp_path / "work", budget_s=20)
    now = [0.0]
    c = gpu_check.Check(args, "python3", budget=gpu_check.Budget(20, clock=lambda: now[0]))
    ran = []
    c.env = lambda: ran.append("env") or {"ok": True, "summary": "ran"}  # type: ignore[method-assign]
    c.hotpath = lambda: ran.append("hotpath") or {"ok": True}  # type: ignore[method-assign]
    c.run("env")  # 5 s expected, 20 left
    now[0] = 5.0
    c.run("hotpath")  # 30 s expected, 15 left: not started
    assert ran == ["env"]
    sections = json.loads((tmp_path / "out" / "gpu_check.json").read_text())["sections"]
    assert sections["env"]["status"] == "pass" and sections["hotpath"]["status"] == "skip"
    assert sections["hotpath"]["skipped"] == "not started: 15 s of the 20 s budget left, the section takes about 30 s"


def test_served_e2e_serves_its_largest_clip_and_its_largest_burst(tmp_path: Path) -> None:
    """The 10-minute 1080p clip (354 MB) goes whole as bytes: the server it starts must hold a request that large
    (the default is 64 MiB), read as `videoitg serve` reads its flags."""
    from videoitg.commands.cli import build_parser
    from videoitg.request.limits import Limits, served_defaults

    big, small = tmp_path / "big.mp4", tmp_path / "small.mp4"
    with open(big, "wb") as f:
        f.truncate(354_248_180)
    small.write_bytes(b"x")
    flags = gpu_decode.serve_flags(True, tmp_path / "ckpt", [small, big])
    args = build_parser(["serve", *flags]).parse_args(["serve", *flags])
    served = Limits.from_args(args, base=served_defaults())
    assert served.decode.max_bytes >= 354_248_180 > served_defaults().decode.max_bytes
    # every request of the largest burst admitted at once (past max_in_flight a request is refused)
    assert served.max_in_flight >= max(gpu_decode.BURSTS) > served_defaults().max_in_flight


def test_burst_copies_are_the_same_frames_under_other_digests(tmp_path: Path) -> None:
    """A burst's videos: the clip remuxed with a comment of its own each, so n requests are n cold videos (one
    video's concurrent requests share one computation on the server), with the clip's own packets."""
    import hashlib

    import av

    from videoitg.synthetic.sample import sample_video

    clip = Path(sample_video()[0])
    copies = gpu_decode.distinct_copies(clip, 3, tmp_path / "copies")
    assert len({hashlib.sha256(c.read_bytes()).hexdigest() for c in [clip, *copies]}) == 4

    def packets(path: Path) -> list[bytes]:
        with av.open(str(path)) as c:
            return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]

    assert all(packets(c) == packets(clip) for c in copies)
    assert gpu_decode.distinct_copies(clip, 3, tmp_path / "copies") == copies  # made once
