"""Performance tooling for the GPU hot path: what a request costs and how our path compares with the original.

- `flops`: FLOPs of a request by part (vision, projector, LLM linear, attention, head) for any config, T and
  instruction length.
- `memory`: weights and activation peaks of our path vs the original (`output_hidden_states`, all layers).
- `baseline`: the original inference path rebuilt from HF modules, holding our weights.
- `build`: both models built straight onto the device (random weights or a checkpoint).
- `fp8`: an FP8 `nn.Linear` replacement (`torch._scaled_mm`) and the in-place swap.
- `micro`: the SigLIP MLP with bias + GELU in the GEMM epilogue, timed against three kernels.
- `hotpath`: the core-model switches (fusion, GQA, SDPA kernels, FP8, compile) applied in one place.
- `attention`: which SDPA kernel runs, and every kernel timed and checked at the real shapes.
- `frames`, `clips`, `released`: uint8 frames normalised on the device, long H.264 clips, the released CPU side.
- `timing`, `compare`, `weights`: CUDA-event timing and matmul rate, score agreement, random init.

Benchmarks using these live in `benchmarks/bench_gpu_path.py` and `benchmarks/bench_cpu_savings.py`; see
docs/performance.md.
"""
