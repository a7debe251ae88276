"""The answer cache on disk and the labelling driver, with an in-process scripted judge."""

import threading

import pytest

from minirlaif.feedback import QUESTIONS, FeedbackCache, Item, Judge, JudgeError, RawAnswer, cache_key, label
from minirlaif.feedback.label import to_entry
from minirlaif.feedback.questions import question_by_id
from minirlaif.errors import InputError

API = {"domain": "Number theory", "api_call": "math.gcd(a, b)", "api_name": "math.gcd"}


def entry(i, p=0.25):
    key = cache_key("test:judge", QUESTIONS[0], f"prompt {i}")
    return {"key": key, "judge": "test:judge", "question_id": "imports", "answer": "No", "p_yes": p,
            "source": "logprobs", "tokens": 7, "detail": {"i": i}}


class ScriptedJudge(Judge):
    """P(yes) = a fixed function of (program, question); counts calls; can fail on the n-th call."""

    name = "scripted:v1"

    def __init__(self, fail_on_call=None):
        self.calls = 0
        self.fail_on_call = fail_on_call
        self._lock = threading.Lock()

    @staticmethod
    def p_yes(program, qid):
        return (len(program) * 7 + len(qid) * 3) % 10 / 10 + 0.05

    def ask(self, query):
        with self._lock:
            self.calls += 1
            if self.calls == self.fail_on_call:
                raise JudgeError("scripted failure")
        p = self.p_yes(query.item.program, query.question.id)
        return RawAnswer("Yes" if p > 0.5 else "No", p, "logprobs", 10)


ITEMS = [Item("Add two numbers.", API, "print(1 + 2)"), Item("Gcd.", API, "import math\nprint(math.gcd(4, 6))")]


def test_put_get_and_reopen(tmp_path):
    path = tmp_path / "cache.jsonl"
    with FeedbackCache(path) as cache:
        cache.put(entry(1))
        cache.put(entry(2, p=1))
        assert len(cache) == 2 and cache.get(entry(1)["key"]) == entry(1)
        with pytest.raises(ValueError, match="p_yes"):
            cache.put({**entry(3), "p_yes": 1.5})
    with FeedbackCache(path) as cache:
        assert len(cache) == 2 and cache.problems == []
        assert cache.get(entry(2)["key"])["p_yes"] == 1
    # The key depends on the judge, the question's id and text, and the prompt.
    q = QUESTIONS[0]
    keys = {cache_key("a:m", q, "p"), cache_key("b:m", q, "p"), cache_key("a:m", QUESTIONS[1], "p"),
            cache_key("a:m", q, "p2"), cache_key("a:m", q.__class__(q.id, q.text + " ", q.polarity), "p")}
    assert len(keys) == 5


def test_torn_last_line_is_removed_and_reported(tmp_path):
    path = tmp_path / "cache.jsonl"
    with FeedbackCache(path) as cache:
        for i in range(3):
            cache.put(entry(i))
    data = path.read_bytes()
    path.write_bytes(data[:-15])  # what a kill in the middle of the third write leaves
    with FeedbackCache(path) as cache:
        assert len(cache) == 2 and entry(2)["key"] not in cache
        assert len(cache.problems) == 1 and "torn last line" in cache.problems[0]
        cache.put(entry(3))  # must start on a fresh line, not glued to the fragment
    assert path.read_bytes().endswith(b"\n")
    with FeedbackCache(path) as cache:
        assert cache.problems == [] and len(cache) == 3 and entry(3)["key"] in cache


def test_invalid_lines_are_skipped_and_reported(tmp_path):
    path = tmp_path / "cache.jsonl"
    with FeedbackCache(path) as cache:
        cache.put(entry(1))
    with open(path, "a") as f:
        f.write("not json\n")
        f.write('{"key": "abc"}\n')
        f.write('{"key": "%s", "judge": "j", "question_id": "q", "answer": "Maybe", "p_yes": 0.5, '
                '"source": "text", "tokens": 0, "detail": {}}\n' % entry(5)["key"])
    with FeedbackCache(path) as cache:
        cache.put(entry(2))
    with FeedbackCache(path) as cache:
        assert set(cache.entries) == {entry(1)["key"], entry(2)["key"]}
        assert [p.split(": ", 2)[1] for p in cache.problems] == ["line 2", "line 3", "line 4"]
        assert "Yes or No" in cache.problems[2]


def test_one_writer_at_a_time(tmp_path):
    with FeedbackCache(tmp_path / "c.jsonl"):
        with pytest.raises(InputError, match="in use by another process"):
            FeedbackCache(tmp_path / "c.jsonl")
    FeedbackCache(tmp_path / "c.jsonl").close()  # free again once closed


def test_label_scores_and_second_run_is_all_cache_hits(tmp_path):
    judge = ScriptedJudge()
    with FeedbackCache(tmp_path / "c.jsonl") as cache:
        first = label(judge, ITEMS, cache=cache, workers=3, progress=False)
    assert judge.calls == 16 and len(first) == 2
    for item, fb in zip(ITEMS, first):
        assert [a.question_id for a in fb.answers] == [q.id for q in QUESTIONS]
        good = []
        for q, a in zip(QUESTIONS, fb.answers):
            p = ScriptedJudge.p_yes(item.program, q.id)
            assert a.p_yes == pytest.approx(p) and not a.cached and a.tokens == 10
            good.append(p if q.polarity > 0 else 1 - p)
        assert fb.score == pytest.approx(sum(good) / 8)

    again = ScriptedJudge()
    with FeedbackCache(tmp_path / "c.jsonl") as cache:
        second = label(again, ITEMS, cache=cache, progress=False, weights={"syntax": 3.0})
    assert again.calls == 0
    assert all(a.cached for fb in second for a in fb.answers)
    assert [a.p_yes for a in second[0].answers] == [a.p_yes for a in first[0].answers]
    p = {a.question_id: a.p_good for a in second[1].answers}
    assert second[1].score == pytest.approx((sum(p.values()) + 2 * p["syntax"]) / 10)


def test_same_question_twice_is_asked_once():
    judge = ScriptedJudge()
    feedbacks = label(judge, [ITEMS[0], ITEMS[0], ITEMS[1]], progress=False)
    assert judge.calls == 16
    assert feedbacks[0].score == feedbacks[1].score


def test_a_failing_judge_keeps_the_answers_so_far(tmp_path):
    judge = ScriptedJudge(fail_on_call=10)
    with FeedbackCache(tmp_path / "c.jsonl") as cache:
        with pytest.raises(JudgeError, match="scripted failure"):
            label(judge, ITEMS, cache=cache, workers=1, progress=False)
        # The 9 answers before the failure are kept, and no question starts after it.
        kept = len(cache)
        assert kept == 9 and judge.calls == 10
    resumed = ScriptedJudge()
    with FeedbackCache(tmp_path / "c.jsonl") as cache:
        label(resumed, ITEMS, cache=cache, workers=1, progress=False)
    assert resumed.calls == 16 - kept


def test_an_answer_neither_yes_nor_no_is_an_error_never_a_label():
    q = question_by_id("syntax")
    with pytest.raises(JudgeError, match="neither Yes nor No"):
        to_entry("0" * 64, "j:m", q, RawAnswer("Maybe", None))
    with pytest.raises(JudgeError, match="not a probability"):
        to_entry("0" * 64, "j:m", q, RawAnswer("Yes", 1.2))
    # Without probabilities the label is 1/0 from the text, and the entry says so.
    e = to_entry("0" * 64, "j:m", q, RawAnswer(" no", None))
    assert (e["answer"], e["p_yes"], e["source"]) == ("No", 0.0, "text")
