"""An append-only, crash-safe disk cache of judge answers (JSON Lines).

Every answer is written the moment it arrives: one JSON line, then flush + os.fsync, so a run that
is killed loses at most the answer it was receiving, and a re-run never asks a question twice.
The key is sha256(judge name ("backend:model"), question id, question text, prompt text): change any
of them and the question is asked anew. Only answers are stored, never credentials.

Loading tolerates what a kill can leave behind: a torn last line (no newline) is cut off, and any
line that is not a complete, valid entry is skipped; both are reported (`problems`, and a logged
warning), never returned. One process writes a cache file at a time (an flock enforces it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
from pathlib import Path

from minirlaif.errors import InputError
from minirlaif.jsonl import read_jsonl
from minirlaif.feedback.questions import Question

try:
    import fcntl
except ImportError:  # not on Windows: no cross-process lock there
    fcntl = None

log = logging.getLogger(__name__)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def cache_key(judge_name: str, question: Question, prompt: str) -> str:
    """sha256 over the judge's "backend:model" name, the question (id and text) and the prompt text."""
    payload = json.dumps([judge_name, question.id, question.text, prompt], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def entry_problem(entry: object) -> str | None:
    """Why `entry` is not a valid cache entry, or None when it is."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    if not isinstance(entry.get("key"), str) or not _HEX64.match(entry["key"]):
        return "bad or missing 'key'"
    for name in ("judge", "question_id", "source"):
        if not isinstance(entry.get(name), str):
            return f"bad or missing {name!r}"
    if entry.get("answer") not in ("Yes", "No"):
        return "'answer' is not Yes or No"
    p = entry.get("p_yes")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0 <= p <= 1:
        return "'p_yes' is not a probability"
    if isinstance(entry.get("tokens"), bool) or not isinstance(entry.get("tokens"), int) or entry["tokens"] < 0:
        return "bad or missing 'tokens'"
    if not isinstance(entry.get("detail"), dict):
        return "bad or missing 'detail'"
    return None


class FeedbackCache:
    """Judge answers on disk: `get(key)` a stored entry (dict) or None; `put(entry)` stores one now."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict] = {}
        self.problems: list[str] = []  # what loading skipped or repaired, one line each
        self._lock = threading.Lock()  # threads of one run append one line at a time
        self._n_put = 0  # answers this process stored (for the kill-test hook in `put`)
        self._file = open(self.path, "a+b")
        if fcntl is not None:
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._file.close()
                raise InputError(f"{self.path}: the feedback cache is in use by another process (another run writing to "
                                 "the same folder?); wait for it to finish or give this run another --out") from None
        self._load()

    def _load(self) -> None:
        self._file.seek(0)
        data = self._file.read()
        if data and not data.endswith(b"\n"):
            # A kill during a write leaves a line without its newline. Cut it off so that the next
            # append starts on a fresh line (gluing onto the fragment would corrupt a good entry).
            cut = data.rfind(b"\n") + 1
            lineno = data.count(b"\n") + 1
            self.problems.append(
                f"{self.path}: line {lineno}: torn last line ({len(data) - cut} bytes, an interrupted write) removed"
            )
            self._file.truncate(cut)
            os.fsync(self._file.fileno())

        def skipped(lineno: int, why: str) -> None:
            self.problems.append(f"{self.path}: line {lineno}: skipped, {why}")

        for lineno, entry in read_jsonl(self.path, skip=skipped):
            problem = entry_problem(entry)
            if problem:
                self.problems.append(f"{self.path}: line {lineno}: skipped, {problem}")
                continue
            self.entries[entry["key"]] = entry
        for problem in self.problems:
            log.warning(problem)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, entry: dict) -> None:
        """Store one entry durably (append, flush, fsync) before returning."""
        problem = entry_problem(entry)
        if problem:
            raise ValueError(f"refusing to cache an invalid entry: {problem}")
        line = (json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        with self._lock:
            self._file.write(line)  # "a" mode: every write goes to the end of the file
            self._file.flush()
            os.fsync(self._file.fileno())
            self.entries[entry["key"]] = entry
            self._n_put += 1
            if os.environ.get("MINIRLAIF_KILL_AT") == f"answer:{self._n_put}":  # kill/resume test hook
                os.kill(os.getpid(), 9)  # (see utils.debug_kill_at): dies with the answer on disk

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()  # also releases the flock

    def __enter__(self) -> "FeedbackCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
