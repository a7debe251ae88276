"""The OpenAI-compatible judge against a real local HTTP server with scripted failures.

The server (tests/fake_openai_server.py) runs on 127.0.0.1 in this process; nothing else is contacted.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_openai_server import FakeOpenAIServer, expected_p_yes
from minirlaif.feedback import (
    QUESTIONS, FeedbackCache, Item, JudgeAuthError, JudgeError, OpenAIJudge, Query, build_messages, label,
)
from minirlaif.feedback.cache import entry_problem
from minirlaif.feedback.judges.openai_judge import DUMMY_KEY, _retry_after

SECRET = "sk-test-SECRET-0123456789"
REPO = Path(__file__).resolve().parents[1]
API = {"domain": "Number theory", "framework": "Python", "functionality": "gcd", "api_name": "math.gcd",
       "api_call": "math.gcd(a, b)", "api_arguments": ["a", "b"], "python_environment_requirements": [],
       "example_code": "math.gcd(4, 6)", "performance": {}, "description": "Greatest common divisor."}
ITEMS = [Item(f"Print the gcd of {n} and 6.", API, f"import math\nprint(math.gcd({n}, 6))") for n in range(4)]


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


def judge_for(server, **kw):
    kw.setdefault("base_delay", 0.001)  # keep backoff short in tests
    return OpenAIJudge(model="fake-judge", base_url=server.base_url, **kw)


def query(item=ITEMS[0], question=QUESTIONS[1]):
    return Query(item, question, build_messages(item.instruction, item.api_data, item.program, question))


def user_text(q):
    return q.messages[1]["content"]


def test_labels_come_from_normalised_logprobs(tmp_path, capsys):
    with FakeOpenAIServer(api_key=SECRET) as server:
        with FeedbackCache(tmp_path / "c.jsonl") as cache:
            feedbacks = label(judge_for(server), ITEMS, cache=cache, workers=4, price_per_1k=2.0)
        assert server.count() == 32 and server.count("ok") == 32
        assert {r["auth"] for r in server.requests} == {f"Bearer {SECRET}"}
        # The progress bar counts questions, cache hits, billed tokens (the usage field) and cost.
        tokens = sum(a.tokens for fb in feedbacks for a in fb.answers)
        bar = capsys.readouterr().err
        assert "32/32" in bar and f"hits=0, tokens={tokens}, cost=${tokens / 1000 * 2.0:.4f}" in bar
        with FeedbackCache(tmp_path / "c.jsonl") as cache:
            again = label(judge_for(server), ITEMS, cache=cache, workers=4, price_per_1k=2.0)
        assert server.count() == 32  # all from the cache
        assert "hits=32, tokens=0, cost=$0.0000" in capsys.readouterr().err
        assert [fb.score for fb in again] == [fb.score for fb in feedbacks]
    for item, fb in zip(ITEMS, feedbacks):
        good = []
        for q, a in zip(QUESTIONS, fb.answers):
            p = expected_p_yes(build_messages(item.instruction, item.api_data, item.program, q)[1]["content"])
            assert a.p_yes == pytest.approx(p, abs=1e-9) and a.source == "logprobs"
            assert a.answer == ("Yes" if p > 0.5 else "No") and a.tokens > 0
            good.append(p if q.polarity > 0 else 1 - p)
        assert fb.score == pytest.approx(sum(good) / 8)
    assert SECRET not in (tmp_path / "c.jsonl").read_text()


def test_retries_429_500_malformed_and_timeout_then_answers():
    with FakeOpenAIServer() as server:
        server.script = ["429", "500", "malformed", "empty", "hang"]
        raw = judge_for(server, timeout_s=0.5).ask(query())
        assert [r["action"] for r in server.requests] == ["429", "500", "malformed", "empty", "hang", "ok"]
    q = query()
    assert raw.p_yes == pytest.approx(expected_p_yes(user_text(q)))
    assert raw.detail["attempts"] == 6 and raw.source == "logprobs"


def test_gives_up_after_max_retries_with_a_clear_error():
    with FakeOpenAIServer(default="500") as server:
        with pytest.raises(JudgeError, match=r"after 3 attempts; last problem: HTTP 500"):
            judge_for(server, max_retries=2).ask(query())
        assert server.count() == 3


def test_missing_logprobs_falls_back_to_the_text_and_says_so():
    with FakeOpenAIServer(default="no_logprobs") as server:
        q = query()
        raw = judge_for(server).ask(q)
        assert server.count() == 1
    expected = expected_p_yes(user_text(q)) > 0.5
    assert raw.p_yes == (1.0 if expected else 0.0) and raw.text == ("Yes" if expected else "No")
    assert raw.source == "text" and raw.detail["fallback"] == "no logprobs"


def test_an_answer_that_starts_with_another_word_is_read_from_its_logprobs():
    # Small models often begin "Maybe"/"The" while Yes and No hold their mass further down the list.
    with FakeOpenAIServer(default="maybe") as server:
        q = query()
        raw = judge_for(server).ask(q)
        assert server.count() == 1  # no retry: at temperature 0 the same question gets the same answer
    p = expected_p_yes(user_text(q))
    assert raw.p_yes == pytest.approx(p) and raw.text == ("Yes" if p > 0.5 else "No")
    assert raw.source == "logprobs" and raw.detail["method"] == "top_logprobs" and raw.detail["sampled"] == "Maybe"


def test_no_yes_no_among_the_logprobs_asks_again_constrained_and_reads_the_answer_token():
    with FakeOpenAIServer() as server:
        server.script = ["off_topic", "ok"]
        q = query()
        raw = judge_for(server).ask(q)
        assert [(r["action"], r["constrained"]) for r in server.requests] == [("off_topic", False), ("ok", True)]
    p = expected_p_yes(user_text(q))
    # The server put Yes 0.9 : No 0.1 on the JSON's first token; only the answer token's split counts.
    assert raw.p_yes == pytest.approx(p) and raw.source == "logprobs" and raw.detail["method"] == "json_schema"
    assert raw.detail["attempts"] == 2 and raw.detail["sampled"] == "The" and raw.tokens > 0


def test_constrained_answer_without_logprobs_is_a_recorded_hard_label():
    with FakeOpenAIServer() as server:
        server.script = ["off_topic", "no_logprobs"]
        q = query()
        raw = judge_for(server).ask(q)
    yes = expected_p_yes(user_text(q)) > 0.5
    assert raw.p_yes == (1.0 if yes else 0.0) and raw.source == "text" and raw.detail["method"] == "text"
    assert "no Yes/No token among the top logprobs" in raw.detail["fallback"]


def test_no_answer_anywhere_is_one_clear_error_never_a_label():
    with FakeOpenAIServer() as server:  # the server refuses the JSON schema
        server.script = ["off_topic", "400"]
        with pytest.raises(JudgeError, match="HTTP 400 to an answer constrained by a JSON schema"):
            judge_for(server).ask(query())
    with FakeOpenAIServer(default="off_topic") as server:
        with pytest.raises(JudgeError, match="the answer 'The' is neither Yes nor No, and no Yes/No token among "
                                             r"the top logprobs \(constrain=True would"):
            judge_for(server, constrain=False).ask(query())
        assert server.count() == 1


def test_auth_failure_stops_at_once_and_never_shows_the_key(tmp_path, monkeypatch):
    wrong = "sk-wrong-KEY-9876543210"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    with FakeOpenAIServer(api_key=SECRET) as server:
        with FeedbackCache(tmp_path / "c.jsonl") as cache:
            with pytest.raises(JudgeAuthError, match="set OPENAI_API_KEY") as err:
                label(judge_for(server), ITEMS[:1], cache=cache, workers=1, progress=False)
        assert server.count() == 1  # no retries: a wrong key stays wrong
    assert wrong not in str(err.value) and wrong not in repr(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert wrong not in (tmp_path / "c.jsonl").read_text()


def test_other_client_errors_are_not_retried():
    with FakeOpenAIServer(default="400") as server:
        with pytest.raises(JudgeError, match="HTTP 400"):
            judge_for(server).ask(query())
        assert server.count() == 1


def test_key_from_environment_dummy_for_local_servers(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(JudgeAuthError, match="OPENAI_API_KEY"):
        OpenAIJudge(model="gpt-3.5-turbo")  # the real API without a key: refuse before any request
    with FakeOpenAIServer() as server:
        judge = judge_for(server)
        judge.ask(query())
        assert server.requests[0]["auth"] == f"Bearer {DUMMY_KEY}"
    assert "openai:fake-judge" in repr(judge)
    # The cost shown in the progress bar: OpenAI's price by default, nothing for a server of your own.
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert OpenAIJudge(model="gpt-3.5-turbo").price_per_1k == 0.0005 and judge.price_per_1k == 0.0


def test_backoff_honours_retry_after_and_grows_with_jitter(monkeypatch):
    with FakeOpenAIServer() as server:
        judge = OpenAIJudge(model="m", base_url=server.base_url, base_delay=1.0, max_delay=5.0)
    assert judge._delay(1, 0.0) == 0.0 and judge._delay(4, 2.5) == 2.5 and judge._delay(1, 99.0) == 5.0
    for attempt, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 5.0)]:
        delays = [judge._delay(attempt, None) for _ in range(50)]
        assert all(cap / 2 <= d <= cap for d in delays) and len(set(delays)) > 1
    assert _retry_after({"retry-after": "3"}) == 3.0
    assert _retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert _retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert _retry_after({}) is None and _retry_after({"retry-after": "soon"}) is None


# ------------------------------------------------------------------------------------------------
# A labelling run killed with SIGKILL resumes without asking anything twice.

CHILD = """
import json, sys
from minirlaif.feedback import FeedbackCache, Item, OpenAIJudge, label
api = json.loads(sys.argv[3])
items = [Item(f"Print the gcd of {n} and 6.", api, f"import math\\nprint(math.gcd({n}, 6))") for n in range(4)]
judge = OpenAIJudge(model="fake-judge", base_url=sys.argv[1], base_delay=0.001)
with FeedbackCache(sys.argv[2]) as cache:
    feedbacks = label(judge, items, cache=cache, workers=2, progress=True)
print(json.dumps([[fb.score, [a.p_yes for a in fb.answers], [a.cached for a in fb.answers]] for fb in feedbacks]))
"""


def run_child(server, cache_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": SECRET}
    return subprocess.Popen([sys.executable, "-c", CHILD, server.base_url, str(cache_path), json.dumps(API)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def complete_lines(path):
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_killed_run_resumes_without_asking_twice(tmp_path):
    cache_path = tmp_path / "feedback.jsonl"
    answered = 11
    with FakeOpenAIServer(api_key=SECRET, hang_after=answered) as first:
        child = run_child(first, cache_path)
        try:
            # The server answered 11 questions and now holds the next ones; once the 11 answers are
            # on disk, kill the labeller the hard way.
            wait_for(lambda: first.hanging.is_set() or child.poll() is not None, "the 12th request")
            wait_for(lambda: complete_lines(cache_path) >= answered or child.poll() is not None,
                     "11 cached answers")
            assert child.poll() is None, child.communicate()[1]
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
        out, err = child.communicate()
        assert child.returncode == -signal.SIGKILL, err
        assert SECRET not in out + err
        asked_before = {r["user"] for r in first.requests if r["action"] == "ok"}
    assert len(asked_before) == answered and complete_lines(cache_path) == answered

    with FakeOpenAIServer(api_key=SECRET) as second:
        child = run_child(second, cache_path)
        out, err = child.communicate(timeout=90)
        assert child.returncode == 0, err
        asked_after = {r["user"] for r in second.requests}
        assert second.count() == 32 - answered  # nothing is asked twice...
        assert not asked_before & asked_after  # ...and the answers received before the kill are reused
    assert SECRET not in out + err
    resumed = json.loads(out)
    assert sum(c for _, _, cached in resumed for c in cached) == answered

    # Every line of the cache is a complete, valid entry, and none holds the key.
    text = cache_path.read_text()
    assert SECRET not in text
    lines = text.splitlines()
    assert len(lines) == 32 and all(entry_problem(json.loads(line)) is None for line in lines)
    with FeedbackCache(cache_path) as cache:
        assert cache.problems == [] and len(cache) == 32

    # The labels equal those of an uninterrupted run.
    with FakeOpenAIServer(api_key=SECRET) as server:
        clean = label(judge_for(server), ITEMS, progress=False)
    assert [score for score, _, _ in resumed] == pytest.approx([fb.score for fb in clean])
    assert [p for _, ps, _ in resumed for p in ps] == pytest.approx([a.p_yes for fb in clean for a in fb.answers])
