"""The CLI against a real tritonserver: `score --server` says whether the cache was hit, gives the demo-checkpoint
notice and the server's top-K; `perf` measures cold requests by default (the server's own cache counters say none
hit) and cache hits only when asked, and says which it measured."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from benchmarks.clips import random_clip
from tests.support.compare import assert_moments_close
from tests.support.server import skip_without_tritonserver
from tests.support.video import WHOLE, ntsc_clip, write_clip
from videoitg.client.kserve import VideoITGClient
from videoitg.commands.cli import main
from videoitg.decode import decode_video, probe_video
from videoitg.digest import video_digest
from videoitg.errors import InputError
from videoitg.launch import perf
from videoitg.outputs import DEFAULT_TOP_K
from videoitg.repository.generator import RepoSpec

skip_without_tritonserver()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("clips")
    out = []
    for seed in (11, 12):
        random_clip(d / f"clip{seed}.mp4", seed=seed)
        out.append(d / f"clip{seed}.mp4")
    return out


def test_score_over_the_server_says_cache_hit_notice_and_top_k(cpu_server, home, capsys) -> None:
    # 60 s: 60 sampled frames; a video no other user of the shared server sends, so its first request is cold
    video = write_clip(home / "numbered.mp4", frames=1500, gop=25, width=96, height=64)
    argv = ["score", str(video), "-i", "When is it brightest?", "--server", cpu_server.grpc_url, "--output",
            str(home / "r.jsonl"), "--export-frames", str(home / "frames")]
    assert main(argv) == 0
    first = capsys.readouterr()
    assert "cache hit: no" in first.out
    assert f"NOTICE: {cpu_server.grpc_url} scores with the embedded tiny demo checkpoint" in first.err
    assert f"top-{DEFAULT_TOP_K} in chronological order" in first.out  # the server's default (32): nothing sent
    record = json.loads((home / "r.jsonl").read_text())
    assert len(record["top_k"]) == DEFAULT_TOP_K
    index = json.loads((home / "frames" / "index.json").read_text())
    assert [f["frame"] for f in index["frames"]] == record["top_k"]
    assert main(argv[:6] + ["--top-k", "5"]) == 0
    second = capsys.readouterr()
    assert "cache hit: yes" in second.out and "top-5 in chronological order" in second.out


def test_served_checkpoint_names_the_embedded_one(cpu_server) -> None:
    with VideoITGClient(cpu_server.grpc_url) as c:
        assert c.served_checkpoint() == "default"
        assert int(c.model_parameters()["feature_cache_bytes"]) > 0


def _table(out: str) -> list[list[float]]:
    return [[float(x) for x in line.split()] for line in out.splitlines() if re.fullmatch(r"\s*\d+(\s+[\d.]+){4}",
                                                                                          line)]


def test_perf_measures_cold_requests_by_default(cpu_server, clips, tmp_path, capsys) -> None:
    before = perf.cache_counts(cpu_server.metrics_url)
    out = tmp_path / "cold"
    assert main(["perf", *map(str, clips), "--server", cpu_server.grpc_url, "--metrics", cpu_server.metrics_url,
                 "--concurrency", "1:2", "--cold-requests", "4", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    after = perf.cache_counts(cpu_server.metrics_url)
    assert "COLD requests: 4 per concurrency level" in text
    assert "feature cache during the measurement: 0 hits, 8 misses" in text
    # The server's own counters over the whole command: 2 warm-up requests and 2 copy checks, then 8 measured; the
    # only hits are none (every video and copy was new to it).
    assert after - before == perf.CacheCounts(hits=0, misses=12)
    rows = _table(text)
    assert [r[0] for r in rows] == [1, 2] and all(r[1] > 0 for r in rows)
    report = json.loads((out / "perf.json").read_text())
    assert list(report["series"]) == ["cold"]
    assert report["series"]["cold"]["cache_during_measurement"] == {"hits": 0.0, "misses": 8.0}
    assert len((out / "perf.csv").read_text().splitlines()) == 3  # header + one row per level


def test_perf_measures_cache_hits_when_asked_and_says_so(cpu_server, clips, tmp_path, capsys) -> None:
    out = tmp_path / "cached"
    # Cache hits on a busy 2-core machine still vary beyond the stability bound now and then: windows to spare, as
    # below (a stable run still ends after three)
    assert main(["perf", *map(str, clips), "--server", cpu_server.grpc_url, "--metrics", cpu_server.metrics_url,
                 "--requests", "cached", "--concurrency", "1", "--measurement-interval", "800", "--stability", "100",
                 "--max-trials", "40", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "CACHED requests: each video was sent once first" in text
    m = re.search(r"feature cache during the measurement: (\d+) hits, (\d+) misses", text)
    assert m and int(m[1]) > 0 and int(m[2]) == 0
    assert list(json.loads((out / "perf.json").read_text())["series"]) == ["cached"]


def test_distinct_copies_have_other_bytes_and_the_same_frames(clips, tmp_path) -> None:
    data = clips[0].read_bytes()
    a, b = perf.distinct_copy(data, b"run-1", 1), perf.distinct_copy(data, b"run-1", 2)
    assert len({video_digest(data), video_digest(a), video_digest(b),
                video_digest(perf.distinct_copy(data, b"run-2", 1))}) == 4
    ref = decode_video(data, image_size=32)
    for copy in (a, b):
        got = decode_video(copy, image_size=32)
        assert got.frame_indices == ref.frame_indices and (got.pixel_values == ref.pixel_values).all()
    webm = write_clip(tmp_path / "c.webm", codec="libvpx-vp9", frames=30).read_bytes()
    assert (decode_video(perf.distinct_copy(webm, b"r", 1), image_size=32).pixel_values
            == decode_video(webm, image_size=32).pixel_values).all()
    with pytest.raises(InputError, match="MP4/MOV and Matroska/WebM"):
        perf.distinct_copy(b"RIFF....AVI LIST", b"r", 1, "clip.avi")


@pytest.fixture(scope="module")
def no_cache_server(shared_servers):
    yield from shared_servers.hold(RepoSpec(target="cpu", cache_bytes=0))


def test_perf_on_a_deployment_without_the_cache(no_cache_server, clips, tmp_path, capsys) -> None:
    url, metrics = no_cache_server.grpc_url, no_cache_server.metrics_url
    assert main(["perf", str(clips[0]), "--server", url, "--metrics", metrics, "--requests", "cached"]) == 2
    assert "without a feature cache" in capsys.readouterr().err
    # Without a cache, concurrent requests of one video still share one decode and vision run (the BLS model):
    # cold requests are copies there too, a fixed number of them
    assert main(["perf", str(clips[0]), "--server", url, "--metrics", metrics, "--concurrency", "1:2",
                 "--cold-requests", "2", "--out", str(tmp_path / "p")]) == 0
    text = capsys.readouterr().out
    assert "COLD requests: 2 per concurrency level, each with its own copy of a video the server had not seen (no " \
           "feature cache, but concurrent requests of one video share its work)" in text
    assert "feature cache: none on this deployment" in text
    split = json.loads((tmp_path / "p" / "perf.json").read_text())["series"]["cold"]["rows"][1]["split"]
    assert split["requests"] == 2 and split["steps"]["videoitg_vision"]["calls_per_request"] >= 1  # none shared


def test_served_moments_end_by_the_decoded_duration(cpu_server, scorer, tmp_path) -> None:
    """The 29.97-fps end-of-video case served: the decode step's DURATION reaches the moments and the client."""
    clip = ntsc_clip(tmp_path / "ntsc.mp4")
    duration = probe_video(clip).duration_s
    with VideoITGClient(cpu_server.grpc_url) as c:
        got = c.infer(clip, "When is it brightest?")
    assert float(got.outputs["DURATION"].reshape(-1)[0]) == pytest.approx(duration)
    assert got.result.duration == pytest.approx(duration)
    assert all(0.0 <= start <= end <= duration + 1e-4 for start, end, _ in got.moments)
    assert got.result.find_moments(WHOLE)[0][:2] == pytest.approx((0.0, duration))  # not past the end, at 150.15 s
    local = scorer.score(clip, "When is it brightest?")
    assert_moments_close(got.moments, local, time_tol=1e-4)  # DURATION travels as float32
