"""The labelling driver: ask a judge every question about every program, through the cache.

    feedbacks = label(judge, items, cache=FeedbackCache("runs/feedback.jsonl"))

For each (item, question): build the prompt, look its key up in the cache, and ask the judge only
on a miss (up to `workers` questions at once). Each answer is written to the cache as soon as it
arrives, by the thread that received it, so a killed run resumes where it stopped. A question that
occurs twice (the same program sampled twice for one instruction) is asked once.
The progress bar counts questions done, cache hits, billed tokens and their cost.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Iterable, Mapping, Sequence

from minirlaif.progress import progress_bar

from minirlaif.feedback.cache import FeedbackCache, cache_key
from minirlaif.feedback.judges.base import Item, Judge, JudgeError, Query, RawAnswer
from minirlaif.feedback.prompts import build_messages, prompt_text
from minirlaif.feedback.questions import QUESTIONS, Question
from minirlaif.feedback.scoring import Answer, Feedback, p_good, resolve_weights, total_score, yes_or_no


def to_entry(key: str, judge_name: str, question: Question, raw: RawAnswer) -> dict:
    """A judge's raw answer as a cache entry; JudgeError when it is not a usable Yes/No answer."""
    kind = yes_or_no(raw.text)
    if kind is None:
        raise JudgeError(f"{judge_name} answered {raw.text!r} to question {question.id!r}: neither Yes nor No")
    p_yes = raw.p_yes
    if p_yes is None:  # no probabilities from this backend: a hard label from the text
        p_yes = 1.0 if kind == "yes" else 0.0
    if not (isinstance(p_yes, (int, float)) and math.isfinite(p_yes) and 0.0 <= p_yes <= 1.0):
        raise JudgeError(f"{judge_name} gave P(yes)={p_yes!r} for question {question.id!r}: not a probability")
    return {
        "key": key,
        "judge": judge_name,
        "question_id": question.id,
        "answer": "Yes" if kind == "yes" else "No",
        "p_yes": float(p_yes),
        "source": raw.source or ("text" if raw.p_yes is None else "unknown"),
        "tokens": int(raw.tokens),
        "detail": dict(raw.detail),
    }


def to_answer(entry: dict, question: Question, cached: bool) -> Answer:
    """A cache entry as the Answer to `question` (P(good) from the question's polarity)."""
    return Answer(
        question_id=question.id,
        answer=entry["answer"],
        p_yes=entry["p_yes"],
        p_good=p_good(entry["p_yes"], question.polarity),
        cached=cached,
        source=entry["source"],
        tokens=entry["tokens"],
        detail=entry["detail"],
    )


def label(
    judge: Judge,
    items: Iterable[Item | tuple],
    questions: Sequence[Question] = QUESTIONS,
    weights: Mapping[str, float] | None = None,
    cache: FeedbackCache | None = None,
    workers: int | None = None,
    progress: bool = True,
    price_per_1k: float | None = None,
) -> list[Feedback]:
    """One Feedback per item, in order. Items are Item(instruction, api_data, program, record) or tuples.

    weights: question id -> weight (others keep their default). workers: concurrent questions
    (default: the judge's `max_workers`). price_per_1k: cost of 1000 billed tokens for the progress
    bar (default: the judge's `price_per_1k`, 0 for local judges).
    """
    items = [it if isinstance(it, Item) else Item(*it) for it in items]
    questions = list(questions)
    w = resolve_weights(questions, weights)
    price = judge.price_per_1k if price_per_1k is None else price_per_1k

    # 1. Every (item, question): answered from the cache, or waiting for the judge.
    answers: list[list[Answer | None]] = [[None] * len(questions) for _ in items]
    waiting: dict[str, tuple[Query, list[tuple[int, int]]]] = {}  # key -> (query, slots it fills)
    hits = 0
    for i, item in enumerate(items):
        for j, q in enumerate(questions):
            messages = build_messages(item.instruction, item.api_data, item.program, q)
            key = cache_key(judge.name, q, prompt_text(messages))
            entry = cache.get(key) if cache is not None else None
            if entry is not None:
                answers[i][j] = to_answer(entry, q, cached=True)
                hits += 1
            elif key in waiting:
                waiting[key][1].append((i, j))
            else:
                waiting[key] = (Query(item, q, messages), [(i, j)])

    # 2. Ask the judge the rest (after letting it prepare, e.g. run the programs in parallel).
    # Each answer reaches the disk before anything else happens to it.
    judge.prepare(list(dict.fromkeys(query.item.program for query, _ in waiting.values())))
    stop = threading.Event()  # set by the first failure: no question starts after it

    def ask(key: str, query: Query) -> dict | None:
        if stop.is_set():
            return None
        try:
            entry = to_entry(key, judge.name, query.question, judge.ask(query))
        except BaseException:
            stop.set()
            raise
        if cache is not None:
            cache.put(entry)
        return entry

    total = len(items) * len(questions)
    tokens = 0
    bar = progress_bar(total=total, disable=not progress, unit="q", desc=f"judging with {judge.name}")
    bar.update(hits)
    bar.set_postfix({"hits": hits, "tokens": 0, "cost": "$0.0000"})  # a dict keeps this order
    pool = ThreadPoolExecutor(max_workers=max(1, workers or judge.max_workers))
    try:
        futures = {pool.submit(ask, key, query): key for key, (query, _) in waiting.items()}
        for future in as_completed(futures):
            entry = future.result()  # re-raises the judge's error: the answers so far are cached
            if entry is None:  # skipped after a failure, which is raised when its future comes up
                continue
            query, slots = waiting[futures[future]]
            for i, j in slots:
                answers[i][j] = to_answer(entry, questions[j], cached=False)
            tokens += entry["tokens"]
            bar.update(len(slots))
            bar.set_postfix({"hits": hits, "tokens": tokens, "cost": f"${tokens / 1000 * price:.4f}"})
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error: drop what has not started
        bar.close()

    return [Feedback(answers=row, score=total_score(row, w)) for row in answers]  # type: ignore[arg-type]
