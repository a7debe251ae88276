"""Progress bars that stay readable in a log file.

In a terminal this is plain tqdm. When stderr is a file or a pipe (`train_sft.py > log 2>&1`, CI),
tqdm's carriage-return redraws would pile up into one enormous line; there each update is written as
a whole line instead, at most one every LOG_INTERVAL_S seconds (plus the first and the last).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


class _LogLines:
    """A stream for tqdm that turns each redraw ("\\r" + bar + padding) into one line, and writes at most
    one line per LOG_INTERVAL_S: set_postfix() redraws on every call, whatever tqdm's mininterval."""

    def __init__(self, stream) -> None:  # noqa: ANN001 - a text stream
        self.stream = stream
        self.encoding = getattr(stream, "encoding", "utf-8")
        self.last_emit = -math.inf
        self.pending = ""  # the newest redraw not written yet

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.pending = line
            if time.monotonic() - self.last_emit >= LOG_INTERVAL_S:
                self._emit()
        elif "\n" in text:  # tqdm closes a bar that stays with a newline: its last state is due now
            self._emit()

    def _emit(self) -> None:
        if self.pending:
            self.stream.write(self.pending + "\n")
            self.pending, self.last_emit = "", time.monotonic()

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """tqdm(*args, **kwargs); when stderr is not a terminal, whole lines, one per LOG_INTERVAL_S at most."""
    stream = kwargs.get("file") or sys.stderr
    if stream.isatty():
        kwargs.setdefault("dynamic_ncols", True)  # follow the terminal's width
    else:
        kwargs["file"] = _LogLines(stream)  # no width: tqdm then keeps the whole postfix (hits, cost, loss)
    return tqdm(*args, **kwargs)
