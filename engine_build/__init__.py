"""Engine building for VideoITG: ONNX export, TensorRT plans, and the parity check of every runtime.

Modules (each small, each importable without TensorRT / TensorRT-LLM installed):
- `onnx_export` : the vision tower and the grounding LLM as an encoder (input embeddings + frame segment ids ->
                  per-frame logits) to ONNX.
- `trt_builder` : ONNX -> TensorRT plan through the `tensorrt` Python API (Builder, OnnxParser, profiles).
- `build`       : `videoitg build`: every engine this machine can build, each with its manifest, and build.json.
- `verify`      : `videoitg verify`: every runtime of `videoitg.engines.runtimes` against the PyTorch reference.
- `parity`      : max |diff|, top-k overlap and Spearman correlation.
The runtimes that run the built engines, the manifest format and the TensorRT-LLM model live in `videoitg.engines`
(a server needs them, the build tools do not).
"""
