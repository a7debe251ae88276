"""Prompt formatting, in one place: record -> model input text, record -> target text, and back.

The encoder reads the instruction (plus Gorilla's optional `###Input`); the decoder writes the
program. With `with_api_call=True` the target first names the call in Gorilla's marker style,
`<<<api_call>>>: ...\\n<<<code>>>: ...`, so Gorilla's AST extraction finds it; `extract_program`
undoes that before a program is run.
"""

from __future__ import annotations

from minirlaif.data.records import APIRecord

API_CALL_MARKER = "<<<api_call>>>: "
CODE_MARKER = "<<<code>>>: "


def format_prompt(record: APIRecord) -> str:
    """The encoder input: the instruction, and the input section when the record has one."""
    text = record.instruction.strip()
    if record.input:
        text += "\nInput: " + record.input.strip()
    return text


def format_target(record: APIRecord, with_api_call: bool = False) -> str:
    """The decoder target: the reference program, optionally preceded by the gold api_call."""
    if with_api_call:
        return f"{API_CALL_MARKER}{record.api_call}\n{CODE_MARKER}{record.code}"
    return record.code


def extract_program(response: str) -> str:
    """The runnable program inside a generated response (drops the api_call header if present)."""
    if CODE_MARKER in response:
        return response.split(CODE_MARKER, 1)[1]
    return response
