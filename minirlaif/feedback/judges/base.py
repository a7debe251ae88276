"""The one interface every judge backend implements, and the values that cross it.

A judge answers one question about one program: `judge.ask(query) -> RawAnswer`. LLM judges read
`query.messages` (the chat prompt); the offline analyzer reads the structured `query.item` instead.
Judges may be called from several threads at once (the labelling driver runs up to `max_workers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from minirlaif.feedback.questions import Question


class JudgeError(RuntimeError):
    """A judge could not give a valid Yes/No answer (after its retries), or was misconfigured."""


class JudgeAuthError(JudgeError):
    """The judge's server refused our credentials (HTTP 401/403): retrying cannot help."""


class Item(NamedTuple):
    """What the judge looks at: the instruction, the gold API's documentation, the program, the record.

    `record` (an APIRecord) is optional for LLM judges and required by the analyzer, which compares
    the program's API call with the gold one.
    """

    instruction: str
    api_data: dict
    program: str
    record: Any = None


@dataclass(frozen=True)
class Query:
    """One question about one item, with the chat messages that ask it."""

    item: Item
    question: Question
    messages: list[dict]


@dataclass
class RawAnswer:
    """A backend's answer: the Yes/No text and P(yes).

    `p_yes` is None when the backend has no probabilities; the driver then takes 1/0 from `text`.
    """

    text: str
    p_yes: float | None
    source: str = ""  # "logprobs", "text", "logits" or "analysis"
    tokens: int = 0  # tokens billed (prompt + completion, all attempts), from the API's usage field
    detail: dict = field(default_factory=dict)


class Judge:
    """Base class. Subclasses set `name` ("backend:model", part of every cache key) and implement `ask`."""

    name: str = "judge"
    max_workers: int = 1  # how many `ask` calls the driver may run at once
    price_per_1k: float = 0.0  # cost per 1000 billed tokens (0 for local backends)

    def ask(self, query: Query) -> RawAnswer:
        raise NotImplementedError

    def prepare(self, programs: list[str]) -> None:
        """Optional hook, called by `label` with the programs it is about to ask about (cache misses
        only), e.g. to run them all in parallel first. The default does nothing."""

    def __repr__(self) -> str:  # never shows credentials
        return f"{type(self).__name__}({self.name!r})"
