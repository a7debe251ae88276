"""Variants of a sampled program, for reward-model pairs that differ in one thing only (issue 14: the RM ranked
pairs that differ only in the arguments below chance, and told a fitting API from another of its domain
barely better than chance; few natural pairs differ only there).

    argument variant = the program with ONE number or string literal replaced by another of the same kind
    API variant      = the program with its API's name replaced by another API of the same domain and module

Generic, nothing about the benchmark: Python's own tokenizer finds the literals (a number moves by a random
non-zero offset, a string gets one character changed); the other APIs come from the API database. The judge
then scores the variant like any sample, so a variant that happens to stay right (a literal the call never
uses; on a Gorilla hub, another model of the same task) is scored as such and makes no pair. Seeded: the same
program and generator state give the same variant.
"""

from __future__ import annotations

import io
import random
import re
import tokenize
from typing import Sequence

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


def module_of(api_name: str) -> str:
    """What an API name is called on: `np.linalg` for `np.linalg.det`, '' for a bare name or a model id."""
    return api_name.rsplit(".", 1)[0] if "." in api_name and "/" not in api_name else ""


def same_domain_alternatives(api_database: Sequence[dict], gold: dict) -> list[str]:
    """The other API names of the gold API's domain that are called on the same module (so that the program's
    imports still cover them): an API variant then differs from its original in the API alone."""
    name = gold.get("api_name", "")
    return sorted({e["api_name"] for e in api_database if e.get("domain") == gold.get("domain")
                   and e.get("api_name") and e["api_name"] != name and module_of(e["api_name"]) == module_of(name)})


def api_variant(program: str, api_name: str, alternatives: Sequence[str], rng: random.Random) -> str | None:
    """The program with every whole-word occurrence of `api_name` replaced by one of `alternatives`, or None when
    the program does not name it or there is no alternative."""
    pattern = re.compile(r"(?<![\w.])" + re.escape(api_name) + r"(?![\w])")
    if not alternatives or not pattern.search(program):
        return None
    other = rng.choice(list(alternatives))
    return pattern.sub(lambda _: other, program)


def api_variant_items(programs: list[str], apis: list[tuple[str, list[str]]], count: int,
                      seed: int) -> list[tuple[int, str]]:
    """(index into `programs`, variant) for up to `count` API variants of each program; apis[i] is program i's
    (gold API name, its same-domain alternatives). Each draw has its own seeded generator; repeats are dropped."""
    out = []
    for i, (program, (name, alternatives)) in enumerate(zip(programs, apis)):
        seen = set()
        for j in range(count):
            variant = api_variant(program, name, alternatives, random.Random(f"api:{seed}:{i}:{j}"))
            if variant is not None and variant not in seen:
                seen.add(variant)
                out.append((i, variant))
    return out
