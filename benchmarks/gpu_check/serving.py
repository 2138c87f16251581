"""The GPU Triton repository served by the real tritonserver 2.51 from the nvidia-pytriton wheel, on the GPU.

That server build has the python backend only, so the repository is the gpu target's with the python decoder
(`RepoSpec(decoder="python")`: PyAV on the CPU, uint8 frames to the vision step; vision and grounding on the GPU,
DLPack between them). Checked: served scores equal
in-process GPU scores of the same checkpoint and dtype; a second instruction on the same video is a cache hit and
leaves the decode and vision models' execution counts unchanged.

The python-backend stub of Triton 2.51 needs numpy < 2 (docs/serving.md); `numpy_dir` (a folder holding numpy
1.x) goes first on the server's PYTHONPATH only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.perf.compare import score_agreement
from videoitg.serving import repository as repo

INSTRUCTIONS = ("When is the red circle visible?", "When does the blue square move?")


def build_gpu_repository(out: Path, checkpoint: str, device_type: str) -> Path:
    """The gpu target's repository with the python decoder (the cpu target's where there is no GPU)."""
    target = "gpu" if device_type == "cuda" else "cpu"
    return repo.build_repository(repo.RepoSpec(target=target, decoder="python", checkpoint=checkpoint), out)


def _exec_count(client: Any, model: str) -> int:
    stats = client.get_inference_statistics(model_name=model, as_json=True)["model_stats"]
    return sum(int(s.get("execution_count", 0)) for s in stats)


def run_serving(work: Path, device: str, numpy_dir: str | None) -> dict[str, Any]:
    import tritonclient.grpc as grpcclient

    from videoitg.defaults import default_checkpoint, sample_video
    from videoitg.pipeline import Scorer
    from videoitg.serving.client import VideoITGClient
    from videoitg.serving.server import ServerOptions, TritonServer

    dev = torch.device(device)
    ckpt = str(default_checkpoint())
    repo_dir = build_gpu_repository(work / "repository", ckpt, dev.type)
    dtype = "float16" if dev.type == "cuda" else "float32"
    video, _ = sample_video()
    res: dict[str, Any] = {"repository": str(repo_dir), "dtype": dtype, "decode": "python (PyAV)"}
    old_pp = os.environ.get("PYTHONPATH", "")
    if numpy_dir:
        os.environ["PYTHONPATH"] = os.pathsep.join([numpy_dir, old_pp]) if old_pp else numpy_dir
    t0 = time.perf_counter()
    try:
        with TritonServer(repo_dir, ServerOptions(), log_path=work / "tritonserver.log") as server:
            res["start_s"] = time.perf_counter() - t0
            client = grpcclient.InferenceServerClient(server.grpc_url)
            with VideoITGClient(server.grpc_url, protocol="grpc") as c:
                first = c.infer(str(video), INSTRUCTIONS[0], top_k=8)
                counts = {m: _exec_count(client, m) for m in (repo.DECODE, repo.VISION, repo.GROUNDING)}
                t1 = time.perf_counter()
                second = c.infer(str(video), INSTRUCTIONS[1], top_k=8)
                res["cache_hit_s"] = time.perf_counter() - t1
                after = {m: _exec_count(client, m) for m in (repo.DECODE, repo.VISION, repo.GROUNDING)}
            res["log_tail"] = server.log_tail(1500)
    except Exception as e:
        res["error"] = repr(e)[:1500]
        log = work / "tritonserver.log"
        res["log_tail"] = log.read_text()[-3000:] if log.exists() else ""
        return res
    finally:
        os.environ["PYTHONPATH"] = old_pp
    scorer = Scorer(ckpt, device=device, dtype=dtype, decoder="pyav")
    local = [scorer.score(video, q) for q in INSTRUCTIONS]
    res["agreement_served_vs_in_process"] = [
        score_agreement(torch.tensor(loc.logits), torch.tensor(srv.result.logits), k=8)
        for loc, srv in zip(local, (first, second), strict=True)]
    res["cache_hit"] = [first.cache_hit, second.cache_hit]
    res["executions_before_second"], res["executions_after_second"] = counts, after
    skipped = all(after[m] == counts[m] for m in (repo.DECODE, repo.VISION))
    ok = max(a["max_abs_diff"] for a in res["agreement_served_vs_in_process"]) < 1e-3
    res["pass"] = ok and res["cache_hit"] == [False, True] and skipped and after[repo.GROUNDING] > counts[
        repo.GROUNDING]
    return res
