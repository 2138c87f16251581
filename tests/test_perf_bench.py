"""The two benchmark scripts run end to end on the CPU with tiny shapes, so they cannot rot between GPU draws."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_cpu_savings, bench_gpu_path
from benchmarks.perf.flops import request_flops
from tests.support.model import tiny_config


def test_gpu_bench_tiny_on_cpu(tmp_path, capsys) -> None:
    out = tmp_path / "gpu.json"
    report = bench_gpu_path.main(["--tiny", "--device", "cpu", "--strict", "--frames", "4,8", "--inflight", "1,2",
                                  "--sections", ",".join(bench_gpu_path.SECTIONS), "--workdir", str(tmp_path),
                                  "--out", str(out)])
    assert json.loads(out.read_text())["summary"]  # the file is complete JSON
    assert "| T | floor_ms | cold_ms |" in capsys.readouterr().out
    assert not any(isinstance(v, dict) and "error" in v for v in report.values())
    cfg = tiny_config()
    for t in (4, 8):
        split = report["flops"][t]["ours"]
        assert split["total"] == request_flops(cfg, t, 10).total
        assert split["gemm"] + split["vision_attention"] + split["llm_attention"] == split["total"]
        row = report["main"]["rows"][t]
        assert row["ours_cold_s"] > 0 and row["ours_cached_s"] > 0 and row["released_cold_s"] > 0
        assert row["cold_over_floor"] == pytest.approx(row["ours_cold_s"] / report["floor"][t]["cold_s"])
        # the released compute (HF, all layers, hidden states, non-causal) computes the same function in fp32
        agree = row["agreement_released_vs_ours"]
        assert agree["max_abs_diff"] < 1e-4 and agree["ref_std"] > 1e-3 and agree["spearman"] > 0.999
        assert agree[f"top{bench_gpu_path.topk_for(t)}_overlap"] == 1.0
        # FP8 really ran reduced precision, and stays close
        fp8 = report["fp8"]["rows"][t]["agreement_vs_bf16"]
        assert 0 < fp8["max_abs_diff"] and fp8["spearman"] > 0.8
    # the floor splits GEMMs from each tower's attention, at rates measured in the run
    assert set(report["rates"]["best_kernel"]) == {"vision", "llm"}
    assert report["rates"]["attention"]["llm"]["efficient"]["runs"] is False  # no CUDA kernel on the CPU
    # every switch ran and agrees with the default model; ours is one of them
    variants = report["ablation"]["variants"]
    assert {"default", "fuse", "native_gqa", "native_gqa,sdpa=flash"} <= set(variants)
    assert all(v["agreement"][8]["max_abs_diff"] < 1e-5 for v in variants.values())
    assert report["hot_path"]["label"] == report["ablation"]["chosen"] in variants
    assert {r["kernel"] for r in report["kernels"]["ours"]} == {"flash (cpu)"}
    # end to end from a clip: both paths score the same frames alike
    e2e = report["e2e"]
    assert e2e["frames"] == 8 and e2e["agreement_released_vs_ours"]["spearman"] > 0.9 and e2e["speedup"] > 0
    assert e2e["stages"]["ours"][0]["decoder"] == "pyav"
    rows = report["throughput"]["rows"]
    assert [r["in_flight"] for r in rows] == [1, 2] and len(set(rows[1]["instruction_lens"])) == 2
    assert all(r["padded_batch"]["requests_per_s"] > 0 and r["singly"]["requests_per_s"] > 0 for r in rows)
    assert set(report["chunks"]) == {4, 8}
    assert report["micro"]["rel_l2"] < 1e-2 and report["micro"]["fused_s"] > 0


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
