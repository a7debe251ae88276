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


def build_judge(settings, data, device) -> Judge:
    """The judge a script's JudgeSettings (--judge, --judge-model, --judge-base-url, --judge-workers) ask for;
    the analyzer reads the API database and hub of `data` (a splits.Dataset)."""
    if settings.judge == "analyzer":
        return make_judge("analyzer", api_database=data.api_database, hub=data.hub)
    if settings.judge == "openai":
        return make_judge("openai", model=settings.judge_model, base_url=settings.judge_base_url or None,
                          max_workers=settings.judge_workers)
    return make_judge("hf", path=settings.judge_model, device=str(device))


__all__ = [
    "AnalyzerJudge", "BACKENDS", "build_judge", "HFJudge", "Item", "Judge", "JudgeAuthError", "JudgeError", "OpenAIJudge",
    "Query", "RawAnswer", "make_judge",
]
