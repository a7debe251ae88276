"""Reading and writing Gorilla APIBench files (JSON Lines; see shared/docs/gorilla-format.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from minirlaif.data.records import APIRecord

API_DB_KEYS = (
    "domain", "framework", "functionality", "api_name", "api_call", "api_arguments",
    "python_environment_requirements", "example_code", "performance", "description",
)


def format_code_text(record: APIRecord) -> str:
    """The HuggingFace-layout `code` text of a record: instruction, optional input, marked output."""
    text = f"###Instruction: {record.instruction}"
    if record.input:
        text += f"\n###Input: {record.input}"
    text += (
        f"\n###Output: <<<domain>>>: {record.domain}\n<<<api_call>>>: {record.api_call}"
        f"\n<<<api_provider>>>: {record.provider}\n<<<explanation>>>: {record.explanation}"
        f"\n<<<code>>>: {record.code}"
    )
    return text


def _write_jsonl_atomic(rows: Iterable[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_apibench(records: Iterable[APIRecord], path: str | Path) -> None:
    """Write records as a Gorilla APIBench file (keys code, api_call, provider, api_data), atomically."""
    rows = (
        {"code": format_code_text(r), "api_call": r.api_call, "provider": r.provider, "api_data": r.api_data}
        for r in records
    )
    _write_jsonl_atomic(rows, Path(path))


def write_api_database(entries: Iterable[dict], path: str | Path) -> None:
    """Write API documentation records (the 10 Gorilla keys, in order) as JSON Lines, atomically."""
    rows = []
    for i, entry in enumerate(entries):
        missing = [k for k in API_DB_KEYS if k not in entry]
        if missing:
            raise ValueError(f"API database entry {i} lacks keys {missing}")
        rows.append({k: entry[k] for k in API_DB_KEYS})
    _write_jsonl_atomic(rows, Path(path))
