"""ONNX -> TensorRT plan, through the `tensorrt` Python API (Builder, OnnxParser, optimization profiles).

Written against TensorRT 10.x (every call used exists from 10.0; target 10.14, what TensorRT-LLM 1.2 pins), as
shipped in the NGC containers `nvcr.io/nvidia/tensorrt:25.xx-py3` and `nvcr.io/nvidia/tritonserver:25.xx-py3`.
TensorRT cannot be installed on this project's CPU machines, so this module is exercised only where
`import tensorrt` works; everything up to `build_plan` (the ONNX graph, the profiles, the manifest) is tested
on CPU.

Precision: the ONNX graph is exported in fp32; fp16/bf16 plans come from builder flags (TensorRT picks the
kernels, keeping fp32 where a layer needs it). fp8 needs explicit quantization (Q/DQ nodes from NVIDIA
ModelOpt) in the ONNX graph: a plain fp32 graph with the FP8 flag would silently stay in higher precision, so
that combination is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from videoitg.engines.libraries import import_tensorrt
from videoitg.engines.manifest import EngineError, Profile

PRECISIONS = ("fp32", "fp16", "bf16", "fp8")


# ---- profiles ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VisionProfileSpec:
    """Frame-batch profile for the vision engine. Requests of up to 512 frames are run in chunks of
    `chunk` frames (the original runs 384; a smaller chunk bounds activation memory), so the profile covers
    1..chunk with the optimum at a full chunk, where nearly all of a 512-frame request's frames run."""

    image_size: int
    chunk: int = 128

    def profiles(self, input_name: str = "pixel_values") -> list[Profile]:
        s = self.image_size
        return [Profile(input_name, [1, 3, s, s], [self.chunk, 3, s, s], [self.chunk, 3, s, s])]


@dataclass(frozen=True)
class LLMProfileSpec:
    """Sequence profile for the grounding graph (one request per call): length up to max_visual_tokens +
    max_text_tokens (+ one anchor per frame for Variant B), frames up to max_frames. The optimum sits at one
    512-frame request (12,800 visual tokens + a typical instruction)."""

    hidden_size: int
    max_frames: int = 512
    max_visual_tokens: int = 16384  # vision_token_num: T * HW^2 never exceeds it
    max_text_tokens: int = 512
    anchors: bool = False
    opt_frames: int = 512
    opt_seq: int = 12800 + 160

    def profiles(self) -> list[Profile]:
        max_len = self.max_visual_tokens + self.max_text_tokens + (self.max_frames if self.anchors else 0)
        opt_len = min(self.opt_seq, max_len)
        h = self.hidden_size
        return [
            Profile("inputs_embeds", [1, 2, h], [1, opt_len, h], [1, max_len, h]),
            Profile("segment_ids", [1, 2], [1, opt_len], [1, max_len]),
            Profile("frame_ids", [1], [min(self.opt_frames, self.max_frames)], [self.max_frames]),
        ]


# ---- build ---------------------------------------------------------------------------------------
def onnx_has_qdq(onnx_path: str | Path) -> bool:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def build_plan(
    onnx_path: str | Path,
    plan_path: str | Path,
    profiles: list[Profile],
    precision: str = "fp16",
    workspace_gib: float = 8.0,
    timing_cache: str | Path | None = None,
) -> dict[str, str]:
    """Parse `onnx_path`, build a serialized plan with `profiles` and write it to `plan_path`.

    Returns {"tensorrt": version} for the manifest. Raises BackendUnavailable without TensorRT and
    EngineError when the graph does not parse or the build fails (TensorRT returns None then; its log says
    why)."""
    if precision not in PRECISIONS:
        raise EngineError(f"precision {precision!r} is not one of {PRECISIONS}")
    if precision == "fp8" and not onnx_has_qdq(onnx_path):
        raise EngineError(
            "fp8 needs an explicitly quantized ONNX graph (QuantizeLinear/DequantizeLinear nodes, e.g. from "
            "NVIDIA ModelOpt `modelopt.onnx.quantization`); this graph has none"
        )
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10: networks are always explicit-batch; STRONGLY_TYPED keeps Q/DQ (fp8) graphs' types.
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if precision == "fp8" else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves `*.onnx.data` external weights relative to the model file (needed > 2 GB).
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    cache = None
    if timing_cache is not None:
        blob = Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)

    names = {network.get_input(i).name for i in range(network.num_inputs)}
    profile = builder.create_optimization_profile()
    for p in profiles:
        if p.input not in names:
            raise EngineError(f"profile names input {p.input!r}; the graph's inputs are {sorted(names)}")
        profile.set_shape(p.input, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build {onnx_path} (see the TensorRT log above)")
    Path(plan_path).write_bytes(bytes(serialized))
    if cache is not None:
        Path(timing_cache).write_bytes(bytes(cache.serialize()))
    return {"tensorrt": trt.__version__}
