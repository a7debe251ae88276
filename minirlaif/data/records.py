"""The one record type every loader returns, and the paths of the data the project knows about."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class APIRecord:
    """One APIBench example: an instruction and the program that answers it with one API call.

    `source` and `line` (1-based) say where the record came from; for Gorilla's eval files `line` is
    the `question_id` that response files refer to. `code` is the reference *program* (empty when the
    record's text has no code section); `api_call` is the gold call (Gorilla's top-level field).
    """

    instruction: str
    api_call: str
    domain: str
    provider: str
    code: str
    api_data: dict
    source: str
    line: int
    input: str = ""
    explanation: str = ""
    api_name: str = ""
    extra: dict = field(default_factory=dict)


def gorilla_dir() -> Path:
    """The Gorilla APIBench folder: $MINIRLAIF_GORILLA, else ../shared/gorilla beside the checkout."""
    env = os.environ.get("MINIRLAIF_GORILLA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "gorilla"
