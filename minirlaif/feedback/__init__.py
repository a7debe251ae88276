"""AI feedback: a judge answers 8 yes/no questions about each program; the answers become a score,
and the scores become preference pairs for the reward model.

    judge = make_judge("openai", model="gpt-3.5-turbo")        # or "hf" (local LM), "analyzer" (offline)
    feedbacks = label(judge, items, cache=FeedbackCache("runs/feedback.jsonl"))
    samples = [ScoredSample(prompt, program, fb.score, fb) for ...]
    pairs = build_pairs(samples, margin=0.1, strategy="best_worst")

Modules: questions (the catalogue, as data), prompts (the judge's messages), scoring (P(yes) ->
P(good) -> score), judges/ (the backends), cache (answers on disk), label (the driver), pairs.
"""

from minirlaif.feedback.cache import FeedbackCache, cache_key
from minirlaif.feedback.judges import (
    AnalyzerJudge, HFJudge, Item, Judge, JudgeAuthError, JudgeError, OpenAIJudge, Query, RawAnswer, build_judge,
    make_judge,
)
from minirlaif.feedback.label import label
from minirlaif.feedback.pairs import (
    Pair, ScoredSample, build_pairs, read_pairs, read_scored_samples, score_stats, write_pairs,
    write_scored_samples,
)
from minirlaif.feedback.prompts import build_messages
from minirlaif.feedback.questions import QUESTIONS, Question
from minirlaif.feedback.scoring import Answer, Feedback, p_yes_from_logprobs, parse_weights, total_score

__all__ = [
    "QUESTIONS", "AnalyzerJudge", "Answer", "Feedback", "FeedbackCache", "HFJudge", "Item", "Judge",
    "JudgeAuthError", "JudgeError", "OpenAIJudge", "Pair", "Query", "Question", "RawAnswer", "ScoredSample",
    "build_judge", "build_messages", "build_pairs", "cache_key", "label", "make_judge", "p_yes_from_logprobs",
    "parse_weights", "read_pairs",
    "read_scored_samples", "score_stats", "total_score", "write_pairs", "write_scored_samples",
]
