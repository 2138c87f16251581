"""The dtype and precision a model runs in, resolved by name, without torch: the one rule every entry point (score,
eval, batch, Scorer, the server's steps and its top-level model) follows. `videoitg.pipeline.scorer.parse_dtype`
and `parse_precision` give torch's dtype for the name."""

from __future__ import annotations

from videoitg.errors import InputError

# "default": every layer in the model's dtype. "fp8": the language model's linear layers in float8 (all decoder layers
# but the first and the last), the rest in bfloat16 (videoitg.model.fp8). "vision-bf16": the vision tower in bfloat16,
# the rest in the model's dtype (the GPU check measures it against fp16 and fp32; not a default).
PRECISIONS = ("default", "fp8", "vision-bf16")
PRECISION_HELP = ("default (every layer in --dtype) | fp8 (the language model's linear layers in float8 e4m3 but its "
                  "first and last decoder layers', the rest in bfloat16; a GPU with FP8 tensor cores, or emulated on "
                  "a CPU) | vision-bf16 (the vision tower in bfloat16, the rest in --dtype); docs/performance.md")
DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16"}


def default_dtype_name(device: str) -> str:
    """fp16 on a GPU (what the released inference runs: its loader casts the model and the frames to fp16), fp32
    on CPU. bf16 is an option (`dtype="bfloat16"`); the per-frame mean and the head always run in fp32
    (docs/fidelity.md)."""
    return "float16" if str(device).startswith("cuda") else "float32"


def resolve_dtype(name: str | None, device: str) -> str:
    """"float32", "float16" or "bfloat16" for a dtype option (None or "auto": `default_dtype_name`)."""
    if name is None or name == "auto":
        return default_dtype_name(device)
    if name not in DTYPE_NAMES:
        raise InputError(f"unknown dtype {name!r}; choose one of {sorted(DTYPE_NAMES)}")
    return DTYPE_NAMES[name]


def resolve_precision(precision: str | None, dtype: str | None, device: str) -> tuple[str, str | None]:
    """(the model's dtype name, what `prepare_inference` takes) for an entry point's dtype and precision: "default"
    (or None) keeps every layer in `resolve_dtype`'s dtype; "vision-bf16" too, but the vision tower in bfloat16;
    "fp8" runs the language model's linear layers in float8 (e4m3, one scale per token and one per output channel;
    its first and last decoder layers stay 16-bit) and everything else (the vision tower, the projector, attention,
    the norms, the head) in bfloat16, so it takes dtype auto or bfloat16 and refuses another."""
    if precision in (None, "", "default"):
        return resolve_dtype(dtype, device), None
    if precision == "vision-bf16":
        return resolve_dtype(dtype, device), precision
    if precision != "fp8":
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if dtype not in (None, "auto") and resolve_dtype(dtype, device) != "bfloat16":
        raise InputError(f"precision fp8 runs attention, the norms and the head in bfloat16, not {dtype}: leave the "
                         "dtype out (or give bfloat16)")
    return "bfloat16", "fp8"
