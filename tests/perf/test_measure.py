"""`videoitg perf` against the real server and the real perf_analyzer: each level's time split by step from the
server's own statistics, a step made slower by its input showing as that step growing, the numbers drawn being the
ones written, and two real runs compared by what differs in their deployments."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from tests.support.server import skip_without_tritonserver
from tests.support.video import write_clip
from videoitg.commands.cli import main
from videoitg.repository.generator import RepoSpec

pytestmark = pytest.mark.server

skip_without_tritonserver()
COLD = 4  # cold requests per level


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """10 s of 96x64 (10 sampled frames), the same at 960x544 (a costlier decode, the same frames for the towers),
    and 200 s of 96x64 (200 sampled frames: more work for the towers)."""
    d = tmp_path_factory.mktemp("perf-clips")
    return {"small": write_clip(d / "small.mp4", frames=20, fps=2, width=96, height=64, gop=20),
            "large": write_clip(d / "large.mp4", frames=20, fps=2, width=1920, height=1088, gop=20),
            "long": write_clip(d / "long.mp4", frames=400, fps=2, width=96, height=64, gop=20)}


def measured(server, clip: Path, out: Path, *more: str) -> dict:
    assert main(["perf", str(clip), "--server", server.grpc_url, "--metrics", server.metrics_url, "--concurrency",
                 "1", "--cold-requests", str(COLD), "--out", str(out), *more]) == 0
    return json.loads((out / "perf.json").read_text())


def compute_ms(report: dict, step: str) -> float:
    """A step's compute per request (its queue also holds the wait of a streamed video's later chunks)."""
    return report["series"]["cold"]["rows"][0]["split"]["steps"][f"videoitg_{step}"]["compute_ms"]


@pytest.fixture(scope="module")
def runs(cpu_server, clips, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    base = tmp_path_factory.mktemp("perf-runs")
    return {k: (base / k, measured(cpu_server, clip, base / k)) for k, clip in clips.items()}


def test_each_level_is_split_by_step_over_exactly_its_requests(runs) -> None:
    for _, report in runs.values():
        (row,) = report["series"]["cold"]["rows"]
        split = row["split"]
        assert split["requests"] == COLD  # the statistics' span holds the measured requests, no warm-up
        assert set(split["steps"]) == {"videoitg_decode", "videoitg_vision", "videoitg_grounding"}
        assert all(t["compute_ms"] > 0 and t["calls_per_request"] >= 1 for t in split["steps"].values())
        # a cold request's time is mostly its steps' (the rest: the top-level model, the front, the network); the
        # steps' work exceeds the latency only where steps ran at once, and only the decode, streaming its 5-frame
        # chunks, runs beside the vision step: by at most the smaller of the two
        compute = {m: t["compute_ms"] for m, t in split["steps"].items()}
        assert split["steps_ms"] >= 0.5 * row["mean_ms"] and split["other_ms"] <= 0.5 * row["mean_ms"]
        assert sum(compute.values()) <= row["mean_ms"] + min(compute["videoitg_decode"],
                                                             compute["videoitg_vision"]) * 1.05


def test_a_step_made_slower_by_its_input_shows_as_that_step_growing(runs) -> None:
    small, large, long = (runs[k][1] for k in ("small", "large", "long"))
    # 340x the pixels, the same sampled frames: the decode grows, far more than the vision tower (at 80x the pixels the
    # decode grew 4x on an idle machine and 1.8x on a busy one: the small clip's decode is mostly fixed costs)
    # (the vision step's own few ms grow too where the larger decode runs beside it on the same cores: 1.5x seen)
    decode = compute_ms(large, "decode") / compute_ms(small, "decode")
    vision = compute_ms(large, "vision") / compute_ms(small, "vision")
    assert decode > 2 and decode > 2 * vision, (decode, vision)
    # 20x the sampled frames: the vision tower grows (about 50x measured)
    assert compute_ms(long, "vision") > 5 * compute_ms(small, "vision")


def test_the_numbers_drawn_are_the_ones_written(runs) -> None:
    out, report = runs["small"]
    (row,) = report["series"]["cold"]["rows"]
    (line,) = list(csv.DictReader((out / "perf.csv").open()))
    assert line["Series"] == "cold" and int(line["Concurrency"]) == row["concurrency"] == 1
    assert [int(line[f"p{p} latency"]) / 1e3 for p in (50, 95, 99)] == [row["p50_ms"], row["p95_ms"], row["p99_ms"]]
    assert (out / "perf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = report["measured"]
    assert m["server"]["tritonserver"] == "2.51.0" and m["machine"]["cores"] >= 1
    assert m["deployment"]["videoitg"]["parameters"]["checkpoint"] == "default"
    assert m["deployment"]["videoitg_grounding"]["parameters"]["checkpoint_identity"]
    assert m["videos"][0] | {"path": ""} == {"path": "", "bytes": m["videos"][0]["bytes"], "duration_s": 10.0,
                                            "width": 96, "height": 64, "codec": "h264", "fps": 2.0, "frames": 20}


@pytest.fixture(scope="module")
def no_cache_server(shared_servers):
    yield from shared_servers.hold(RepoSpec(target="cpu", cache_bytes=0))


def test_compare_labels_two_real_runs_by_their_deployments(runs, no_cache_server, clips, tmp_path, capsys) -> None:
    other = tmp_path / "no-cache"
    measured(no_cache_server, clips["small"], other, "--measurement-interval", "800", "--stability", "100",
             "--max-trials", "40")
    capsys.readouterr()
    assert main(["perf", "compare", str(runs["small"][0]), str(other), "--out", str(tmp_path / "cmp")]) == 0
    text = (tmp_path / "cmp" / "compare.md").read_text()
    # the cache's size, and the limits and chunks of the session server (smaller than the defaults)
    assert "feature_cache_bytes=1073741824," in text and "feature_cache_bytes=0," in text
    assert "MAX_VIDEO_BYTES=1048576" in text and "stream_frames=5 |" in text
    assert (tmp_path / "cmp" / "compare.png").is_file() and "table:" in capsys.readouterr().out
