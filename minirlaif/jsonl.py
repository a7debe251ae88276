"""JSON Lines: the one reader (every loader, cache and log uses it), and the atomic writer (a crash leaves
the old file or the new one, never half of one)."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

from minirlaif.errors import InputError, where

# A JSON Lines file is split on the raw bytes b"\n", never with str.splitlines(): that also breaks on
# U+2028 and friends, which may legally sit inside a JSON string, and would shift line numbers.
MAX_LINE_BYTES = 8 << 20  # the longest real Gorilla line is a few KB; a longer one is not a JSON Lines file


def read_jsonl(path: str | Path, skip: Callable[[int, str], None] | None = None,
               drop_torn_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """(1-based physical line number, object) for every non-blank line of a JSON Lines file, streamed (memory
    stays bounded whatever the file holds). Blank lines are skipped but counted, so numbers stay Gorilla's
    question_ids. A line that is not one UTF-8 JSON object raises InputError naming the file and line, or,
    with `skip`, is reported as skip(line, problem) and passed over (caches and logs keep going).
    drop_torn_tail: a last line without its newline (a kill mid-write) is dropped, not trusted."""
    with open(path, "rb") as f:
        for number in itertools.count(1):
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw or (drop_torn_tail and not raw.endswith(b"\n")):
                return
            problem, obj = _parse_line(raw, number)
            if problem is None and obj is None:
                continue  # a blank line
            if problem is not None and skip is None:
                raise InputError(f"{where(path, number)}: {problem}")
            if problem is not None:
                skip(number, problem)
                continue
            yield number, obj


def _parse_line(raw: bytes, number: int) -> tuple[str | None, dict | None]:
    """(problem, None) for a bad line, (None, None) for a blank one, (None, object) for a good one."""
    if len(raw) > MAX_LINE_BYTES:
        return (f"line longer than {MAX_LINE_BYTES >> 20} MiB (is this a JSON Lines file? each line holds one "
                "record of a few KB)"), None
    try:  # utf-8-sig on line 1 tolerates a byte-order mark some editors write
        text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as e:
        return (f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line) "
                "(re-save the file as UTF-8)"), None
    if not text.strip():
        return None, None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return f"not valid JSON ({e.msg} at column {e.colno}) (each line must hold exactly one JSON object)", None
    if not isinstance(obj, dict):
        return (f"expected a JSON object, got {json_type(obj)} (each line must hold one {{...}} object, not an "
                "array or a bare value)"), None
    return None, obj


def json_type(value: object) -> str:
    """The JSON name of a Python value's type, for messages."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def write_jsonl_atomic(rows: Iterable[dict], path: str | Path) -> None:
    """Write one JSON object per line to `path.tmp`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
