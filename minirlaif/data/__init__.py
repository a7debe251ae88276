"""Data: APIBench records, the Gorilla loaders, the built-in benchmark and prompt formatting."""

from minirlaif.data.apibench import (
    clean_response_text,
    load_api_database,
    load_apibench,
    load_questions,
    load_responses,
    parse_code_text,
    unescape_gorilla_text,
    write_api_database,
    write_apibench,
)
from minirlaif.data.records import APIRecord, gorilla_dir

__all__ = [
    "APIRecord", "gorilla_dir",
    "load_apibench", "load_api_database", "load_questions", "load_responses",
    "parse_code_text", "unescape_gorilla_text", "clean_response_text",
    "write_apibench", "write_api_database",
]
