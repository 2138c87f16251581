"""benchmarks/gpu_check runs every check end to end on the CPU at tiny sizes, so the GPU run cannot rot: parity,
`videoitg score`, one-process DDP training (gloo here, NCCL there) and the checkpoint round trip, DALI's decoder
against PyAV (its CPU decoder here, pixels within the documented bound), and the served repository (the CPU
tritonserver here)."""

from __future__ import annotations

import json

import pytest

from benchmarks.gpu_check.__main__ import main
from benchmarks.gpu_check.training import verify_here


@pytest.mark.slow
@pytest.mark.server
def test_gpu_check_tiny_on_cpu(tmp_path) -> None:
    out = tmp_path / "out"
    report = main(["--tiny", "--device", "cpu", "--strict", "--out", str(out), "--workdir", str(tmp_path / "w")])
    checks = report["checks"]
    assert json.loads((out / "gpu_check.json").read_text())["checks"].keys() == checks.keys()
    assert "| model_parity | pass |" in (out / "gpu_check.md").read_text()
    assert {n: c["status"] for n, c in checks.items() if n != "e2e"} == {
        "environment": "pass", "model_parity": "pass", "score_cli": "pass", "training": "pass",
        "nvdec": "pass" if checks["environment"]["detail"]["importable"]["nvidia.dali"] else "skip",
        "serving": "pass" if checks["environment"]["detail"]["importable"]["pytriton"] else "skip"}
    tr = checks["training"]["detail"]
    assert tr["device_run"]["process_group"] == {"backend": "gloo", "world_size": 1,
                                                 "wrapper": "DistributedDataParallel"}
    assert tr["cpu_fp32"]["loss"] == pytest.approx(tr["device_run"]["loss"], rel=1e-5)
    # the checkpoint pieces written for the trip back reassemble, load and reproduce the logits
    assert verify_here(out, out / "gpu_check.json")["max_abs_diff"] < 1e-5
    nvdec = checks["nvdec"]["detail"]
    if nvdec.get("dali"):  # the documented pixel bound held on the CPU decoder; the NVDEC part says it skipped
        assert {r["kind"] for r in nvdec["pixels"].values()} == {"edges", "camera", "photo"}
        assert all(r["within_bound"] and r["decoder"] == "dali-cpu" for r in nvdec["pixels"].values())
        assert "skipped" in nvdec["pixels_mixed"]
    parity = checks["model_parity"]["detail"]["tiny"]
    assert parity["fp32"]["max_abs_diff"] == 0 and 0 < parity["bf16"]["max_abs_diff"] < 0.5
