"""What a request costs and the released-style baseline it is measured against.

- `flops`: FLOPs of a request by part (vision, projector, LLM linear, attention, head) for any config, T and
  instruction length; `flop_split` separates GEMMs from each tower's attention (the split floor).
- `memory`: weights and activation peaks of our path vs the original (`output_hidden_states`, all layers).
- `baseline`: the original inference path rebuilt from HF modules, holding our weights.
- `build`: both models built straight onto the device (random weights or a checkpoint).
- `timing`, `weights`: CUDA-event timing and the matmul rate, random init.

Used by `benchmarks/gpu/gpu_check.py` (the GPU check) and `benchmarks/model/bench_cpu_savings.py`; see
docs/performance.md.
"""
