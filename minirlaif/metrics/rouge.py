"""ROUGE-L on code tokens.

rouge-score's default tokenizer lower-cases and turns every non-alphanumeric character into a space,
so `a+b` and `a-b` score the same (shared/docs/metrics-reference.md, 5.2). Here the text is split
into code tokens instead (`code_tokens`), and ROUGE-L is computed on those:

    LCS = length of the longest common subsequence of the two token lists
    P = LCS / |hypothesis|,  R = LCS / |reference|,  F = 2PR / (P + R)   (0 when either list is empty)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

# One alternative per token kind, tried in this order at each position. Whitespace is skipped.
_TOKEN = re.compile(
    r"""
    (?:[rRbBuUfF]{1,2})?(?:'''[\s\S]*?'''|\"\"\"[\s\S]*?\"\"\")   # triple-quoted string
  | (?:[rRbBuUfF]{1,2})?(?:'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")  # one-line string
  | 0[xXoObB][0-9a-fA-F_]+                                       # hex / octal / binary number
  | (?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?[jJ]?        # decimal number
  | [^\W\d]\w*                                                   # identifier / keyword
  | \*\*=|//=|>>=|<<=|\.\.\.|->|:=|==|!=|<=|>=|\*\*|//|<<|>>      # multi-character operators
  | [-+*/%@&|^]=                                                 # augmented assignment
  | \S                                                           # any other single character
    """,
    re.VERBOSE,
)


def code_tokens(text: str) -> list[str]:
    """Split code into tokens: string literals (with prefix, one token each), numbers, identifiers,
    multi-character operators (`==`, `**`, `->`, `+=`, ...), and every other non-space character on
    its own. Whitespace is dropped. Comments are not special: `# load model` gives `#`, `load`,
    `model`. An unterminated quote (`don't`) is a one-character token.

    >>> code_tokens("x = f(a+b, 'hi there')  # ok")
    ['x', '=', 'f', '(', 'a', '+', 'b', ',', "'hi there'", ')', '#', 'ok']
    """
    return _TOKEN.findall(text)


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (dynamic programming, O(|a|·|b|) time, O(|b|) memory)."""
    if len(a) < len(b):
        a, b = b, a  # keep the row short
    row = [0] * (len(b) + 1)
    for x in a:
        diag = 0  # row[j-1] of the previous row
        for j, y in enumerate(b, start=1):
            up = row[j]
            row[j] = diag + 1 if x == y else max(up, row[j - 1])
            diag = up
    return row[len(b)]


def rouge_l(reference: str, hypothesis: str, tokenize: Callable[[str], list[str]] = code_tokens) -> float:
    """ROUGE-L F1 between two code strings (F = 2PR/(P+R) with P = LCS/|hyp|, R = LCS/|ref|)."""
    ref, hyp = tokenize(reference), tokenize(hypothesis)
    if not ref or not hyp:
        return 0.0
    lcs = lcs_length(ref, hyp)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l_corpus(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Mean sentence-level ROUGE-L F1 over aligned pairs (0.0 for no pairs)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        return 0.0
    return sum(rouge_l(r, h) for r, h in zip(references, hypotheses)) / len(references)
