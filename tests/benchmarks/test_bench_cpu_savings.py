"""The CPU savings benchmark runs end to end with tiny shapes, so it cannot rot."""

from __future__ import annotations

import pytest

from benchmarks.model import bench_cpu_savings


def test_cpu_savings_tiny() -> None:
    report = bench_cpu_savings.main(["--tiny", "--no-rss", "--iters", "1"])
    assert report is not None
    vis, llm = report["vision"], report["llm"]
    # baseline keeps 27 + 1 vision hidden states plus the post-norm output (+ a D-sized pooled vector) per chunk,
    # ours the one selected state
    assert 29 <= vis["kept_bytes_ratio"] < 29.5
    # 28 + 1 LLM hidden states plus last_hidden_state vs one final state
    assert llm["kept_bytes_ratio"] == pytest.approx(30, rel=0.01)
    assert vis["flop_ratio"] > 27 / 26 and llm["flop_ratio"] == 1.0
    assert vis["modelled_activation_ratio"] > 1 and llm["modelled_activation_ratio"] > 1
    assert vis["ours_s"] > 0 and vis["baseline_s"] > 0 and vis["wall_time_ratio"] > 0
    assert vis["cpu_time_ratio"] > 0 and llm["ours_cpu_s"] > 0  # --tiny runs one thread, so CPU time is recorded
