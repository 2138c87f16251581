"""The released VideoITG / Eagle checkpoint layout (docs/checkpoints.md, "Checkpoint format"): load, validate, save,
and the checkpoint's content identity. Safetensors only, never pickle, nothing from a hub."""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import blake3
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from videoitg.config import VideoITGConfig, VisionConfig
from videoitg.defaults import default_checkpoint, home
from videoitg.errors import CheckpointError, InputError
from videoitg.jsonio import load_file
from videoitg.model.grounding import VideoITG
from videoitg.model.variant_b import model_class

TOWER = "model.vision_tower.vision_tower."
INDEX = "model.safetensors.index.json"


# ---- reading tensors ---------------------------------------------------------------------------------------------
def weight_files(d: Path) -> list[Path]:
    """The safetensors files of a HF-style directory (single file or index + shards). An index may name only
    files of this directory (bare `*.safetensors` names: `../x.safetensors` or `/abs/x.safetensors` would load
    weights from elsewhere); CheckpointError naming the problem otherwise."""
    if (d / INDEX).exists():
        return [d / f for f in _index_files(d / INDEX)]
    files = sorted(d.glob("*.safetensors"))
    if not files:
        bins = sorted(p.name for p in d.glob("*.bin")) + sorted(p.name for p in d.glob("*.pt*"))
        hint = f" (found {bins}: pickle weights are refused; convert them to safetensors)" if bins else ""
        raise CheckpointError(f"{d}: no *.safetensors weights{hint}")
    return files


def _index_files(index_path: Path) -> list[str]:
    try:
        index = load_file(index_path)
    except InputError as e:  # "FILE:LINE: not valid JSON (...)" for a truncated index
        raise CheckpointError(f"unreadable weight index: {e}") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path}: no 'weight_map' object (tensor name -> file name)")
    names = set()
    for tensor, name in weight_map.items():
        if not isinstance(name, str) or not name.endswith(".safetensors") or name != Path(name).name \
                or name.startswith(".") or "\\" in name or "\x00" in name:
            raise CheckpointError(f"{index_path}: tensor {tensor!r} is mapped to {name!r}; the index may name only "
                                  "*.safetensors files in the checkpoint directory itself")
        names.add(name)
    missing = sorted(n for n in names if not (index_path.parent / n).is_file())
    if missing:
        raise CheckpointError(f"{index_path}: weight file(s) {', '.join(missing)} named by the index are missing")
    return sorted(names)


def read_tensors(d: Path, rename: Callable[[str], str] = lambda k: k) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in weight_files(d):
        try:
            with safe_open(str(f), framework="pt") as sf:
                for k in sf.keys():
                    out[rename(k)] = sf.get_tensor(k)
        except Exception as e:  # safetensors raises plain errors for a truncated or corrupt header
            raise CheckpointError(f"{f}: unreadable safetensors file ({e})") from e
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
            raise CheckpointError(f"{f}: unreadable safetensors file ({e})") from e
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
            raise CheckpointError(f"{f}: unreadable safetensors file ({e})") from e
    return out


def tower_key(k: str) -> str:
    """A key of a SiglipVisionModel / SiglipModel checkpoint -> our embedded name. transformers 5 saves
    SiglipVisionModel without the `vision_model.` prefix; SiglipModel keeps it (and has text_model.* too)."""
    if not k.startswith("vision_model."):
        k = "vision_model." + k
    return TOWER + k


# ---- loading -----------------------------------------------------------------------------------------------------
def _resolve_tower_dir(ckpt: Path, name: str, override: str | Path | None) -> Path | None:
    if override is not None:
        p = Path(override)
        if not p.is_dir():
            raise CheckpointError(f"vision tower directory {p} does not exist")
        return p
    for p in (Path(name), ckpt / name):
        if name and p.is_dir() and (p / "config.json").exists():
            return p
    return None


def resolve_checkpoint(value: str, root: Path | None = None) -> Path:
    """A checkpoint a repository's parameters name: 'default' (what the committed repositories say) -> the embedded
    tiny checkpoint; else a directory, relative ones against `root` (the repository's root)."""
    if value in ("", "default"):
        return default_checkpoint()
    return resolve_under(value, root)


def resolve_under(value: str, root: Path | None = None) -> Path:
    """A path a repository's parameters name: relative ones against `root` (the repository's root)."""
    return Path(value) if root is None else root / value  # pathlib: root / an absolute path is that path


def load_config(ckpt: str | Path, vision_tower: str | Path | None = None) -> tuple[VideoITGConfig, Path | None]:
    """Config of a checkpoint and the external tower directory it uses (None = embedded tower)."""
    ckpt = Path(ckpt)
    if not (ckpt / "config.json").exists():
        raise CheckpointError(f"{ckpt}: no config.json (not a VideoITG checkpoint directory)")
    d = _json_object(ckpt / "config.json")
    try:
        return _config_from_dict(ckpt, d, vision_tower)
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise CheckpointError(f"{ckpt}/config.json: {e}") from e


def _json_object(path: Path) -> dict:
    """A JSON object from a checkpoint file; CheckpointError "FILE:LINE: problem" (not UTF-8, not JSON, nested too
    deeply, not an object) otherwise."""
    try:
        d = load_file(path)
    except InputError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: must hold a JSON object")
    return d


def _config_from_dict(ckpt: Path, d: dict, vision_tower: str | Path | None) -> tuple[VideoITGConfig, Path | None]:
    tower_dir = _resolve_tower_dir(ckpt, d.get("mm_vision_tower", ""), vision_tower)
    if tower_dir is not None:  # the released loader uses the tower named by mm_vision_tower, as here
        vision = VisionConfig.from_hf_dict(_json_object(tower_dir / "config.json"))
    elif "vision_config" in d:
        vision = VisionConfig.from_hf_dict(d["vision_config"])
    else:
        raise CheckpointError(
            f"{ckpt}: mm_vision_tower={d.get('mm_vision_tower')!r} is not a local directory and config.json has no "
            "embedded vision_config; nothing is fetched from a hub: pass the SigLIP directory (--vision-tower DIR)"
        )
    return VideoITGConfig.from_json_dict(d, vision), tower_dir


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
    """Refuse a checkpoint that `load_checkpoint` would refuse, reading only its config, tokenizer and file
    headers (seconds for a 7B checkpoint): `videoitg serve` runs it before starting a server."""
    return _plan(Path(ckpt), vision_tower, True, None, False)[0]


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
    the checkpoint must still hold them."""
    cfg, tokenizer, index, model, new_head = _plan(Path(ckpt), vision_tower, with_tokenizer, attention,
                                                   init_missing_head)
    drop_unused_half(model, part)
    if drop is not None:
        drop(model)
    tensors = load_indexed(index, [k for k in model.state_dict() if k in index])
    if new_head and model.out_proj is not None:
        w = torch.empty(1, cfg.text.hidden_size)
        nn.init.xavier_uniform_(w)
        tensors.update({"out_proj.weight": w, "out_proj.bias": torch.zeros(1)})
    model.load_state_dict(tensors, assign=True)
    model = model.to(device=device, dtype=dtype).eval()
    return model, tokenizer


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


IDENTITY_VERSION = b"videoitg checkpoint identity 2\0"
DIGEST_CACHE = "file-digests.json"  # under videoitg.defaults.home()
DIGEST_CACHE_ENTRIES = 4096


def checkpoint_identity(ckpt: str | Path, vision_tower: str | Path | None = None) -> str:
    """Short stable id of a checkpoint's contents, for batch output folders, feature-cache keys and engine
    manifests: BLAKE3 over config.json and every byte of every weight file, and of the external vision tower's
    (its config.json and weights) when the checkpoint uses one (`vision_tower` overrides mm_vision_tower, as in
    `load_checkpoint`). Any changed weight byte changes it. Each weight file's digest is cached
    (`cached_weight_hash`), so only the first use of a file reads it whole (docs/checkpoints.md: the cost)."""
    ckpt = Path(ckpt)
    config = _json_object(ckpt / "config.json")
    h = blake3.blake3(IDENTITY_VERSION)
    mm_tower = config.get("mm_vision_tower", "")
    tower = _resolve_tower_dir(ckpt, mm_tower if isinstance(mm_tower, str) else "", vision_tower)
    for label, d in (("checkpoint", ckpt), ("vision tower", tower)):
        if d is None:
            continue
        h.update(f"{label}\0".encode())
        try:
            h.update((d / "config.json").read_bytes())
            for f in weight_files(d):
                n = f.stat().st_size
                h.update(f.name.encode("utf-8", "surrogateescape") + b"\0" + n.to_bytes(8, "little"))
                h.update(bytes.fromhex(cached_weight_hash(f)))
        except OSError as e:
            raise CheckpointError(f"{d}: cannot be read ({e.filename}: {e.strerror})") from None
    return h.hexdigest()[:16]


def cached_weight_hash(path: str | Path) -> str:
    """BLAKE3 (bare hex) of every byte of a weight file, for `checkpoint_identity`. Cached in
    $VIDEOITG_HOME/file-digests.json under the file's real path, device, inode, size, modification time and
    status-change time: a write to the file (or setting its times back afterwards, which moves the status-change
    time) misses the cache and hashes it again. A cache that cannot be read or written is ignored."""
    path = Path(path)
    key = _digest_key(path)
    cache = _read_digest_cache()
    if key in cache:
        return cache[key]
    digest = blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(path).hexdigest() if path.stat().st_size \
        else blake3.blake3().hexdigest()
    if _digest_key(path) == key:  # unchanged while it was read: safe to remember
        _write_digest_cache(key, digest)
    return digest


def _digest_key(path: Path) -> str:
    st = path.stat()
    return f"{os.path.realpath(path)}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"


def _digest_cache_path() -> Path:
    return home() / DIGEST_CACHE


def _read_digest_cache() -> dict[str, str]:
    try:
        d = json.loads(_digest_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return {k: v for k, v in d.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(d, dict) else {}


def _write_digest_cache(key: str, digest: str) -> None:
    """Add one entry (the oldest entries go past DIGEST_CACHE_ENTRIES); temp file + rename, so concurrent writers
    never leave a torn file (the last one wins; a lost entry is only hashed again)."""
    try:
        path = _digest_cache_path()
        cache = _read_digest_cache()
        cache.pop(key, None)
        cache[key] = digest
        keep = dict(list(cache.items())[-DIGEST_CACHE_ENTRIES:])
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            tmp.write_text(json.dumps(keep), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError:
        pass
