"""Batch manifests: JSONL or CSV rows (`video`, `instruction`, optional `doc_id` / `id`), each with a stable row id
(the key of resume: docs/batch.md, "The manifest"); an unusable row becomes a `Rejected` entry, not a failed run."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videoitg.blank_text import is_blank
from videoitg.errors import InputError
from videoitg.jsonio import JSONProblem, loads
from videoitg.paths import open_resolved, resolve_under_roots

KNOWN_FIELDS = ("video", "instruction", "doc_id", "id")


@dataclass(frozen=True)
class Row:
    row_id: str
    line: int  # 1-based data line (JSONL) or record number (CSV) in the manifest
    video: str  # resolved real path under an allowed root
    instruction: str
    doc_id: Any = None  # kept with its manifest type (int stays int) for the downstream schema
    extra: dict[str, Any] = field(default_factory=dict)  # unknown columns, passed through
    # What the row's record is made from (`input_hash`): a rerun scores a row again when it changed under its id.
    input_hash: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"row_id": self.row_id, "line": self.line, "video": self.video,
                "instruction": self.instruction, "doc_id": self.doc_id, "extra": self.extra,
                "input_hash": self.input_hash}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Row:
        return cls(d["row_id"], d["line"], d["video"], d["instruction"], d.get("doc_id"), d.get("extra") or {},
                   d.get("input_hash", ""))


def input_hash(video: str, st: os.stat_result, instruction: str, doc_id: Any, extra: dict[str, Any]) -> str:
    """Everything a row's record is made from: the video's real path, size and modification time (a rewritten
    or replaced file changes them), the instruction, and the doc_id and columns the record passes through."""
    key = json.dumps([video, st.st_size, st.st_mtime_ns, instruction, doc_id, extra], ensure_ascii=False,
                     sort_keys=True, default=repr)
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass(frozen=True)
class Rejected:
    row_id: str | None
    line: int
    raw: Any  # the row as read (dict, or the raw text when it did not parse)
    reason: str
    error_type: str = "InputError"


@dataclass
class Manifest:
    path: Path
    rows: list[Row]
    rejected: list[Rejected]

    @property
    def videos(self) -> int:
        return len({r.video for r in self.rows})


def _iter_records(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(line, record-or-raw-text, parse-error) for each non-blank data record. Bytes that are not UTF-8 become lone
    surrogates (surrogateescape), so they fail their own row's text check instead of the whole manifest."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            for n, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    yield n, loads(text), None
                except JSONProblem as e:  # also nesting deeper than MAX_JSON_DEPTH: that row, not the run
                    yield n, text.rstrip("\n"), f"line is {e}" if str(e).startswith("not") else str(e)
    elif suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            try:
                header = reader.fieldnames
            except csv.Error as e:
                raise InputError(f"manifest {path}: unreadable CSV header ({e})") from None
            if not header or "video" not in header:
                raise InputError(f"manifest {path}: CSV header must name a 'video' column")
            n = 0
            while True:
                n += 1
                try:
                    rec = next(reader)
                except StopIteration:
                    break
                except csv.Error as e:  # a field over the csv module's size limit: that record, not the run
                    yield n, f"(CSV record {n})", f"unreadable CSV record ({e})"
                    continue
                if None in rec:  # more cells than header columns
                    yield n, rec, "row has more cells than the header"
                    continue
                yield n, {k: v for k, v in rec.items() if v != "" or k in ("video", "instruction")}, None
    else:
        raise InputError(f"manifest {path}: unknown format {suffix!r} (use .jsonl or .csv)")


def _scalar_id(v: Any) -> str | None:
    if v is None or v == "":
        return None
    if isinstance(v, (str, int)) and not isinstance(v, bool):
        return str(v)
    raise InputError(f"id must be a string or an integer, got {type(v).__name__}")


def _csv_doc_id(v: Any) -> Any:
    # CSV cells are text; lmms-eval doc_ids are ints, so keep digits as int for the downstream join.
    return int(v) if isinstance(v, str) and v.isascii() and v.isdigit() else v


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _doc_id_error(v: Any) -> str | None:
    # Downstream readers (pandas, lmms-eval) hold doc_ids in int64.
    if isinstance(v, int) and not isinstance(v, bool) and not INT64_MIN <= v <= INT64_MAX:
        return f"doc_id {v} does not fit a signed 64-bit integer"
    return None


def _text_error(name: str, v: str) -> str | None:
    """A lone surrogate (a valid JSON escape such as \\ud800, or a byte that is not UTF-8) is not Unicode text: it
    cannot be tokenised, sent to a server or written as UTF-8."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"{name} is not valid Unicode text (lone surrogate U+{ord(v[e.start]):04X} at character {e.start})"
    return None


def resolve_video(value: Any, roots: list[Path], base: Path) -> tuple[str, os.stat_result]:
    """The real path of a row's video, under an allowed root (after symlinks), and the status of the file found
    there: opened once and checked as opened (`videoitg.paths.open_resolved`), a readable regular file."""
    if not isinstance(value, str) or not value.strip():
        raise InputError("missing or empty 'video'")
    real = resolve_under_roots(value, roots, base=base)
    if not real.exists():
        raise InputError(f"video {value!r} does not exist")
    if not real.is_file():
        raise InputError(f"video {value!r} is not a regular file")
    fd = open_resolved(real)  # names the real path: "cannot be opened (Permission denied)", "changed after ..."
    try:
        return str(real), os.fstat(fd)
    finally:
        os.close(fd)


def check_roots(roots: list[str | Path]) -> list[Path]:
    if not roots:
        raise InputError("no allowed roots given")
    out = []
    for r in roots:
        p = Path(r).expanduser()
        if not p.is_dir():
            raise InputError(f"allowed root {str(r)!r} is not an existing directory")
        out.append(p.resolve())
    return out


def load_manifest(path: str | Path, roots: list[str | Path] | None = None,
                  max_instruction_chars: int = 20000) -> Manifest:
    """Parse and check a manifest. `roots`: where videos may live (default: the manifest's directory);
    relative `video` paths are resolved against the manifest's directory."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist")
    base = path.resolve().parent
    allowed = check_roots(list(roots) if roots else [base])
    rows: list[Row] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()
    content_counts: dict[str, int] = {}
    is_csv = path.suffix.lower() in (".csv", ".tsv")
    for line, rec, parse_err in _iter_records(path):
        if parse_err is not None:
            rejected.append(Rejected(None, line, rec, parse_err))
            continue
        if not isinstance(rec, dict):
            rejected.append(Rejected(None, line, rec, "row is not a JSON object"))
            continue
        try:
            explicit = _scalar_id(rec.get("id"))
            doc_id = _csv_doc_id(rec.get("doc_id")) if is_csv else rec.get("doc_id")
            if explicit is None:
                explicit = _scalar_id(doc_id)
        except InputError as e:
            rejected.append(Rejected(None, line, rec, str(e)))
            continue
        video, instruction = rec.get("video"), rec.get("instruction")
        if explicit is not None:
            row_id = explicit
        else:
            key = json.dumps([video, instruction], ensure_ascii=False)
            digest = "c-" + hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
            k = content_counts[digest] = content_counts.get(digest, 0) + 1
            row_id = digest if k == 1 else f"{digest}#{k}"
        if row_id in seen:
            rejected.append(Rejected(row_id, line, rec, f"duplicate row id {row_id!r}"))
            continue
        seen.add(row_id)
        if not isinstance(instruction, str) or is_blank(instruction):  # only spaces, zero-width, bidi marks...
            rejected.append(Rejected(row_id, line, rec, "missing or empty 'instruction'"))
            continue
        bad = _text_error("instruction", instruction) or _doc_id_error(doc_id)
        if bad:
            rejected.append(Rejected(row_id, line, rec, bad))
            continue
        if len(instruction) > max_instruction_chars:
            rejected.append(Rejected(row_id, line, rec,
                                     f"instruction has {len(instruction)} characters (> {max_instruction_chars})"))
            continue
        try:
            resolved, st = resolve_video(video, allowed, base)
        except InputError as e:
            rejected.append(Rejected(row_id, line, rec, str(e), type(e).__name__))
            continue
        extra = {k: v for k, v in rec.items() if k not in KNOWN_FIELDS}
        rows.append(Row(row_id, line, resolved, instruction, doc_id, extra,
                        input_hash(resolved, st, instruction, doc_id, extra)))
    return Manifest(path, rows, rejected)
