"""ONNX -> TensorRT plan, through the `tensorrt` Python API (Builder, OnnxParser, optimization profiles).

Every call is checked against the Python bindings of TensorRT 10.14 (what TensorRT-LLM 1.2 pins) and 11.1 (what
the package index offers); docs/engines.md lists them and tests/engine_build/test_trt_builder_api.py checks each
name this module and the TensorRT runtime use against both versions' bindings. TensorRT cannot be installed on this
project's CPU machines, so a plan is built only where `import tensorrt` works; everything up to `build_plan` (the
graphs in their precision, the profiles, the network flags, the manifest) is tested on CPU.

Precision is the ONNX graph's own (`onnx_export`: fp16/bf16 weights and activations, fp32 where the numerics need
it). The network is strongly typed, so the plan runs in exactly those types: TensorRT 11 has no other mode (its
`BuilderFlag` has no FP16, BF16 or INT8) and 10.x builds the same way with the STRONGLY_TYPED creation flag (its
precision flags, deprecated from 10.12, are never set). fp8 needs explicit quantization (Q/DQ nodes from NVIDIA
ModelOpt) in the ONNX graph, so a graph without them is refused for fp8.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from videoitg.engines.manifest import Profile
from videoitg.engines.runtimes import max_sequence_length
from videoitg.errors import EngineError
from videoitg.libraries import import_tensorrt
from videoitg.request.limits import Limits

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
    """Sequence profile for the grounding graph (one request per call): length up to `max_len`, the longest
    sequence the deployment admits (`for_model`), frames up to max_frames. The optimum sits at one 512-frame request
    (12,800 visual tokens + a typical instruction)."""

    hidden_size: int
    max_len: int
    max_frames: int = 512
    opt_frames: int = 512
    opt_seq: int = 12800 + 160

    @classmethod
    def for_model(cls, config: Any, max_frames: int = 512,
                  max_instruction_tokens: int = Limits.max_instruction_tokens) -> LLMProfileSpec:
        """The profile that takes every request `Limits` admits for this model: `max_frames` sampled frames at
        most, instructions of up to `max_instruction_tokens` tokens (the served default, 1024) within the model's
        length budget, Variant B's anchors included (`videoitg.engines.runtimes.max_sequence_length`)."""
        return cls(config.text.hidden_size, max_sequence_length(config, max_frames, max_instruction_tokens),
                   max_frames)

    def profiles(self) -> list[Profile]:
        opt_len = min(self.opt_seq, self.max_len)
        h = self.hidden_size
        return [
            Profile("inputs_embeds", [1, 2, h], [1, opt_len, h], [1, self.max_len, h]),
            Profile("segment_ids", [1, 2], [1, opt_len], [1, self.max_len]),
            Profile("frame_ids", [1], [min(self.opt_frames, self.max_frames)], [self.max_frames]),
        ]


def write_plan(path: str | Path, serialized: Any) -> None:
    """Write a serialized plan (TensorRT's IHostMemory, which exposes its bytes as a buffer) straight from its
    memory: `bytes(serialized)` would hold a second copy of it (~15 GB for a 7B model's LLM plan) while writing."""
    with Path(path).open("wb") as f:
        f.write(serialized)  # any buffer: written from its own memory


# ---- build ---------------------------------------------------------------------------------------
def onnx_has_qdq(onnx_path: str | Path) -> bool:
    import onnx  # the optional `export` extra, needed only by a build

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def network_flags(trt: ModuleType) -> int:
    """`create_network` flags for a strongly typed network: TensorRT 11 networks always are (its STRONGLY_TYPED flag
    is deprecated and ignored, so none is passed); 10.x needs the flag."""
    if int(trt.__version__.split(".")[0]) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def build_plan(
    onnx_path: str | Path,
    plan_path: str | Path,
    profiles: list[Profile],
    precision: str,
    workspace_gib: float = 8.0,
    timing_cache: str | Path | None = None,
) -> dict[str, str]:
    """Parse `onnx_path`, build a strongly typed serialized plan with `profiles` and write it to `plan_path`.
    `precision` is the graph's (what the manifest records); the plan runs in the graph's types.

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
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves `*.onnx.data` external weights relative to the model file (needed > 2 GB).
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp32":  # TF32 is on by default; an fp32 plan is held to verify's fp32 target
        config.clear_flag(trt.BuilderFlag.TF32)
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
    write_plan(plan_path, serialized)
    if cache is not None:
        Path(timing_cache).write_bytes(bytes(cache.serialize()))
    return {"tensorrt": trt.__version__}
