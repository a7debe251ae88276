"""The question catalogue, the prompt, Yes/No normalisation and score aggregation, checked by hand."""

import json
import math

import pytest

from minirlaif.feedback.prompts import build_messages, prompt_text
from minirlaif.feedback.questions import QUESTIONS, Question, question_by_id
from minirlaif.feedback.scoring import (
    Answer, p_good, p_yes_from_logprobs, resolve_weights, total_score, yes_or_no,
)


def test_catalogue_has_the_papers_four_and_four_api_questions():
    ids = [q.id for q in QUESTIONS]
    assert ids == ["imports", "syntax", "complete", "undefined", "api_exists", "api_fits", "api_args",
                   "no_logic_bugs"]
    assert len(set(q.text for q in QUESTIONS)) == 8
    # Only "contains undefined variables" is inverted: there "Yes" is the bad answer.
    assert {q.id: q.polarity for q in QUESTIONS if q.polarity < 0} == {"undefined": -1}
    assert all(q.weight == 1.0 for q in QUESTIONS)
    assert question_by_id("undefined").text == "Does the code contain undefined variables?"
    with pytest.raises(KeyError, match="known"):
        question_by_id("nope")
    with pytest.raises(ValueError, match="polarity"):
        Question("x", "?", polarity=0)


def test_prompt_holds_instruction_api_doc_program_and_one_question():
    api_data = {"domain": "Number theory", "api_call": "math.gcd(a, b)", "api_name": "math.gcd"}
    q = question_by_id("syntax")
    messages = build_messages("Find the gcd of 12 and 18.", api_data, "import math\nprint(math.gcd(12, 18))\n", q)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "Yes or No" in messages[0]["content"]
    user = messages[1]["content"]
    assert "Find the gcd of 12 and 18." in user
    assert json.dumps(api_data, indent=2) in user  # the documentation record, as JSON
    assert "print(math.gcd(12, 18))" in user
    assert user.count("?") == 1 and q.text in user  # exactly one question
    # The cache key's text changes with the question and with the program.
    other = build_messages("Find the gcd of 12 and 18.", api_data, "print(1)", q)
    assert prompt_text(messages) != prompt_text(other)
    assert prompt_text(messages) == prompt_text(build_messages("Find the gcd of 12 and 18.", dict(api_data),
                                                               "import math\nprint(math.gcd(12, 18))\n", q))


@pytest.mark.parametrize("text,kind", [
    ("Yes", "yes"), (" yes", "yes"), ("YES.", "yes"), ("▁Yes", "yes"), ("ĠNo", "no"), ("no", "no"),
    ("No, because", "no"), ("Maybe", None), ("Yesterday", None), ("Not sure", None), ("", None), ("N", None),
])
def test_yes_or_no(text, kind):
    assert yes_or_no(text) == kind


def test_p_yes_sums_yes_and_no_variants_then_normalises():
    top = {"Yes": math.log(0.5), " yes": math.log(0.1), "YES": math.log(0.05),
           "No": math.log(0.2), " no": math.log(0.05), "Maybe": math.log(0.1)}
    # y = 0.5 + 0.1 + 0.05 = 0.65, n = 0.2 + 0.05 = 0.25; "Maybe" is ignored.
    assert p_yes_from_logprobs(top) == pytest.approx(0.65 / 0.90)
    assert p_yes_from_logprobs(list(top.items())) == pytest.approx(0.65 / 0.90)  # (token, logprob) pairs too
    assert p_yes_from_logprobs({"No": math.log(0.3)}) == 0.0
    assert p_yes_from_logprobs({"Maybe": 0.0, "Perhaps": -1.0}) is None  # no Yes/No at all: no value


def _answer(qid, p_yes):
    q = question_by_id(qid)
    return Answer(qid, "Yes" if p_yes > 0.5 else "No", p_yes, p_good(p_yes, q.polarity))


def test_score_uses_polarity_and_weights():
    answers = [_answer("syntax", 0.9), _answer("undefined", 0.2), _answer("imports", 0.4)]
    # P(good): syntax 0.9; undefined is inverted: 1 - 0.2 = 0.8; imports 0.4.
    assert [a.p_good for a in answers] == pytest.approx([0.9, 0.8, 0.4])
    w = resolve_weights(QUESTIONS)
    assert total_score(answers, w) == pytest.approx((0.9 + 0.8 + 0.4) / 3)
    w = resolve_weights(QUESTIONS, {"syntax": 2.0, "imports": 0.0})
    assert w["syntax"] == 2.0 and w["api_args"] == 1.0
    assert total_score(answers, w) == pytest.approx((2 * 0.9 + 1 * 0.8 + 0 * 0.4) / 3)


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="unknown question"):
        resolve_weights(QUESTIONS, {"speed": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        resolve_weights(QUESTIONS, {"syntax": -1.0})
    with pytest.raises(ValueError, match="sum to 0"):
        resolve_weights(QUESTIONS, {q.id: 0.0 for q in QUESTIONS})
