"""The visual-feature cache (the instruction-independent half of a request, byte-bounded, least recently used
first out) and the memory of videos that failed for their own sake."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


def cache_key(video_digest_hex: str, sampling_key: str, model_identity: str) -> str:
    """The video's digest (`videoitg.digest.video_digest`, BLAKE3 of every byte: the cache is shared by all clients,
    so a key a client could make collide would let it plant its features under another video), the sampling and
    the checkpoint/engine identity: another instruction on the same video hits, another model or sampling never."""
    return f"{video_digest_hex}|{sampling_key}|{model_identity}"


def nbytes(value: Any) -> int:
    """Bytes held by a cached value: tensors and arrays count (torch's and numpy's `nbytes`), containers are summed,
    scalars are free."""
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(nbytes(getattr(value, k)) for k in value.__dataclass_fields__)
    return 0


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    bytes: int = 0
    entries: int = 0


@dataclass
class FeatureCache:
    """Bounded in bytes (`nbytes`), least recently used out first; thread-safe. Values stay where they were computed
    (on a GPU, in device memory: the bound is device bytes there)."""

    capacity_bytes: int
    _data: OrderedDict[str, tuple[Any, int]] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    stats: CacheStats = field(default_factory=CacheStats)

    def get(self, key: str) -> Any | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.stats.misses += 1
                return None
            self._data.move_to_end(key)
            self.stats.hits += 1
            return item[0]

    def put(self, key: str, value: Any) -> bool:
        """Store `value`; returns False when it alone exceeds the capacity (then nothing is evicted for it)."""
        size = nbytes(value)
        with self._lock:
            if size > self.capacity_bytes:
                return False
            old = self._data.pop(key, None)
            if old is not None:
                self.stats.bytes -= old[1]
            while self._data and self.stats.bytes + size > self.capacity_bytes:
                _, (_, s) = self._data.popitem(last=False)
                self.stats.bytes -= s
                self.stats.evictions += 1
            self._data[key] = (value, size)
            self.stats.bytes += size
            self.stats.entries = len(self._data)
            return True

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.stats.bytes = 0
            self.stats.entries = 0


@dataclass
class FailureMemory:
    """Videos whose decode failed for the video's own sake, remembered for `ttl_s` by cache key, so that a client
    retrying the same bytes (a corrupt file, a video over a limit) gets the same error at once instead of another
    decode. Only the error's class and message are kept, never the exception itself: its traceback would hold the
    failed request's frames and bytes. Bounded: expired entries go whenever one is added, and the oldest goes first
    past `capacity` entries."""

    ttl_s: float = 60.0
    capacity: int = 4096
    _data: OrderedDict[str, tuple[float, type[BaseException], tuple[Any, ...]]] = field(
        default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def remember(self, key: str, error: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            self._data.pop(key, None)
            while self._data and next(iter(self._data.values()))[0] <= now:  # insertion order = expiry order
                self._data.popitem(last=False)
            self._data[key] = (now + self.ttl_s, type(error), tuple(str(a) for a in error.args))
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def get(self, key: str) -> BaseException | None:
        """A fresh copy of the remembered error for `key` (same class and message), or None (never seen, or
        forgotten after `ttl_s`)."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if time.monotonic() >= item[0]:
                del self._data[key]
                return None
        error = item[1].__new__(item[1])
        error.args = item[2]
        return error

    def __len__(self) -> int:
        return len(self._data)
