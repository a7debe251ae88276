"""Argument variants: a sampled program with one literal value changed, for reward-model pairs that differ
only in a value (issue 14: the RM ranked such pairs below chance; few natural pairs differ only there).

    variant = the program with ONE number or string literal replaced by another of the same kind

Generic Python, nothing about the benchmark: Python's own tokenizer finds the literals; a number moves by
a random non-zero offset, a string gets one character changed. The judge then scores the variant like any
sample, so a variant that happens to stay right (a literal the call never uses) is scored right and makes
no pair. Seeded: the same program and generator state give the same variant.
"""

from __future__ import annotations

import io
import random
import tokenize

LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"


def literal_spans(program: str) -> list[tuple[int, int, int]]:
    """(line index, start column, end column) of every single-line NUMBER or STRING token."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(program).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return []
    return [(t.start[0] - 1, t.start[1], t.end[1]) for t in tokens
            if t.type in (tokenize.NUMBER, tokenize.STRING) and t.start[0] == t.end[0]]


def changed_literal(text: str, rng: random.Random) -> str | None:
    """Another literal of the same kind: a number moved by a non-zero offset, or a string with one character
    changed. None when the literal cannot be changed this way (an empty string, an f-string, a complex number)."""
    if text[-1] in "\"'":
        quote = 3 if text.endswith(text[-1] * 3) and len(text) >= 6 else 1
        prefix = len(text) - len(text.lstrip("rRbBuUfF"))
        if "f" in text[:prefix].lower():
            return None  # an f-string: a changed brace would break it, not its value
        body_start, body_end = prefix + quote, len(text) - quote
        if body_end <= body_start:
            return None
        i = rng.randrange(body_start, body_end)
        if text[i] == "\\" or (i > body_start and text[i - 1] == "\\"):
            return None  # leave escapes alone: the variant must stay a valid literal
        new = rng.choice([c for c in LETTERS if c != text[i].lower()])
        return text[:i] + new + text[i + 1 :]
    try:
        value = int(text) if text.isdigit() else int(text, 0) if text[:2].lower() in ("0x", "0o", "0b") else float(text)
    except ValueError:
        return None  # complex numbers and other odd forms
    offset = rng.choice([1, 2, 3, 7, 10]) * rng.choice([-1, 1])
    if isinstance(value, int):
        return str(value + offset if value + offset >= 0 else value - offset)  # literals are never negative
    return repr(value + offset / 2)


def argument_variant(program: str, rng: random.Random) -> str | None:
    """The program with one randomly chosen literal changed, or None when it has no changeable literal."""
    spans = literal_spans(program)
    rng.shuffle(spans)
    lines = program.split("\n")
    for line, start, end in spans:
        new = changed_literal(lines[line][start:end], rng)
        if new is not None and new != lines[line][start:end]:
            lines[line] = lines[line][:start] + new + lines[line][end:]
            return "\n".join(lines)
    return None


def variant_items(programs: list[str], count: int, seed: int) -> list[tuple[int, str]]:
    """(index into `programs`, variant) for `count` variants of each program, each drawn with its own seeded
    generator; programs without a changeable literal give none."""
    out = []
    for i, program in enumerate(programs):
        for j in range(count):
            variant = argument_variant(program, random.Random(f"{seed}:{i}:{j}"))
            if variant is not None:
                out.append((i, variant))
    return out
