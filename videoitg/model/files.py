"""A checkpoint's files (docs/checkpoints.md, "Checkpoint format"), without torch: where it and its external SigLIP
tower are, its config, its weight files, and its content identity. What only names or identifies a checkpoint (a
server's top-level model, the launcher, a batch fingerprint) reads these alone; loading the weights is
`videoitg.model.checkpoint`'s."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import blake3

from videoitg.config import VideoITGConfig, VisionConfig
from videoitg.defaults import default_checkpoint, home
from videoitg.errors import CheckpointError, InputError
from videoitg.jsonio import load_file

INDEX = "model.safetensors.index.json"


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
