"""Engine building for VideoITG: ONNX export, TensorRT plans, TensorRT-LLM checkpoints, and the runtime seam.

Modules (each small, each importable without TensorRT / TensorRT-LLM installed):
- `manifest`      : the JSON manifest written beside every engine and the load-time version-lock check.
- `onnx_export`   : the vision tower (optionally fused with the projector at a fixed HW) and the grounding LLM
                    as an encoder (input embeddings + frame segment ids -> per-frame logits) to ONNX.
- `trt_builder`   : ONNX -> TensorRT plan through the `tensorrt` Python API (Builder, OnnxParser, profiles).
- `trtllm_convert`: Variant B -> TensorRT-LLM checkpoint (config.json + rank0.safetensors) and `trtllm-build`.
- `trtllm_torch`  : Variant C as an out-of-tree TensorRT-LLM PyTorch-backend model (full attention).
- `runtimes`      : one interface over torch / onnxruntime / tensorrt that `verify` and the Triton steps call.
- `parity`        : max |diff|, top-k overlap and Spearman correlation.
"""
