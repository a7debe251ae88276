"""From a judge's Yes/No answers to numbers: P(yes), P(good) per question, and the total score.

P(yes) comes from the answer token's top log-probabilities when the backend gives them: the
probability mass of every spelling of "yes" (" Yes", "yes", "YES", ...) against that of "no",
p_yes = y / (y + n). This soft label carries the judge's confidence, which a hard 1/0 throws away.
Without log-probabilities P(yes) is 1 or 0 from the answer text. An answer that is neither Yes nor
No is never turned into a label here (`yes_or_no` returns None and the judge raises).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from minirlaif.feedback.questions import Question

# A leading "yes"/"no" word, whatever the case, spaces, quotes or tokenizer space markers
# (SentencePiece "▁", GPT-2 "Ġ") around it; "Yesterday" or "Not" do not count.
_YES_NO = re.compile(r"^[\s▁Ġ\"'`*(\[]*(yes|no)\b", re.IGNORECASE)


def yes_or_no(text: str) -> str | None:
    """'yes' or 'no' when `text` (an answer or a token) starts with that word, else None."""
    m = _YES_NO.match(text)
    return m.group(1).lower() if m else None


def p_yes_from_logprobs(top_logprobs: Mapping[str, float] | Iterable[tuple[str, float]]) -> float | None:
    """P(yes) normalised over the yes- and no-variants among the top tokens; None when there are none.

    `top_logprobs` maps token -> natural-log probability (a dict, or (token, logprob) pairs).
    """
    items = top_logprobs.items() if isinstance(top_logprobs, Mapping) else top_logprobs
    y = n = 0.0
    for token, logprob in items:
        kind = yes_or_no(token)
        if kind == "yes":
            y += math.exp(logprob)
        elif kind == "no":
            n += math.exp(logprob)
    if y + n <= 0.0:
        return None
    return y / (y + n)


def p_good(p_yes: float, polarity: int) -> float:
    """P(the answer is the good one): p_yes for a "yes is good" question, 1 - p_yes otherwise."""
    return p_yes if polarity > 0 else 1.0 - p_yes


@dataclass
class Answer:
    """One question's answer about one program, with everything needed to audit it."""

    question_id: str
    answer: str  # "Yes" or "No": the judge's answer
    p_yes: float  # P(yes) in [0, 1]
    p_good: float  # P(good answer): p_yes, or 1 - p_yes for a polarity -1 question
    cached: bool = False  # True when it came from the cache instead of the judge
    source: str = ""  # how p_yes was obtained: "logprobs", "text" (1/0 from the answer), "logits", "analysis"
    tokens: int = 0  # tokens the API billed when it was asked (0 for local judges)
    detail: dict = field(default_factory=dict)  # backend extras: top log-probs, the analyzer's reason


@dataclass
class Feedback:
    """All answers about one program, and their weighted total score in [0, 1]."""

    answers: list[Answer]
    score: float

    def p_good_by_id(self) -> dict[str, float]:
        return {a.question_id: a.p_good for a in self.answers}


def resolve_weights(questions: Sequence[Question], weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """Per-question weights: the questions' defaults, overridden by `weights` (question id -> weight)."""
    out = {q.id: float(q.weight) for q in questions}
    for qid, w in (weights or {}).items():
        if qid not in out:
            raise ValueError(f"weight given for unknown question {qid!r}; known: {list(out)}")
        if w < 0 or not math.isfinite(w):
            raise ValueError(f"weight of question {qid!r} must be a finite number >= 0, not {w!r}")
        out[qid] = float(w)
    if sum(out.values()) <= 0:
        raise ValueError("question weights sum to 0: at least one question must count")
    return out


def total_score(answers: Sequence[Answer], weights: Mapping[str, float]) -> float:
    """sum_i w_i * p_good_i / sum_i w_i over the answered questions."""
    num = sum(weights[a.question_id] * a.p_good for a in answers)
    den = sum(weights[a.question_id] for a in answers)
    if den <= 0:
        raise ValueError("the answered questions' weights sum to 0")
    return num / den


def parse_weights(text: str, questions: Sequence[Question] | None = None) -> dict[str, float]:
    """'api_fits=2,api_args=2' -> {'api_fits': 2.0, 'api_args': 2.0} (unnamed questions keep their weight);
    InputError naming the bad part (--weights is a flag)."""
    from minirlaif.errors import InputError
    from minirlaif.feedback.questions import QUESTIONS

    known = {q.id for q in (questions or QUESTIONS)}
    weights = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in known or not value:
            raise InputError(f"--weights {text!r}: '{part}' is not question_id=weight (ids: {sorted(known)})")
        weights[name] = float(value)
    return weights
