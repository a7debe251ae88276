"""The one exception type for bad user input; scripts turn it into a one-line message and exit 2."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user: a file, a line, a field, a flag. The message says what and how to fix it.

    Build messages with `where()` so they always read `path:line: field: problem (fix)`.
    """


class RunStopped(RuntimeError):
    """A run stopped on purpose (a non-finite loss, a judge that gave up): the message says why, what was
    kept and how to go on (`--resume`). Scripts print it as one line on stderr and exit 1."""


def where(path: object, line: int | None = None, field: str | None = None) -> str:
    """`path:line: field:` prefix for error messages (parts left out when unknown)."""
    out = str(path)
    if line is not None:
        out += f":{line}"
    if field:
        out += f": field '{field}'"
    return out
