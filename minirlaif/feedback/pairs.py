"""From scored programs to preference pairs for the reward model, plus score statistics and JSONL I/O.

The policy samples k programs per prompt; the judge scores each. Within one prompt, a program whose
score beats another's by more than `margin` becomes `chosen` against it (`rejected`). The margin
keeps pairs whose order is mostly the judge's noise out of the reward model's training data.

    best_worst  one pair per prompt: its best program against its worst (ties: the first sampled)
    all         every pair of programs of a prompt whose scores differ by more than the margin
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from minirlaif.errors import InputError, where
from minirlaif.feedback.scoring import Answer, Feedback
from minirlaif.jsonl import read_jsonl, write_jsonl_atomic

STRATEGIES = ("best_worst", "all")


@dataclass
class ScoredSample:
    """One sampled program for one prompt, with its judge score (and the answers behind it)."""

    prompt: str
    response: str
    score: float
    feedback: Feedback | None = None
    meta: dict = field(default_factory=dict)  # e.g. the record's source and line


@dataclass
class Pair:
    """A preference: `chosen` scored more than `margin` above `rejected`, for the same prompt."""

    prompt: str
    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float


def group_by_prompt(samples: Iterable[ScoredSample]) -> dict[str, list[ScoredSample]]:
    """Samples grouped by prompt, prompts and samples in first-seen order."""
    groups: dict[str, list[ScoredSample]] = {}
    for s in samples:
        groups.setdefault(s.prompt, []).append(s)
    return groups


def _pair(prompt: str, chosen: ScoredSample, rejected: ScoredSample) -> Pair:
    return Pair(prompt, chosen.response, rejected.response, chosen.score, rejected.score)


def build_pairs(samples: Iterable[ScoredSample], margin: float = 0.1, strategy: str = "best_worst") -> list[Pair]:
    """Preference pairs (chosen, rejected) whose score gap is strictly greater than `margin`."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pair strategy {strategy!r}; expected one of {STRATEGIES}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, not {margin!r}")
    pairs: list[Pair] = []
    for prompt, group in group_by_prompt(samples).items():
        if strategy == "best_worst":
            best = max(group, key=lambda s: s.score)  # max/min keep the first of equal scores
            worst = min(group, key=lambda s: s.score)
            if best.score - worst.score > margin:
                pairs.append(_pair(prompt, best, worst))
            continue
        for a in range(len(group)):
            for b in range(a + 1, len(group)):
                hi, lo = (group[a], group[b]) if group[a].score >= group[b].score else (group[b], group[a])
                if hi.score - lo.score > margin and hi.response != lo.response:
                    pairs.append(_pair(prompt, hi, lo))
    return pairs


def score_stats(samples: Iterable[ScoredSample], margin: float = 0.1, bins: int = 10) -> dict:
    """The score distribution and how many prompts yield a pair: numbers for logs and reports.

    Keys: n_samples, n_prompts, mean, std, min, max, histogram (counts over `bins` equal bins of
    [0, 1]), frac_prompts_with_pair (best - worst > margin), mean_gap (mean best - worst per
    prompt), pairs_best_worst, pairs_all, and question_means (mean P(good) per question, over the
    samples that carry their answers).
    """
    samples = list(samples)
    scores = [s.score for s in samples]
    groups = group_by_prompt(samples)
    n = len(scores)
    mean = sum(scores) / n if n else math.nan
    gaps = [max(s.score for s in g) - min(s.score for s in g) for g in groups.values()]
    histogram = [0] * bins
    for x in scores:
        histogram[min(bins - 1, max(0, int(x * bins)))] += 1
    per_question: dict[str, list[float]] = {}
    for s in samples:
        for a in s.feedback.answers if s.feedback else []:
            per_question.setdefault(a.question_id, []).append(a.p_good)
    return {
        "n_samples": n,
        "n_prompts": len(groups),
        "mean": mean,
        "std": math.sqrt(sum((x - mean) ** 2 for x in scores) / n) if n else math.nan,
        "min": min(scores, default=math.nan),
        "max": max(scores, default=math.nan),
        "histogram": histogram,
        "frac_prompts_with_pair": sum(g > margin for g in gaps) / len(gaps) if gaps else 0.0,
        "mean_gap": sum(gaps) / len(gaps) if gaps else 0.0,
        "pairs_best_worst": len(build_pairs(samples, margin, "best_worst")),
        "pairs_all": len(build_pairs(samples, margin, "all")),
        "question_means": {q: sum(v) / len(v) for q, v in per_question.items()},
    }


# ------------------------------------------------------------------------------------------------
# JSON Lines files (written atomically: a crash leaves the old file or the new one, never half).


def _read_jsonl(path: str | Path, required: Sequence[str]) -> Iterable[tuple[int, dict]]:
    for lineno, row in read_jsonl(path):
        missing = [k for k in required if k not in row]
        if missing:
            raise InputError(f"{where(path, lineno, missing[0])} missing (each line needs {list(required)})")
        yield lineno, row


def write_scored_samples(samples: Iterable[ScoredSample], path: str | Path) -> None:
    """One line per sample: prompt, response, score, meta, and every answer (or null)."""
    write_jsonl_atomic(
        (
            {
                "prompt": s.prompt,
                "response": s.response,
                "score": s.score,
                "answers": [asdict(a) for a in s.feedback.answers] if s.feedback else None,
                "meta": s.meta,
            }
            for s in samples
        ),
        path,
    )


def read_scored_samples(path: str | Path) -> list[ScoredSample]:
    out = []
    for _, row in _read_jsonl(path, ("prompt", "response", "score")):
        answers = row.get("answers")
        feedback = Feedback([Answer(**a) for a in answers], row["score"]) if answers is not None else None
        out.append(ScoredSample(row["prompt"], row["response"], float(row["score"]), feedback, row.get("meta") or {}))
    return out


def write_pairs(pairs: Iterable[Pair], path: str | Path) -> None:
    """One line per pair: prompt, chosen, rejected, chosen_score, rejected_score."""
    write_jsonl_atomic((asdict(p) for p in pairs), path)


def read_pairs(path: str | Path) -> list[Pair]:
    fields = ("prompt", "chosen", "rejected", "chosen_score", "rejected_score")
    return [Pair(**{k: row[k] for k in fields}) for _, row in _read_jsonl(path, fields)]
