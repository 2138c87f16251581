"""A checkpoint's files (docs/checkpoints.md, "Checkpoint format"), without torch: where it and its external SigLIP
tower are, its config, its weight files, and its content identity. What only names or identifies a checkpoint (a
server's top-level model, the launcher, a batch fingerprint) reads these alone; loading the weights is
`videoitg.model.checkpoint`'s."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import blake3

from videoitg.config import VideoITGConfig, VisionConfig
from videoitg.defaults import default_checkpoint, files_home
from videoitg.errors import CheckpointError, InputError
from videoitg.jsonio import load_file
from videoitg.writes import write_whole

INDEX = "model.safetensors.index.json"
log = logging.getLogger(__name__)


@contextlib.contextmanager
def readable(where: Path) -> Iterator[None]:
    """A file of the checkpoint `where` that cannot be read (a directory without permission, an I/O error) is one
    CheckpointError naming the checkpoint and the file, never an OSError traceback."""
    try:
        yield
    except OSError as e:
        raise CheckpointError(f"{where}: cannot be read ({e.filename or where}: {e.strerror or e})") from None


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
    with readable(ckpt):
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
IDENTITY_CHARS = 16  # a checkpoint identity's length in hex characters
DIGEST_CACHE = "file-digests.json"  # under videoitg.defaults.files_home()
DIGEST_CACHE_FORMAT = "videoitg file digests 2"
DIGEST_CACHE_ENTRIES = 4096
HASH_CHUNK = 1 << 24  # bytes read at a time while a weight file is hashed


def checkpoint_identity(ckpt: str | Path, vision_tower: str | Path | None = None) -> str:
    """Short stable id of a checkpoint's contents, for batch output folders, feature-cache keys and engine
    manifests: BLAKE3 over config.json and every byte of every weight file, and of the external vision tower's
    (its config.json and weights) when the checkpoint uses one (`vision_tower` overrides mm_vision_tower, as in
    `load_checkpoint`). Any changed weight byte changes it. Each weight file's digest is cached
    (`cached_weight_hash`), so only the first use of a file reads it whole (docs/checkpoints.md: the cost)."""
    ckpt = Path(ckpt)
    h = blake3.blake3(IDENTITY_VERSION)
    with readable(ckpt):
        for label, d in _identity_dirs(ckpt, vision_tower):
            h.update(f"{label}\0".encode())
            h.update((d / "config.json").read_bytes())
            for f in weight_files(d):
                n = f.stat().st_size
                h.update(f.name.encode("utf-8", "surrogateescape") + b"\0" + n.to_bytes(8, "little"))
                h.update(bytes.fromhex(cached_weight_hash(f)))
    return h.hexdigest()[:IDENTITY_CHARS]


def _identity_dirs(ckpt: Path, vision_tower: str | Path | None) -> list[tuple[str, Path]]:
    """The directories `checkpoint_identity` covers: the checkpoint's, and the external tower's when it has one."""
    config = _json_object(ckpt / "config.json")
    mm_tower = config.get("mm_vision_tower", "")
    tower = _resolve_tower_dir(ckpt, mm_tower if isinstance(mm_tower, str) else "", vision_tower)
    return [("checkpoint", ckpt)] + ([("vision tower", tower)] if tower is not None else [])


def checkpoint_state(ckpt: str | Path, vision_tower: str | Path | None = None) -> dict[str, str]:
    """What tells one version of a checkpoint's files from another without reading them: for config.json, the weight
    index and every weight file of the checkpoint and its external tower, the file's real path, device, inode, size,
    modification and status-change times (a write always moves the last). Equal before a load and after its identity
    was taken: the identity is of the very bytes loaded (`videoitg.model.checkpoint.load_identified`)."""
    ckpt = Path(ckpt)
    with readable(ckpt):
        out = {}
        for _, d in _identity_dirs(ckpt, vision_tower):
            files = [d / "config.json"] + ([d / INDEX] if (d / INDEX).exists() else []) + weight_files(d)
            out.update((str(f), _digest_key(f)) for f in files)
        return out


def cached_weight_hash(path: str | Path) -> str:
    """BLAKE3 (bare hex) of every byte of a weight file, for `checkpoint_identity`. Cached in
    $VIDEOITG_HOME/file-digests.json under the file's real path, device, inode, size, modification time and
    status-change time: a write to the file (or setting its times back afterwards, which moves the status-change
    time) misses the cache and hashes it again. Each entry carries a check of its key and digest: one that does not
    verify (a damaged byte, a torn file) is never used, the file is hashed again, the entry rewritten and the damage
    counted (`digest_cache_damage`). A cache that cannot be read or written is ignored. The file is read (not
    mapped), so one cut short or failing while it is hashed is an OSError, never a crash."""
    path = Path(path)
    key = _digest_key(path)
    cache, damaged = _read_digest_cache()
    digest = cache.get(key)
    if digest is None:
        digest = _hash_file(path)
        if _digest_key(path) != key:  # written while it was read: not safe to remember
            return digest
    elif not damaged:
        return digest
    _write_digest_cache(key, digest)  # the new entry, and the damaged ones gone
    return digest


def _hash_file(path: Path) -> str:
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _digest_key(path: Path) -> str:
    st = path.stat()
    return f"{os.path.realpath(path)}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"


def _digest_cache_path() -> Path | None:
    """None where nothing can be written (`files_home`): the cache is off, every file hashed."""
    where = files_home()
    return None if where is None else where / DIGEST_CACHE


def _entry_check(key: str, digest: str) -> str:
    """What an entry carries beside its digest: 64 bits of BLAKE3 over its key and digest."""
    return blake3.blake3(f"{key}\0{digest}".encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _verified(key: object, value: object) -> str | None:
    """An entry's digest when it verifies: "DIGEST CHECK", the digest 64 lowercase hex characters and the check
    `_entry_check` of this key and digest; None otherwise."""
    if not isinstance(key, str) or not isinstance(value, str):
        return None
    digest, _, check = value.partition(" ")
    if len(digest) != 64 or digest.strip("0123456789abcdef") or check != _entry_check(key, digest):
        return None
    return digest


_damage_lock = threading.Lock()
_damaged_total = 0
_damage_seen: set[str] = set()  # the digest cache's own states whose damage is counted already


def digest_cache_damage() -> int:
    """Damaged entries of the digest cache this process found, ignored and rewritten (a cache that was not valid
    JSON of its format counts as one): what a served step shows on the metrics page."""
    return _damaged_total


def _count_damage(state: str, n: int, path: Path) -> None:
    """Count `n` damaged entries found in the digest cache in `state` (its `_digest_key`), once per state."""
    global _damaged_total
    with _damage_lock:
        if state in _damage_seen:
            return
        _damage_seen.add(state)
        _damaged_total += n
    log.warning("%s: %d damaged entr%s ignored; the files are hashed again and the cache rewritten", path, n,
                "y" if n == 1 else "ies")


def _read_digest_cache() -> tuple[dict[str, str], int]:
    """(the entries that verify, how many did not). A missing or unreadable cache is empty, not damaged."""
    path = _digest_cache_path()
    if path is None:
        return {}, 0
    try:
        state = _digest_key(path)
        raw = path.read_bytes()
    except OSError:
        return {}, 0
    try:
        d = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, cut short
        d = None
    entries = d.get("entries") if isinstance(d, dict) and d.get("format") == DIGEST_CACHE_FORMAT else None
    if not isinstance(entries, dict):
        _count_damage(state, 1, path)
        return {}, 1
    good = {k: digest for k, v in entries.items() if (digest := _verified(k, v)) is not None}
    damaged = len(entries) - len(good)
    if damaged:
        _count_damage(state, damaged, path)
    return good, damaged


def _write_digest_cache(key: str, digest: str) -> None:
    """Add one entry to the entries that verify (the oldest go past DIGEST_CACHE_ENTRIES), written whole
    (`write_whole`), so concurrent writers never leave a torn file (the last one wins; a lost entry is only hashed
    again)."""
    try:
        cache, _ = _read_digest_cache()
        cache.pop(key, None)
        cache[key] = digest
        keep = {k: f"{v} {_entry_check(k, v)}" for k, v in list(cache.items())[-DIGEST_CACHE_ENTRIES:]}
        path = _digest_cache_path()
        if path is None:
            return
        write_whole(path, json.dumps({"format": DIGEST_CACHE_FORMAT, "entries": keep}))
    except OSError:  # OutputError is one: the entry is only hashed again
        pass
