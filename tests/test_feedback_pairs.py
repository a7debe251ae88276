"""Preference pairs (margin, both strategies), score statistics and the JSONL files, by hand."""

import pytest

from minirlaif.errors import InputError
from minirlaif.feedback.pairs import (
    Pair, ScoredSample, build_pairs, read_pairs, read_scored_samples, score_stats, write_pairs,
    write_scored_samples,
)
from minirlaif.feedback.scoring import Answer, Feedback


def samples():
    return [
        ScoredSample("p1", "a", 0.9), ScoredSample("p1", "b", 0.5), ScoredSample("p1", "c", 0.85),
        ScoredSample("p2", "d", 0.60), ScoredSample("p2", "e", 0.55),  # gap 0.05: no pair at margin 0.1
        ScoredSample("p3", "f", 0.2), ScoredSample("p3", "g", 0.7), ScoredSample("p3", "h", 0.2),
    ]


def test_best_worst_one_pair_per_prompt_over_the_margin():
    pairs = build_pairs(samples(), margin=0.1, strategy="best_worst")
    assert pairs == [Pair("p1", "a", "b", 0.9, 0.5), Pair("p3", "g", "f", 0.7, 0.2)]  # ties: first sampled


def test_all_pairs_over_the_margin():
    pairs = build_pairs(samples(), margin=0.1, strategy="all")
    got = {(p.prompt, p.chosen, p.rejected) for p in pairs}
    # p1: a>b (0.4), c>b (0.35), a vs c only 0.05; p3: g>f, g>h, f vs h equal.
    assert got == {("p1", "a", "b"), ("p1", "c", "b"), ("p3", "g", "f"), ("p3", "g", "h")}
    assert len(pairs) == 4
    assert all(p.chosen_score - p.rejected_score > 0.1 for p in pairs)


def test_margin_is_strict_and_zero_margin_keeps_any_gap():
    two = [ScoredSample("p", "x", 0.75), ScoredSample("p", "y", 0.5)]
    assert build_pairs(two, margin=0.25) == []  # a gap equal to the margin is not enough
    assert len(build_pairs(two, margin=0.2)) == 1
    assert build_pairs([ScoredSample("p", "x", 0.5), ScoredSample("p", "y", 0.5)], margin=0.0) == []
    with pytest.raises(ValueError, match="strategy"):
        build_pairs(two, strategy="random")
    with pytest.raises(ValueError, match="margin"):
        build_pairs(two, margin=-0.1)


def test_score_stats():
    stats = score_stats(samples(), margin=0.1)
    scores = [0.9, 0.5, 0.85, 0.6, 0.55, 0.2, 0.7, 0.2]
    assert stats["n_samples"] == 8 and stats["n_prompts"] == 3
    assert stats["mean"] == pytest.approx(sum(scores) / 8)
    assert stats["min"] == 0.2 and stats["max"] == 0.9
    assert stats["frac_prompts_with_pair"] == pytest.approx(2 / 3)
    assert stats["mean_gap"] == pytest.approx((0.4 + 0.05 + 0.5) / 3)
    assert stats["pairs_best_worst"] == 2 and stats["pairs_all"] == 4
    # bins of width 0.1: 0.2 0.2 | 0.5 0.55 | 0.6 | 0.7 | 0.85 | 0.9
    assert stats["histogram"] == [0, 0, 2, 0, 0, 2, 1, 1, 1, 1]


def test_jsonl_round_trip(tmp_path):
    fb = Feedback([Answer("syntax", "Yes", 0.9, 0.9, source="logprobs", detail={"attempts": 1})], 0.9)
    scored = [ScoredSample("p1", "a", 0.9, fb, {"line": 3}), ScoredSample("p1", "b", 0.5)]
    write_scored_samples(scored, tmp_path / "scored.jsonl")
    back = read_scored_samples(tmp_path / "scored.jsonl")
    assert back == scored
    assert score_stats(back)["question_means"] == {"syntax": 0.9}

    pairs = build_pairs(scored, margin=0.1)
    write_pairs(pairs, tmp_path / "pairs.jsonl")
    assert read_pairs(tmp_path / "pairs.jsonl") == pairs == [Pair("p1", "a", "b", 0.9, 0.5)]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p", "chosen": "a"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:1: field 'rejected'"):
        read_pairs(tmp_path / "bad.jsonl")
