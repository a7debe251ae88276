"""Judge backends, one interface (`Judge.ask(query) -> RawAnswer`), and `make_judge` to pick one by name."""

from __future__ import annotations

from minirlaif.feedback.judges.analyzer import AnalyzerJudge
from minirlaif.feedback.judges.base import Item, Judge, JudgeAuthError, JudgeError, Query, RawAnswer
from minirlaif.feedback.judges.hf_judge import HFJudge
from minirlaif.feedback.judges.openai_judge import OpenAIJudge

BACKENDS = {"openai": OpenAIJudge, "hf": HFJudge, "analyzer": AnalyzerJudge}


def make_judge(backend: str, **kwargs) -> Judge:
    """A judge by backend name: "openai" (OpenAIJudge), "hf" (HFJudge) or "analyzer" (AnalyzerJudge).

    kwargs go to the class: e.g. make_judge("openai", model="gpt-3.5-turbo"),
    make_judge("hf", path="runs/judge"), make_judge("analyzer", api_database=db, hub="builtin").
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown judge backend {backend!r}; expected one of {sorted(BACKENDS)}")
    return BACKENDS[backend](**kwargs)


__all__ = [
    "AnalyzerJudge", "BACKENDS", "HFJudge", "Item", "Judge", "JudgeAuthError", "JudgeError", "OpenAIJudge",
    "Query", "RawAnswer", "make_judge",
]
