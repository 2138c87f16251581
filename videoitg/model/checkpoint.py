"""The released VideoITG / Eagle checkpoint layout (docs/checkpoints.md, "Checkpoint format"): load, validate and
save the weights. Safetensors only, never pickle, nothing from a hub. Where a checkpoint's files are, its config
and its content identity: `videoitg.model.files` (no torch)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from videoitg.config import VideoITGConfig
from videoitg.errors import CheckpointError
from videoitg.model.files import INDEX, checkpoint_identity, checkpoint_state, load_config, readable, weight_files
from videoitg.model.grounding import VideoITG
from videoitg.model.variant_b import model_class

TOWER = "model.vision_tower.vision_tower."


# ---- reading tensors ---------------------------------------------------------------------------------------------
def unreadable(f: Path, e: Exception) -> CheckpointError:
    """The error for a weight file safetensors could not read: the system's reason where the file cannot even be
    opened (safetensors words a permission refusal as "No such file or directory"), else safetensors' own."""
    try:
        f.open("rb").close()
    except OSError as o:
        return CheckpointError(f"{f}: cannot be read ({o.strerror or o})")
    return CheckpointError(f"{f}: unreadable safetensors file ({e})")


def read_tensors(d: Path, rename: Callable[[str], str] = lambda k: k) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in weight_files(d):
        try:
            with safe_open(str(f), framework="pt") as sf:
                for k in sf.keys():
                    out[rename(k)] = sf.get_tensor(k)
        except Exception as e:  # safetensors raises plain errors for a truncated or corrupt header
            raise unreadable(f, e) from e
    return out


def index_tensors(d: Path, rename: Callable[[str], str] = lambda k: k) -> dict[str, tuple[Path, str, torch.Size]]:
    """name -> (file, name in file, shape), read from the safetensors headers only (no tensor data)."""
    out: dict[str, tuple[Path, str, torch.Size]] = {}
    for f in weight_files(d):
        try:
            with safe_open(str(f), framework="pt") as sf:
                for k in sf.keys():
                    out[rename(k)] = (f, k, torch.Size(sf.get_slice(k).get_shape()))
        except Exception as e:  # safetensors raises plain errors for a truncated or corrupt header
            raise unreadable(f, e) from e
    return out


def load_indexed(index: dict[str, tuple[Path, str, torch.Size]], keys: list[str]) -> dict[str, torch.Tensor]:
    """Read just `keys` (one open per file)."""
    by_file: dict[Path, list[str]] = {}
    for k in keys:
        by_file.setdefault(index[k][0], []).append(k)
    out = {}
    for f, ks in by_file.items():
        try:
            with safe_open(str(f), framework="pt") as sf:
                for k in ks:
                    out[k] = sf.get_tensor(index[k][1])
        except Exception as e:  # a header that parses but data cut short fails here
            raise unreadable(f, e) from e
    return out


def tower_key(k: str) -> str:
    """A key of a SiglipVisionModel / SiglipModel checkpoint -> our embedded name. transformers 5 saves
    SiglipVisionModel without the `vision_model.` prefix; SiglipModel keeps it (and has text_model.* too)."""
    if not k.startswith("vision_model."):
        k = "vision_model." + k
    return TOWER + k


# ---- loading -----------------------------------------------------------------------------------------------------
def _ignorable(k: str, used_layers: int) -> bool:
    """Tensors a valid checkpoint may carry that the grounding model never reads."""
    if k.startswith(TOWER):
        rest = k[len(TOWER):]
        if rest.startswith(("vision_model.post_layernorm.", "vision_model.head.", "text_model.", "logit_",
                            "vision_model.embeddings.position_ids")):
            return True
        if rest.startswith("vision_model.encoder.layers."):
            return int(rest.split(".")[3]) >= used_layers  # layers past mm_vision_select_layer
        return False
    # the Eagle base video-LLM's LM head (a grounding checkpoint's starting point): grounding never reads it
    return k.endswith("rotary_emb.inv_freq") or k.startswith("lm_head.")


def check_state_dict(expected: dict[str, torch.Size], found: dict[str, torch.Tensor], where: str,
                     used_layers: int) -> None:
    """`found` maps names to tensors, or to anything with a `.shape`."""
    problems = [f"missing tensor {k} (expected shape {tuple(s)})" for k, s in expected.items() if k not in found]
    problems += [
        f"tensor {k} has shape {tuple(found[k].shape)}, expected {tuple(s)}"
        for k, s in expected.items() if k in found and found[k].shape != s
    ]
    problems += [f"unexpected tensor {k} (shape {tuple(v.shape)})" for k, v in found.items()
                 if k not in expected and not _ignorable(k, used_layers)]
    if problems:
        raise CheckpointError(f"{where}: {len(problems)} tensor problem(s):\n  " + "\n  ".join(problems))


PARTS = ("all", "vision", "grounding")


def drop_unused_half(model: VideoITG, part: str) -> None:
    """Keep only what one serving step runs: 'vision' = tower + projector (`visual_features`), 'grounding' =
    projector + LLM + head (`score_features`). Each Triton step is its own process, so a 7B deployment would
    otherwise hold the LLM twice."""
    lm = model.model
    if part == "vision":
        lm.layers, lm.embed_tokens, lm.norm, model.out_proj = nn.ModuleList(), None, None, None
    elif part == "grounding":
        lm.vision_tower = None
    elif part != "all":
        raise ValueError(f"unknown model part {part!r}; choose one of {PARTS}")


def _plan(ckpt: Path, vision_tower: str | Path | None, with_tokenizer: bool, attention: str | None,
          init_missing_head: bool) -> tuple[VideoITGConfig, Any, dict, VideoITG, bool]:
    """Everything a load checks before reading a weight: config (sizes range-checked), tokenizer, and every
    tensor's name and shape from the file headers against a model built on the meta device (no memory)."""
    with readable(ckpt):
        return _planned(ckpt, vision_tower, with_tokenizer, attention, init_missing_head)


def _planned(ckpt: Path, vision_tower: str | Path | None, with_tokenizer: bool, attention: str | None,
             init_missing_head: bool) -> tuple[VideoITGConfig, Any, dict, VideoITG, bool]:
    cfg, tower_dir = load_config(ckpt, vision_tower)
    tokenizer = load_tokenizer(ckpt) if with_tokenizer else None  # a broken tokenizer fails before any weights load
    if attention is not None:
        cfg.attention = attention
    index = index_tensors(ckpt)
    if tower_dir is not None:
        index = {k: v for k, v in index.items() if not k.startswith(TOWER)}
        index.update(index_tensors(tower_dir, tower_key))
    with torch.device("meta"):  # no random init of weights we are about to overwrite (7B: minutes, 30 GB)
        model = model_class(cfg)(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    new_head = init_missing_head and "out_proj.weight" not in index and "out_proj.bias" not in index
    if new_head:
        expected = {k: v for k, v in expected.items() if not k.startswith("out_proj.")}
    check_state_dict(expected, {k: SimpleNamespace(shape=v[2]) for k, v in index.items()}, str(ckpt),
                     cfg.vision_layers_used)
    return cfg, tokenizer, index, model, new_head


def check_checkpoint(ckpt: str | Path, vision_tower: str | Path | None = None) -> VideoITGConfig:
    """Refuse a checkpoint that a served start would refuse, before any model is built: what `load_checkpoint`
    refuses (config, tokenizer, every tensor's name and shape from the file headers), and a weight holding NaN or
    infinite values (`check_values`: every weight the model uses is read, where it lies, once). `videoitg serve`
    runs it before starting a server."""
    ckpt = Path(ckpt)
    cfg, _, index, model, _ = _plan(ckpt, vision_tower, True, None, False)
    check_values(index, [k for k in model.state_dict() if k in index], str(ckpt))
    return cfg


SCAN_CHUNK = 1 << 24  # elements counted at a time: a 16 MB mask at most, whatever the tensor's size
SHOWN_PROBLEMS = 12  # tensors a refusal names (a checkpoint NaN throughout has hundreds)


def all_finite(t: torch.Tensor) -> bool:
    """Whether no value of a floating-point tensor is NaN or infinite: its minimum and maximum, which NaN
    propagates to (`torch.aminmax`), are finite. One reduction, no mask: a file scanned at 0.07-0.08 s a GiB of
    bfloat16 on 2 CPU cores, where an `isfinite` mask took 1.4 s
    (`python -m benchmarks.model.bench_checkpoint_scan`)."""
    if t.numel() == 0:
        return True
    if t.element_size() == 1:  # float8: no min/max kernel for every float8 type
        t = t.to(torch.float16)
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def nonfinite_count(t: torch.Tensor) -> int:
    """How many of a floating-point tensor's values are NaN or infinite (0 for other dtypes), a chunk at a time."""
    if not t.is_floating_point():
        return 0
    n = 0
    for chunk in t.reshape(-1).split(SCAN_CHUNK):
        if not all_finite(chunk):
            finite = torch.isfinite(chunk.to(torch.float16) if chunk.element_size() == 1 else chunk)
            n += int(finite.numel() - finite.sum())
    return n


def check_values(index: dict[str, tuple[Path, str, torch.Size]], keys: list[str], where: str) -> None:
    """CheckpointError naming each of `keys` whose values are not all finite (NaN or infinite: a damaged or badly
    converted checkpoint), read through the files' mappings a chunk at a time: nothing is copied or kept."""
    by_file: dict[Path, list[str]] = {}
    for k in keys:
        by_file.setdefault(index[k][0], []).append(k)
    problems = []
    for f, ks in by_file.items():
        try:
            with safe_open(str(f), framework="pt") as sf:
                for k in ks:
                    if bad := nonfinite_count(sf.get_tensor(index[k][1])):
                        problems.append(f"tensor {k} ({f.name}) holds {bad} NaN or infinite value(s)")
        except Exception as e:  # safetensors raises plain errors for a truncated or corrupt file
            raise unreadable(f, e) from e
    if problems:
        more = [f"... and {len(problems) - SHOWN_PROBLEMS} more"] if len(problems) > SHOWN_PROBLEMS else []
        raise CheckpointError(f"{where}: {len(problems)} tensor(s) with NaN or infinite values (damaged weights; "
                              "not served):\n  " + "\n  ".join(problems[:SHOWN_PROBLEMS] + more))


def load_checkpoint(
    ckpt: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    vision_tower: str | Path | None = None,
    with_tokenizer: bool = True,
    part: str = "all",
    attention: str | None = None,
    init_missing_head: bool = False,
    drop: Callable[[VideoITG], None] | None = None,
) -> tuple[VideoITG, Any]:
    """Load a checkpoint directory -> (eval-mode model on device/dtype, tokenizer or None).

    Every tensor's name and shape is checked from the file headers; only the tensors of `part` are read.
    The class follows `config.attention` (Variant C, or B when causal); `attention` overrides it (training B from
    a C checkpoint). `init_missing_head`: a checkpoint without `out_proj` (the Eagle base model a grounding run
    starts from) gets the released init, xavier-uniform weight and zero bias, from torch's current RNG. `drop`
    removes more modules before any weight is read (what a serving step's engine runs: `runtimes.drop_engine_part`);
    the checkpoint must still hold them. The weights are this process's own (`owned`): a checkpoint file written
    after the load changes nothing loaded."""
    cfg, tokenizer, index, model, new_head = _plan(Path(ckpt), vision_tower, with_tokenizer, attention,
                                                   init_missing_head)
    drop_unused_half(model, part)
    if drop is not None:
        drop(model)
    tensors = load_indexed(index, [k for k in model.state_dict() if k in index])
    for k in list(tensors):  # one at a time: each mapped view is dropped as its copy is made
        tensors[k] = owned(tensors[k], device, dtype)
    if new_head and model.out_proj is not None:
        w = torch.empty(1, cfg.text.hidden_size)
        nn.init.xavier_uniform_(w)
        tensors.update({"out_proj.weight": w, "out_proj.bias": torch.zeros(1)})
    model.load_state_dict(tensors, assign=True)
    model = model.to(device=device, dtype=dtype).eval()
    return model, tokenizer


def owned(t: torch.Tensor, device: str | torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A tensor read from a weight file as this process's own, on `device`, a floating-point one in `dtype`: one
    copy, made where it is kept. safetensors hands out views of the file's mapped pages, which a write to the file
    (`cp` over it) would change under a running model, and a cut would turn into a crash on the next read."""
    return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype, copy=True)


def load_identified(ckpt: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                    vision_tower: str | Path | None = None, pinned: str = "",
                    **kwargs: Any) -> tuple[VideoITG, Any, str]:
    """`load_checkpoint` (same arguments), and the `checkpoint_identity` of exactly the bytes it loaded: every file
    the identity covers is the same file, unwritten, from before the identity was taken until the load is over
    (`checkpoint_state`); a checkpoint written meanwhile (a copy still arriving) is refused, to be loaded again once
    it is whole. What the feature cache and engine manifests key by is then the weights served, not the files on
    disk later. `pinned`: the identity the weights must have (a served repository's `checkpoint_identity`); a
    checkpoint whose files have another is refused before any weight is read (`check_pinned`)."""
    before = checkpoint_state(ckpt, vision_tower)
    identity = checkpoint_identity(ckpt, vision_tower)
    check_pinned(ckpt, identity, pinned)
    model, tokenizer = load_checkpoint(ckpt, device, dtype, vision_tower, **kwargs)
    after = checkpoint_state(ckpt, vision_tower)
    if after != before:
        changed = sorted(set(before) ^ set(after) | {f for f in before if after.get(f) != before[f]})
        raise CheckpointError(f"{ckpt}: written while it was loaded ({', '.join(changed)}): load it again once the "
                              "files are complete")
    return model, tokenizer, identity


def check_pinned(ckpt: str | Path, identity: str, pinned: str) -> None:
    """A served step loads only the weights its repository was built for: CheckpointError naming the checkpoint when
    its files' `identity` is not the `pinned` one ("": nothing pinned, anything goes). Replaced files are served
    by a restart, which writes the repository anew, never by a step's reload."""
    if pinned and identity != pinned:
        raise CheckpointError(f"{ckpt}: changed on disk since this server's repository was built (its identity is "
                              f"now {identity}, the repository's is {pinned}): restart the server to serve it "
                              "(`videoitg serve` writes its repository anew at each start; build a repository of "
                              "`videoitg repo build` again)")


def load_tokenizer(ckpt: str | Path):
    from transformers import AutoTokenizer  # heavy: loaded only when a tokenizer is asked for

    ckpt = Path(ckpt)
    if not any((ckpt / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise CheckpointError(f"{ckpt}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
    # AutoTokenizer peeks at config.json, whose `eagle_QwenG` type transformers does not know: that is expected,
    # so keep its warnings out of the user's terminal.
    from transformers.utils import logging as hf_logging  # heavy, as above

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return AutoTokenizer.from_pretrained(str(ckpt), local_files_only=True)
    except Exception as e:  # tokenizers raises a bare Exception for a malformed tokenizer.json
        raise CheckpointError(f"{ckpt}: unreadable tokenizer files ({type(e).__name__}: {e})") from e
    finally:
        hf_logging.set_verbosity(level)


# ---- saving ------------------------------------------------------------------------------------------------------
def save_checkpoint(
    model: VideoITG,
    out: str | Path,
    tokenizer: Any = None,
    embed_vision_tower: bool = True,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write `model` in the released layout (sharded with an index when `max_shard_bytes` is given)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
          if embed_vision_tower or not k.startswith(TOWER)}
    model.config.save(out / "config.json", embed_vision_config=embed_vision_tower)
    if max_shard_bytes is None:
        save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    else:
        shards: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        for k, v in sd.items():
            n = v.numel() * v.element_size()
            if shards[-1] and size + n > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][k] = v
            size += n
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(out / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
        total = sum(v.numel() * v.element_size() for v in sd.values())
        (out / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
        # transformers 5 writes how *this* copy was loaded (local path, offline) into the config; those are
        # loader arguments, not tokenizer facts, and would make a re-saved checkpoint differ from its source.
        tc = out / "tokenizer_config.json"
        if tc.exists():
            d = json.loads(tc.read_text())
            if [d.pop(k) for k in ("is_local", "local_files_only") if k in d]:
                tc.write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n")
    return out


