"""The two benchmark scripts run end to end on the CPU with tiny shapes, so they cannot rot between GPU draws."""

from __future__ import annotations

import json

import pytest
from fixtures_model import tiny_config

from benchmarks import bench_cpu_savings, bench_gpu_path
from benchmarks.perf.flops import request_flops


def test_gpu_bench_tiny_on_cpu(tmp_path, capsys) -> None:
    out = tmp_path / "gpu.json"
    report = bench_gpu_path.main(["--tiny", "--device", "cpu", "--strict", "--frames", "4,8", "--inflight", "1,2",
                                  "--chunk-sweep", "4,8", "--out", str(out)])
    assert json.loads(out.read_text())["summary"]  # the file is complete JSON
    assert "| T | floor_ms | cold_ms |" in capsys.readouterr().out
    assert not any(isinstance(v, dict) and "error" in v for v in report.values())
    cfg = tiny_config()
    for t in (4, 8):
        row = report["ours"][t]
        assert row["cold_s"] > 0 and row["cached_s"] > 0 and row["floor_s"] > 0
        assert report["flops"][t]["ours"]["total"] == request_flops(cfg, t, 10).total
        assert row["cold_over_floor"] == pytest.approx(row["cold_s"] / row["floor_s"])
        # baseline (HF, all layers, hidden states, non-causal) computes the same function in fp32
        agree = report["baseline"]["rows"][t]["agreement_with_ours"]
        assert agree["max_abs_diff"] < 1e-4 and agree["ref_std"] > 1e-3
        assert agree[f"top{bench_gpu_path.topk_for(t)}_overlap"] == 1.0
        assert report["baseline"]["rows"][t]["speedup_cold"] > 0
        # FP8 really ran reduced precision, and stays close
        fp8 = report["fp8"]["ours_fp8"]["agreement"][t]
        assert 0 < fp8["max_abs_diff"] < 0.5 * fp8["ref_std"] + 0.01
    assert report["baseline"]["bidirectional"] is True
    assert report["fp8"]["ours_fp8"]["converted_linears"] == 2 * 6 + 2 * 7  # 2 SigLIP layers x 6 + 2 Qwen2 layers x 7
    assert [r["in_flight"] for r in report["throughput"]["streams"]] == [1, 2]
    assert all(r["requests_per_s"] > 0 for r in report["throughput"]["batched"])
    assert set(report["chunk_sweep"]) == {4, 8}
    micro = report["micro"]
    assert micro["gqa_attention"]["max_abs_diff"] < 1e-5  # enable_gqa computes the same attention
    assert micro["siglip_mlp_gelu_epilogue"]["rel_l2"] < 1e-2 and micro["gqa_attention"]["enable_gqa_s"] > 0


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
