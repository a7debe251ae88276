"""CodeBLEU for Python, written from scratch to give exactly what `codebleu` 0.7.0 (PyPI) gives.

    codebleu = a * ngram_match + b * weighted_ngram_match + c * syntax_match + d * (dataflow_match or 1)

All four components are corpus-level (counts are summed over all pairs before dividing):

1. ngram_match: BLEU-4 on whitespace tokens (NLTK's corpus_bleu):
       p_n = sum_pairs clipped_n / sum_pairs max(1, #hyp n-grams),  clipped_n = sum_g min(c_hyp(g), max_ref c_ref(g))
       BLEU = BP * exp(sum_n 1/4 * log p_n),  BP = exp(1 - R/H) if H <= R (0 if H == 0) else 1
   with H = total hypothesis length, R = sum of the reference lengths closest to each hypothesis (ties: shorter),
   Chen & Cherry method1 smoothing (a zero numerator becomes 0.1), and 0 when no unigram matches at all.
2. weighted_ngram_match: the same formula but *recall* against each reference (summed over references):
       r_n = sum min(c_ref(g), c_hyp(g)) * w(g) / max(1, sum c_ref(g) * w(g))
   where only unigrams are weighted (w = 1 for a Python keyword, 0.2 otherwise; w = 1 for n > 1).
   Package quirk kept: its brevity penalty takes R = 2 per hypothesis (the length of a [tokens, weights] pair).
3. syntax_match: parse with tree-sitter after removing comments and docstrings; every subtree with children
   gives its S-expression (node types, no identifier text).
       syntax = sum_pairs #(reference subtrees whose S-expression occurs in the hypothesis) / #(reference subtrees)
4. dataflow_match: GraphCodeBERT dataflow edges with names normalised to var_i (see codebleu_dataflow.py).
       dataflow = sum_pairs #(reference edges matched one-to-one by hypothesis edges) / #(reference edges)
   and 0 when the references have no edge at all.

Package quirks reproduced on purpose: inputs are `.strip()`-ed; with several references the hypothesis is
comment-stripped once more for each further reference; the combined score uses `dataflow or 1`, so a
dataflow of exactly 0 counts as 1 (an unparsable hypothesis scores 0.25 with default weights).

RL rewards: use only `codebleu_strict` (the plain weighted sum) or the components, never `codebleu`, which
hands that free 0.25 to garbage.

Equality with the package is exact (same float operations in the same order); the one thing the package
leaves to chance, the dataflow's set order, is fixed as explained in codebleu_dataflow.py. Speed: each
distinct text is stripped, tokenised and parsed once per call (the package does it 2-4 times per pair),
the tree is copied once into plain Python objects for the dataflow walk, and subtree S-expressions are
cut out of the root's instead of rendered one by one.
"""

from __future__ import annotations

import gc
import io
import math
import re
import tokenize
from collections import Counter
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

from tree_sitter import Tree

from minirlaif.metrics.codebleu_dataflow import copy_tree, extract_dataflow, normalize_dataflow
from minirlaif.metrics.treesitter import parse_python

# The package's keywords/python.txt, one fact per entry (the soft keywords match/case/type included).
PYTHON_KEYWORDS = frozenset(
    [
        "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class",
        "continue", "def", "del", "elif", "else", "except", "finally", "for", "from", "global",
        "if", "import", "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise",
        "return", "try", "while", "with", "yield", "match", "case", "type",
    ]
)  # fmt: skip
KEYWORD_WEIGHT, OTHER_WEIGHT = 1, 0.2
BLEU_WEIGHTS = (0.25, 0.25, 0.25, 0.25)  # the n-gram components always use BLEU-4, whatever `weights` says
SMOOTHING_EPSILON = 0.1


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector. Scoring makes millions of small objects without cycles
    (reference counting frees them); the collector's repeated scans of them cost ~10% of the run."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ----------------------------------------------------------------------------------------------------
# Comments and docstrings


def strip_comments_and_docstrings(source: str) -> str:
    """Drop comments and statement-level strings, then blank lines. Raises if Python cannot tokenize it.

    A string token is kept only when it is part of an expression: not right after an INDENT or a
    NEWLINE token, and not at column 0. Kept tokens are re-spaced by their columns (so line
    continuations collapse onto one line, as in the package).
    """
    out: list[str] = []
    prev_type = tokenize.INDENT
    last_row, last_col = -1, 0
    for kind, text, (row, col), (end_row, end_col), _ in tokenize.generate_tokens(io.StringIO(source).readline):
        if row > last_row:
            last_col = 0
        if col > last_col:
            out.append(" " * (col - last_col))
        if kind == tokenize.STRING:
            if prev_type not in (tokenize.INDENT, tokenize.NEWLINE) and col > 0:
                out.append(text)
        elif kind != tokenize.COMMENT:
            out.append(text)
        prev_type, last_row, last_col = kind, end_row, end_col
    return "\n".join(line for line in "".join(out).split("\n") if line.strip())


@lru_cache(maxsize=1 << 14)
def _strip_once(source: str) -> str:
    try:
        return strip_comments_and_docstrings(source)
    except Exception:  # untokenizable code (garbage, unclosed brackets, bad dedent) is used as it is
        return source


def _strip_times(source: str, times: int) -> str:
    for _ in range(times):
        stripped = _strip_once(source)
        if stripped == source:  # a fixed point: further passes change nothing
            break
        source = stripped
    return source


# ----------------------------------------------------------------------------------------------------
# Components 1 and 2: (weighted) BLEU on whitespace tokens


class _Ngrams:
    """Whitespace tokens of one text and their n-gram counts for n = 1..4, shared by both BLEU components."""

    def __init__(self, text: str):
        self.length = len(tokens := text.split())
        # Counters keep first-occurrence order, which fixes the order of the float sums below (as in the package).
        self.counts = [Counter(zip(*(tokens[i:] for i in range(n)))) for n in range(1, 5)]


def _brevity_penalty(ref_len: int, hyp_len: int) -> float:
    if hyp_len > ref_len:
        return 1
    if hyp_len == 0:
        return 0
    return math.exp(1 - ref_len / hyp_len)


def _combine_precisions(numerators: list, denominators: list, ref_len: int, hyp_len: int) -> float:
    """BP * exp(sum_n w_n log(p_n)), method1-smoothed, 0 without unigram matches (same float ops as NLTK)."""
    if numerators[0] == 0:
        return 0.0
    logs = (
        w * math.log((num if num != 0 else num + SMOOTHING_EPSILON) / den)
        for w, num, den in zip(BLEU_WEIGHTS, numerators, denominators)
    )
    return _brevity_penalty(ref_len, hyp_len) * math.exp(math.fsum(logs))


def _ngram_match(references: list[list[_Ngrams]], hypotheses: list[_Ngrams]) -> float:
    """Corpus BLEU-4 with clipped (modified) n-gram precision."""
    numerators, denominators = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for refs, hyp in zip(references, hypotheses):
        for n in range(4):
            hyp_counts = hyp.counts[n]
            if len(refs) == 1:
                best = refs[0].counts[n]
            else:  # the most times each n-gram occurs in one reference
                best = {g: max(ref.counts[n].get(g, 0) for ref in refs) for g in hyp_counts}
            numerators[n] += sum(min(c, best.get(g, 0)) for g, c in hyp_counts.items())
            denominators[n] += max(1, sum(hyp_counts.values()))
        hyp_len += hyp.length
        ref_len += min((r.length for r in refs), key=lambda r: (abs(r - hyp.length), r))  # closest; ties: shorter
    return _combine_precisions(numerators, denominators, ref_len, hyp_len)


def _weighted_total(counts: dict[tuple[str, ...], int]) -> float:
    total = 0  # accumulated left to right, in the counts' order, exactly as the package does
    for (token,), count in counts.items():
        total += count * (KEYWORD_WEIGHT if token in PYTHON_KEYWORDS else OTHER_WEIGHT)
    return total


def _weighted_ngram_match(references: list[list[_Ngrams]], hypotheses: list[_Ngrams]) -> float:
    """Keyword-weighted n-gram *recall* (weights on unigrams only), summed over every reference."""
    numerators, denominators = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for refs, hyp in zip(references, hypotheses):
        for n in range(4):
            hyp_counts = hyp.counts[n]
            pair_num = pair_den = 0
            for ref in refs:
                ref_counts = ref.counts[n]
                clipped = {g: min(c, hyp_counts.get(g, 0)) for g, c in ref_counts.items()}
                if n == 0:
                    pair_num += _weighted_total(clipped)
                    pair_den += max(1, _weighted_total(ref_counts))
                else:
                    pair_num += sum(clipped.values())
                    pair_den += max(1, sum(ref_counts.values()))
            numerators[n] += pair_num
            denominators[n] += pair_den
        hyp_len += hyp.length
        ref_len += 2  # quirk: the package measures len([tokens, weights]) == 2 as the reference length
    return _combine_precisions(numerators, denominators, ref_len, hyp_len)


# ----------------------------------------------------------------------------------------------------
# Components 3 and 4: syntax and dataflow, from one parse per distinct (stripped) program


_PARENS = re.compile(r"[()]")


def _subtree_sexps(tree: Tree, visible: list[str | None]) -> list[str]:
    """str(node) for the root and for every node that has children, as the package collects them.

    A node's S-expression is exactly its part of its parent's, so we render the root once and cut the
    others out of it: the k-th "(" opens the k-th entry of `visible` (named/MISSING nodes in pre-order,
    their type when they count, else None). This saves tree-sitter rendering each subtree again (the
    strings total O(size x depth)). Trees with MISSING/UNEXPECTED nodes, whose renderings may quote
    parentheses, and any mismatch, take the plain path.
    """
    whole = str(tree.root_node)
    if "MISSING" not in whole and "UNEXPECTED" not in whole and whole.count("(") == len(visible):
        sexps, opened, k = [], [], 0
        for paren in _PARENS.finditer(whole):
            if paren.group() == "(":
                opened.append((paren.start(), visible[k]))
                k += 1
                continue
            start, kind = opened.pop()
            if kind is None:
                continue
            if not whole.startswith(kind, start + 1) or whole[start + 1 + len(kind)] not in " )":
                break  # out of step: should not happen; fall back
            sexps.append(whole[start : paren.end()])
        else:
            return sexps
    sexps, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        sexps.append(str(node))
        stack.extend(child for child in node.children if child.child_count)
    return sexps


class _Program:
    """One comment-stripped program, parsed once: its subtree S-expressions and dataflow edges."""

    def __init__(self, code: str):
        tree = parse_python(code)
        root, visible = copy_tree(tree, code)
        self.sexp_counts = Counter(_subtree_sexps(tree, visible))
        self.dataflow = normalize_dataflow(extract_dataflow(root))


def _syntax_and_dataflow_match(references: list[list[str]], hypotheses: list[str]) -> tuple[float, float]:
    """Corpus syntax_match and dataflow_match (inputs already `.strip()`-ed)."""
    programs: dict[str, _Program] = {}

    def program(code: str) -> _Program:
        if code not in programs:
            programs[code] = _Program(code)
        return programs[code]

    syntax_hits = syntax_total = flow_hits = flow_total = 0
    for refs, hyp in zip(references, hypotheses):
        for k, ref in enumerate(refs, start=1):
            cand, gold = program(_strip_times(hyp, k)), program(_strip_once(ref))
            syntax_hits += sum(c for sexp, c in gold.sexp_counts.items() if sexp in cand.sexp_counts)
            syntax_total += sum(gold.sexp_counts.values())
            flow_hits += sum(min(c, cand.dataflow[edge]) for edge, c in gold.dataflow.items())
            flow_total += sum(gold.dataflow.values())
    dataflow = flow_hits / flow_total if flow_total else 0.0  # the package warns and returns 0 here
    return syntax_hits / syntax_total, dataflow


# ----------------------------------------------------------------------------------------------------


def codebleu(
    references: list[str] | list[list[str]],
    hypotheses: list[str],
    weights: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25),
) -> dict[str, float]:
    """Corpus CodeBLEU of `hypotheses` against `references` (a string or a list of strings per hypothesis).

    Returns the four components, `codebleu` (package-compatible: a dataflow of 0 counts as 1) and
    `codebleu_strict` (the plain weighted sum). Only `codebleu_strict` or the components are fit to be
    an RL reward.
    """
    assert len(references) == len(hypotheses) > 0, "need one reference (or list of them) per hypothesis"
    assert len(weights) == 4, "weights are (ngram, weighted_ngram, syntax, dataflow)"
    refs = [[r.strip() for r in ref] if isinstance(ref, list) else [ref.strip()] for ref in references]
    hyps = [h.strip() for h in hypotheses]
    with _gc_paused():
        ngrams: dict[str, _Ngrams] = {}  # each distinct text is counted once
        for text in hyps + [r for rs in refs for r in rs]:
            if text not in ngrams:
                ngrams[text] = _Ngrams(text)
        ref_ngrams = [[ngrams[r] for r in rs] for rs in refs]
        hyp_ngrams = [ngrams[h] for h in hyps]
        ngram = _ngram_match(ref_ngrams, hyp_ngrams)
        weighted = _weighted_ngram_match(ref_ngrams, hyp_ngrams)
        syntax, dataflow = _syntax_and_dataflow_match(refs, hyps)
    a, b, c, d = weights
    return {
        "codebleu": a * ngram + b * weighted + c * syntax + d * (dataflow or 1),
        "codebleu_strict": a * ngram + b * weighted + c * syntax + d * dataflow,
        "ngram_match": ngram,
        "weighted_ngram_match": weighted,
        "syntax_match": syntax,
        "dataflow_match": dataflow,
    }
