"""JSON and JSON Lines written by people and other tools (annotations, manifests, results files), read so that every
problem is one short message naming the line and what is wrong, never a traceback.

    for line, text, problem in text_lines(path):      # bytes that are not UTF-8: that line's problem
        value = loads(text)                            # JSONProblem (a ValueError): bad JSON, nested too deeply
    value = load_file(path)                            # InputError "FILE:LINE: problem"

Lines end at "\\n" only: U+2028 and the other separators `str.splitlines` also splits at are valid inside JSON
strings. Values nest at most `MAX_JSON_DEPTH` levels (an annotation record needs five): anything deeper is refused
here, before Python's parser or any later step recurses into it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from videoitg.errors import InputError

MAX_JSON_DEPTH = 64


class JSONProblem(ValueError):
    """Why a text is not usable JSON; `line` is the line inside the text when known (1-based)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def no_constant(name: str) -> Any:
    """`json.loads`'s `parse_constant` for JSON as written: NaN, Infinity and -Infinity are Python's, not JSON."""
    raise ValueError(f"{name} is not JSON")


def nesting_over(value: Any, limit: int) -> bool:
    """Whether lists and objects in `value` nest deeper than `limit` (a scalar is depth 0). No recursion."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if children is None:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def loads(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads`, with every way it can fail turned into a JSONProblem."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise JSONProblem(f"not valid JSON ({e.msg} at column {e.colno})", e.lineno) from None
    except RecursionError:
        raise JSONProblem(f"JSON nested more than {max_depth} levels deep") from None
    except UnicodeDecodeError as e:  # bytes input
        raise JSONProblem(f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except ValueError as e:  # an integer of more digits than Python converts
        raise JSONProblem(f"not valid JSON ({e})") from None
    if nesting_over(value, max_depth):
        raise JSONProblem(f"JSON nested more than {max_depth} levels deep")
    return value


def utf8_problem(raw: bytes) -> str | None:
    """Why `raw` is not UTF-8 text, or None."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not valid UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
    return None


def text_lines(path: str | Path) -> Iterator[tuple[int, str, str | None]]:
    """(line number, text without the newline, problem) for each line that is not blank. A line whose bytes are
    not UTF-8 comes with its problem and its text decoded with replacement characters (for reports)."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            problem = utf8_problem(raw)
            yield n, raw.decode("utf-8", errors="replace"), problem


def load_file(path: str | Path, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """One JSON document from a file; InputError "PATH:LINE: problem" (or "PATH: problem") when it is unusable."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputError(f"{path}:{line}: not valid UTF-8 text (byte 0x{raw[e.start]:02x} at column {col})") from None
    try:
        return loads(text, max_depth)
    except JSONProblem as e:
        where = f"{path}:{e.line}" if e.line is not None else str(path)
        raise InputError(f"{where}: {e}") from None
