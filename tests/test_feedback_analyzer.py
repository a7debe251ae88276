"""The offline analyzer judge on hand-written programs: each question's answer, checked by hand."""

import pytest

import minirlaif.feedback.judges.analyzer as analyzer_module
from minirlaif.data.records import APIRecord
from minirlaif.feedback import QUESTIONS, AnalyzerJudge, Item, JudgeError, Query, build_messages, label, make_judge


def api(name, call, domain, description):
    return {"domain": domain, "framework": "Python standard library", "functionality": name.split(".")[-1],
            "api_name": name, "api_call": call, "api_arguments": call[call.index("(") + 1 : -1].split(", "),
            "python_environment_requirements": [], "example_code": f"import {name.split('.')[0]}\n{call}",
            "performance": {}, "description": description}


API_DB = [
    api("math.gcd", "math.gcd(a, b)", "Number theory", "Greatest common divisor of two integers."),
    api("math.lcm", "math.lcm(a, b)", "Number theory", "Least common multiple of two integers."),
    api("statistics.mean", "statistics.mean(data)", "Statistics", "Arithmetic mean of the data."),
]
RECORD = APIRecord(
    instruction="Print the greatest common divisor of 12 and 18.", api_call="math.gcd(12, 18)",
    domain="Number theory", provider="Python", code="import math\nprint(math.gcd(12, 18))\n",
    api_data=API_DB[0], source="test", line=1, api_name="math.gcd",
)

# program -> expected P(yes) per question (order of QUESTIONS:
#   imports, syntax, complete, undefined, api_exists, api_fits, api_args, no_logic_bugs)
CASES = {
    "correct": ("import math\nprint(math.gcd(12, 18))\n", [1, 1, 1, 0, 1, 1, 1, 1]),
    "missing_import": ("print(math.gcd(12, 18))\n", [0, 1, 0, 0, 1, 1, 1, 0]),
    "undefined_name": ("import math\nprint(math.gcd(a, 18))\n", [1, 1, 0, 1, 1, 1, 0, 0]),
    "syntax_error": ("import math\nprint(math.gcd(12, 18)\n", [0, 0, 0, 1, 1, 1, 1, 0]),
    "hallucinated_api": ("import math\nprint(math.greatest_divisor(12, 18))\n", [1, 1, 0, 0, 0, 0, 0, 0]),
    "wrong_arguments": ("import math\nprint(math.gcd(12, 24))\n", [1, 1, 1, 0, 1, 1, 0, 1]),
    # lcm for a gcd task: the same builtin domain, but another function; it does not fit the task (rules 3)
    "same_domain_api": ("import math\nprint(math.lcm(12, 18))\n", [1, 1, 1, 0, 1, 0, 0, 1]),
    "other_domain_api": ("import statistics\nprint(statistics.mean([12, 18]))\n", [1, 1, 1, 0, 1, 0, 0, 1]),
    "prints_nothing": ("import math\nx = math.gcd(12, 18)\n", [1, 1, 1, 0, 1, 1, 1, 0.5]),
}


def item(program):
    return Item(RECORD.instruction, RECORD.api_data, program, RECORD)


def ask_all(judge, program):
    it = item(program)
    return [judge.ask(Query(it, q, build_messages(it.instruction, it.api_data, it.program, q))) for q in QUESTIONS]


@pytest.fixture(scope="module")
def judge():
    return AnalyzerJudge(API_DB, hub="builtin", timeout_s=10)


@pytest.mark.parametrize("case", list(CASES))
def test_each_question_on_hand_written_programs(judge, case):
    program, expected = CASES[case]
    raws = ask_all(judge, program)
    got = {q.id: r.p_yes for q, r in zip(QUESTIONS, raws)}
    assert got == dict(zip([q.id for q in QUESTIONS], expected)), [r.detail["reason"] for r in raws]
    for r in raws:
        assert r.source == "analysis" and r.text == ("Yes" if r.p_yes > 0.5 else "No") and r.detail["reason"]


def test_scores_rank_the_programs(judge):
    feedbacks = label(judge, [item(CASES[c][0]) for c in CASES], progress=False)
    scores = dict(zip(CASES, (fb.score for fb in feedbacks)))
    assert scores["correct"] == 1.0
    # "undefined" has polarity -1: its "No" is the good answer, so the correct program gets full marks.
    assert scores["wrong_arguments"] == pytest.approx(7 / 8)
    assert scores["prints_nothing"] == pytest.approx(7.5 / 8)
    assert scores["syntax_error"] == pytest.approx(3 / 8)
    assert max(scores.values()) == scores["correct"] and min(scores.values()) == scores["hallucinated_api"]


def test_each_program_runs_once_for_its_eight_questions(monkeypatch):
    single, batch = [], []
    real_run, real_runs = analyzer_module.run_program, analyzer_module.run_programs
    monkeypatch.setattr(analyzer_module, "run_program", lambda code, **kw: single.append(code) or real_run(code, **kw))
    monkeypatch.setattr(analyzer_module, "run_programs",
                        lambda codes, **kw: batch.append(list(codes)) or real_runs(codes, **kw))
    judge = AnalyzerJudge(API_DB, hub="builtin")
    ask_all(judge, CASES["correct"][0])
    assert single == [CASES["correct"][0]]  # asked directly: one run, shared by the 8 questions

    programs = [CASES[c][0] for c in ("missing_import", "syntax_error", "wrong_arguments", "correct")]
    label(judge, [item(p) for p in programs + programs[:1]], progress=False, workers=2)
    # label() lets the judge run the new, compiling programs in one parallel batch first; none twice.
    assert batch == [[programs[0], programs[2]]]
    assert single == [CASES["correct"][0]]


def test_static_mode_runs_nothing(monkeypatch):
    monkeypatch.setattr(analyzer_module, "run_program", lambda *a, **k: pytest.fail("ran a program"))
    monkeypatch.setattr(analyzer_module, "run_programs", lambda *a, **k: pytest.fail("ran programs"))
    judge = make_judge("analyzer", api_database=API_DB, hub="builtin", execute=False)
    got = [r.p_yes for r in ask_all(judge, CASES["correct"][0])]
    assert got == [1, 1, 1, 0, 1, 1, 1, 1]
    got = [r.p_yes for r in ask_all(judge, CASES["missing_import"][0])]
    assert got[2] == 0 and got[7] == 0  # static_check: undefined name -> not complete
    assert ":static:" in judge.name and judge.name != AnalyzerJudge(API_DB).name


def test_needs_the_record():
    judge = AnalyzerJudge(API_DB)
    q = QUESTIONS[0]
    with pytest.raises(JudgeError, match="APIRecord"):
        judge.ask(Query(Item("x", {}, "print(1)"), q, []))


def test_torchhub_programs_are_matched_without_gorillas_markers():
    call = "torch.hub.load(repo_or_dir='pytorch/vision', model='resnet18', pretrained=True)"
    db = [{**api("resnet18", "f(x)", "Classification", "ResNet-18."), "api_name": "resnet18", "api_call": call}]
    record = APIRecord("Classify images.", call, "Classification", "PyTorch", "", db[0], "test", 1)
    program = "import torch\nmodel = torch.hub.load('pytorch/vision', 'resnet18', pretrained=True)\nmodel.eval()\n"
    judge = AnalyzerJudge(db, hub="torchhub")
    assert not judge.execute  # hub programs need the network: by default they are not run
    it = Item(record.instruction, record.api_data, program, record)
    got = {q.id: judge.ask(Query(it, q, [])).p_yes for q in QUESTIONS}
    assert got["api_exists"] == got["api_fits"] == got["api_args"] == 1.0


def test_api_fits_takes_the_domain_on_gorilla_hubs_and_the_api_on_the_builtin_one():
    """Issue 14: PPO raised executability by moving to another API of the gold one's domain (lcm for gcd),
    which the analyzer counted as fitting the task. A Gorilla domain is a task (any classifier classifies);
    a builtin domain is a family of different functions."""
    def call(repo, model):
        return f"torch.hub.load(repo_or_dir='{repo}', model='{model}', pretrained=True)"

    db = [{**api(name, "f(x)", "Classification", name), "api_name": name, "api_call": call("pytorch/vision", name)}
          for name in ("resnet18", "alexnet")]
    record = APIRecord("Classify images.", db[0]["api_call"], "Classification", "PyTorch", "", db[0], "test", 1)
    other = "import torch\nmodel = torch.hub.load('pytorch/vision', 'alexnet', pretrained=True)\n"
    it = Item(record.instruction, record.api_data, other, record)
    answer = AnalyzerJudge(db, hub="torchhub").ask(Query(it, next(q for q in QUESTIONS if q.id == "api_fits"), []))
    assert answer.p_yes == 1.0 and "exact=False" in answer.detail["reason"]

    builtin = {q.id: r.p_yes for q, r in zip(QUESTIONS, ask_all(AnalyzerJudge(API_DB, hub="builtin", timeout_s=10),
                                                                CASES["same_domain_api"][0]))}
    assert builtin["api_exists"] == 1.0 and builtin["api_fits"] == 0.0


def test_api_args_checks_the_values_not_the_names():
    """Issue 14: the built-in gold calls pass names bound in the reference program; a sample that passes the same
    names bound to other values (the SFT model's `year = 2015` for 2033) has the wrong arguments."""
    weekday = api("calendar.weekday", "calendar.weekday(year, month, day)", "Dates", "Day of the week.")
    record = APIRecord(instruction="Find the weekday index for day 25 of month 11 in 2033.",
                       api_call="calendar.weekday(year, month, day)", domain="Dates", provider="Python",
                       code="import calendar\n\nyear = 2033\nmonth = 11\nday = 25\n"
                            "result = calendar.weekday(year, month, day)\nprint(result)\n",
                       api_data=weekday, source="test", line=1, api_name="calendar.weekday")
    judge = AnalyzerJudge([weekday], hub="builtin", timeout_s=10)
    wrong = record.code.replace("2033", "2015")
    right, changed = label(judge, [Item(record.instruction, weekday, p, record) for p in (record.code, wrong)],
                           progress=False)
    p_args = [next(a.p_good for a in fb.answers if a.question_id == "api_args") for fb in (right, changed)]
    assert p_args == [1.0, 0.0]


def test_answers_cached_under_older_rules_are_not_reused(monkeypatch):
    """The arguments rule changed (names -> values): the judge's name, the cache key, changes with its rules."""
    now = AnalyzerJudge(API_DB, hub="builtin").name
    monkeypatch.setattr(analyzer_module, "RULES", analyzer_module.RULES - 1)
    assert AnalyzerJudge(API_DB, hub="builtin").name != now
