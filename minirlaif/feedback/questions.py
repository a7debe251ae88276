"""The 8 yes/no questions the judge answers about every program: the catalogue, as data.

Dutta et al. (2024) ask a larger LLM 8 binary questions per generated program. Four are known from
the paper's summaries (imports, syntax, completeness, undefined variables); the other four are not
public, and we complete the set with API-specific ones (the API exists, fits the task, gets the
right arguments, and the program has no logical bug).

`polarity` says which answer is good: +1 when "Yes" is good, -1 when "Yes" is bad (the paper's
"contains undefined variables" question is inverted so that its "No" earns the credit).
`weight` is the question's default weight in the total score (see `scoring.total_score`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    """One binary question about a program."""

    id: str  # stable short name: a key in caches, weights and reports
    text: str  # what the judge reads; changing it changes the cache key (answers are re-asked)
    polarity: int = 1  # +1: "Yes" is good; -1: "Yes" is bad
    weight: float = 1.0  # default weight in the total score

    def __post_init__(self) -> None:
        if self.polarity not in (1, -1):
            raise ValueError(f"question {self.id!r}: polarity must be +1 or -1, not {self.polarity!r}")
        if self.weight < 0:
            raise ValueError(f"question {self.id!r}: weight must be >= 0, not {self.weight!r}")


QUESTIONS: tuple[Question, ...] = (
    # The four known from the paper.
    Question("imports", "Does the code import every module and class it uses?"),
    Question("syntax", "Is the code free of syntax errors?"),
    Question("complete", "Is the code complete enough to accomplish the task in the instruction?"),
    Question("undefined", "Does the code contain undefined variables?", polarity=-1),
    # Our API-specific completion of the set.
    Question(
        "api_exists",
        "Does the code call an API that really exists (a real function and, where it names one, a real "
        "model or checkpoint id), rather than a made-up one?",
    ),
    Question("api_fits", "Is the API that the code calls suited to the task in the instruction?"),
    Question(
        "api_args",
        "Are the arguments of the API call right for the task (the right model or checkpoint id, argument "
        "names and values)?",
    ),
    Question(
        "no_logic_bugs",
        "Is the code free of logical bugs, so that it would run and produce the result the instruction asks for?",
    ),
)


def question_by_id(qid: str, questions: tuple[Question, ...] | list[Question] = QUESTIONS) -> Question:
    """The question with id `qid` (KeyError naming the known ids otherwise)."""
    for q in questions:
        if q.id == qid:
            return q
    raise KeyError(f"no question {qid!r}; known: {[q.id for q in questions]}")
