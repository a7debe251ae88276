"""The one exception type for bad user input; scripts turn it into a one-line message and exit 2."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user: a file, a line, a field, a flag. The message says what and how to fix it.

    Build messages with `where()` so they always read `path:line: field: problem (fix)`.
    """


def where(path: object, line: int | None = None, field: str | None = None) -> str:
    """`path:line: field:` prefix for error messages (parts left out when unknown)."""
    out = str(path)
    if line is not None:
        out += f":{line}"
    if field:
        out += f": field '{field}'"
    return out
