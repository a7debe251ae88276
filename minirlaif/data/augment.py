"""Value-swap augmentation for SFT: make copying the instruction's numbers the only way to fit the data.

The built-in training programs draw their values from small pools, so a tiny model can fit them by
memorising a usual value per API (`year = 2015` whatever year was asked) and never learn to copy. With
`train_sft.py --value-swap P`, a fraction P of the training records get every number that appears both in the
program and, as a whole number, in the instruction replaced, in both places alike, by a random number of a
similar length:

    "Compute the GCD of 84 and 36."   import math / a = 84 / b = 36 ...
 -> "Compute the GCD of 507 and 9."   import math / a = 507 / b = 9 ...

Generic: Python's tokenizer finds the program's numbers, and nothing depends on the API or the slot. Only
integers written in decimal are swapped (a scratch prototype that also gave strings random letters, not
kept, made the tiny model's greedy programs repeat themselves). A swapped program may no longer run (month 47): SFT only learns to copy.
"""

from __future__ import annotations

import dataclasses
import io
import random
import re
import tokenize
from typing import Sequence

from minirlaif.data.records import APIRecord


def _random_number(text: str, rng: random.Random) -> str:
    """A random decimal integer with one digit more, the same number or one fewer than `text` (at least 1)."""
    digits = max(1, len(text) + rng.choice([-1, 0, 0, 1]))
    return str(rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10 ** digits))


def swap_numbers(instruction: str, program: str, rng: random.Random) -> tuple[str, str]:
    """(instruction, program) with every integer shared by the two replaced consistently (the same old number
    always becomes the same new one); unchanged when they share none or the program does not tokenize."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(program).readline)
                  if t.type == tokenize.NUMBER and t.string.isdigit()]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return instruction, program
    # a whole number in the instruction: not part of a word, a longer number or a decimal
    whole = {n: rf"(?<![\w.]){n}(?![\w]|\.\d)" for n in dict.fromkeys(t.string for t in tokens)}
    new = {n: _random_number(n, rng) for n, pattern in whole.items() if re.search(pattern, instruction)}
    if not new:
        return instruction, program
    lines = program.split("\n")
    for t in reversed(tokens):  # right to left, so earlier columns stay valid
        if t.string in new:
            row, (start, end) = t.start[0] - 1, (t.start[1], t.end[1])
            lines[row] = lines[row][:start] + new[t.string] + lines[row][end:]
    olds = list(new)
    either = re.compile("|".join(f"(?P<n{i}>{whole[n]})" for i, n in enumerate(olds)))  # one pass: no double swap
    instruction = either.sub(lambda m: new[olds[int(m.lastgroup[1:])]], instruction)
    return instruction, "\n".join(lines)


def value_swapped(records: Sequence[APIRecord], fraction: float, seed: int) -> list[APIRecord]:
    """The records with a seeded `fraction` of them number-swapped (the rest, and the order, unchanged)."""
    rng = random.Random(f"value-swap/{seed}")
    out = []
    for r in records:
        if rng.random() < fraction:
            instruction, code = swap_numbers(r.instruction, r.code, rng)
            r = dataclasses.replace(r, instruction=instruction, code=code)
        out.append(r)
    return out
