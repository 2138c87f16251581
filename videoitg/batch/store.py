"""The output directory of a batch run (run.json, atomic shards, merged results.jsonl / errors.jsonl, summary.json)
and its exactly-once rule: a shard is complete or absent, resume skips the row ids of complete shards, and the merge
keeps the first record per row id, a success over an error (docs/batch.md, "Resume and exactly once")."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videoitg.errors import InputError
from videoitg.jsonio import JSONProblem, loads
from videoitg.writes import open_output, write_whole

SHARD_DIR = "shards"
RESULTS = "results.jsonl"
ERRORS = "errors.jsonl"
RUN_INFO = "run.json"
SUMMARY = "summary.json"


def jsonl_line(obj: Any) -> str:
    """One JSON line, non-ASCII text kept as is. A string holding a lone surrogate (a JSON escape such as \\udc80
    in a manifest, a file name that is not UTF-8) cannot be written as UTF-8: that record is written with ASCII
    escapes instead, which is valid JSON and reads back as the same string."""
    text = json.dumps(obj, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj)
    return text


def atomic_write_lines(path: Path, lines: Iterable[str]) -> int:
    """Write `lines` (each without newline) to `path` whole (`videoitg.writes.write_whole`: temp file, fsync,
    rename; `path` untouched on any error, which names it). Returns the count."""
    n = 0

    def counted() -> Iterator[str]:
        nonlocal n
        for line in lines:
            n += 1
            yield line + "\n"

    write_whole(path, counted())
    return n


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_lines(path, [json.dumps(obj, indent=2, sort_keys=True)])


def _read_jsonl(path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    with open(path, encoding="utf-8") as f:
        for text in f:
            text = text.rstrip("\n")
            if not text:
                continue
            try:
                rec = loads(text)
            except JSONProblem:
                # Cannot happen for renamed shards; tolerate hand-edited files: the row is redone.
                continue
            if isinstance(rec, dict) and isinstance(rec.get("row_id"), str):
                yield rec, text


@dataclass
class ResumeState:
    ok: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    shards: int = 0
    # Rows whose every record was made from other input than the manifest's row now (instruction, video file,
    # passed-through fields changed under the same id): not done, scored again.
    changed: set[str] = field(default_factory=set)

    def done(self, retry_errors: bool) -> set[str]:
        return set(self.ok) if retry_errors else self.ok | self.failed


def _stale(rec: dict[str, Any], current: Mapping[str, str] | None) -> bool:
    """A record made from other input than its row has now. Records without an `input_hash` (written by hand, or
    for rows without one) cannot be checked and count as current."""
    if not current:
        return False
    want, got = current.get(rec["row_id"]), rec.get("input_hash")
    return bool(want) and isinstance(got, str) and bool(got) and got != want


class OutputStore:
    def __init__(self, out_dir: str | Path, fingerprint: dict[str, Any], force: bool = False) -> None:
        self.dir = Path(out_dir)
        self.shard_dir = self.dir / SHARD_DIR
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._check_fingerprint(fingerprint, force)
        except BaseException:
            self.close()
            raise
        # A random part: two sessions of one process in one second must not share shard names (os.replace would
        # silently overwrite the earlier session's shards).
        self.session = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{secrets.token_hex(3)}"
        self._seq = 0
        self._clean_stale_temps()

    def _lock(self) -> None:
        """One driver per output directory: two would both score the rows neither has finished. The kernel
        drops the lock when the holder dies, even by kill -9, so a crashed run never blocks its rerun."""
        self._lock_fd = open_output(self.dir / ".lock")  # held for the store's lifetime; never truncated or followed
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise InputError(f"another batch run is writing to {self.dir}") from None

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _check_fingerprint(self, fingerprint: dict[str, Any], force: bool) -> None:
        """Mixing results of different checkpoints or sampling settings in one file would be silent garbage."""
        info_path = self.dir / RUN_INFO
        if info_path.exists() and not force:
            old = json.loads(info_path.read_text())
            diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            if diff:
                details = ", ".join(f"{k}: {old.get(k)!r} -> {fingerprint.get(k)!r}" for k in diff)
                raise InputError(
                    f"{self.dir} holds results of a different run configuration ({details}); "
                    "use another --out, or --force to mix them"
                )
        atomic_write_json(info_path, fingerprint)

    def _clean_stale_temps(self) -> None:
        # Temp files are never read, so removing them is only tidying; skip ones a live process owns.
        for p in self.shard_dir.glob(".*.tmp-*"):
            try:
                pid = int(p.name.rsplit("-", 1)[1])
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError):
                p.unlink(missing_ok=True)
            except PermissionError:
                pass

    def shard_paths(self, kind: str) -> list[Path]:
        return sorted(self.shard_dir.glob(f"*.{kind}.jsonl"))

    def scan(self, current: Mapping[str, str] | None = None) -> ResumeState:
        """Rows with a record in the shards. `current`: row id -> the manifest row's `input_hash` now; a record
        made from other input (`_stale`) does not count, and its row is `changed`."""
        st = ResumeState()
        stale: set[str] = set()
        for kind, done in (("results", st.ok), ("errors", st.failed)):
            for p in self.shard_paths(kind):
                st.shards += 1
                for rec, _ in _read_jsonl(p):
                    (stale if _stale(rec, current) else done).add(rec["row_id"])
        st.changed = stale - st.ok - st.failed
        return st

    def write_shard(self, results: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
        """One flush: a results shard and/or an errors shard, each atomic on its own (each marks only its rows)."""
        if not results and not errors:
            return
        self._seq += 1
        stem = f"{self.session}-{self._seq:05d}"
        if results:
            atomic_write_lines(self.shard_dir / f"{stem}.results.jsonl", (jsonl_line(r) for r in results))
        if errors:
            atomic_write_lines(self.shard_dir / f"{stem}.errors.jsonl", (jsonl_line(r) for r in errors))

    def merge(self, order: list[str], rejected: list[dict[str, Any]],
              current: Mapping[str, str] | None = None) -> dict[str, int]:
        """Write results.jsonl / errors.jsonl: one line per row id of the current manifest, manifest order.

        Keeps each record's original text (no re-serialisation), the first per row id; with `current` (row id ->
        `input_hash`), only records made from the row as it is now.
        """
        wanted = set(order)
        ok: dict[str, str] = {}
        dup = 0
        for p in self.shard_paths("results"):
            for rec, text in _read_jsonl(p):
                rid = rec["row_id"]
                if rid not in wanted or _stale(rec, current):
                    continue
                if rid in ok:
                    dup += 1
                    continue
                ok[rid] = text
        err: dict[str, str] = {}
        for p in self.shard_paths("errors"):
            for rec, text in _read_jsonl(p):
                rid = rec["row_id"]
                if rid in wanted and rid not in ok and rid not in err and not _stale(rec, current):
                    err[rid] = text
        n_ok = atomic_write_lines(self.dir / RESULTS, (ok[r] for r in order if r in ok))
        rej_lines = [jsonl_line(r) for r in rejected]
        n_err = atomic_write_lines(self.dir / ERRORS, [err[r] for r in order if r in err] + rej_lines)
        return {"results": n_ok, "errors": n_err, "duplicates_dropped": dup,
                "missing": len(wanted) - len(ok) - len(err)}
