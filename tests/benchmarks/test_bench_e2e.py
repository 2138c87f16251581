"""The end-to-end benchmark runs on tiny clips, so it cannot rot; its equality checks are real, its timings are
not benchmarks (nothing here asserts a speed)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("decord", reason="decord (the released decoder, dev extra) is not installed")

from benchmarks.decode import bench_e2e
from videoitg.launch import binaries


def test_e2e_bench_tiny_pixels_and_rss(tmp_path) -> None:
    out, png = tmp_path / "e2e.json", tmp_path / "e2e.png"
    r = bench_e2e.main(["--tiny", "--parts", "pixels", "rss", "--json", str(out), "--plot", str(png)])
    assert json.loads(out.read_text())["pixels"] and png.stat().st_size > 0
    for clip in r["pixels"].values():
        for variant in ("ours", "ours_1_thread"):
            check = clip["checks"][variant]
            assert check["frame_numbers_equal"] and check["frames"] > 0
            assert check["max_abs_pixel_diff"] == 0.0  # bytes -> pixel values equal the released path's
        assert clip["ratio_ours_over_released"] > 0
        assert clip["other_decoders"]["torchcodec"]  # a time or the reason it cannot run
    for which in ("ours", "released"):
        assert r["rss"][which]["peak_rss_mb"] > 0


@pytest.mark.server
def test_e2e_bench_tiny_served(tmp_path) -> None:
    pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")
    try:
        binaries.find_tritonserver()
    except binaries.ServingSetupError as e:
        pytest.skip(f"no tritonserver: {e}")
    r = bench_e2e.main(["--tiny", "--parts", "served", "--concurrency-requests", "1", "--tower", "wide"])["served"]
    assert r["tower"] == "wide" and r["image_size"] == 224
    for name in ("tiny-a", "tiny-b"):
        # the served requests (streamed and not) and the released-style one compute the same scores from the same
        # weights
        assert r[name]["max_abs_logit_diff_served_vs_released"] < 1e-4
        assert r[name]["median_s"]["served_hit"] > 0 and r[name]["ratio_streamed_over_unstreamed"] > 0
    assert r["throughput"]["ratio_concurrency_2_over_1"] > 0
