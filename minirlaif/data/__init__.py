"""Data: APIBench records, the Gorilla loaders, the built-in benchmark and prompt formatting."""

from minirlaif.data.records import APIRecord, gorilla_dir

__all__ = ["APIRecord", "gorilla_dir"]
