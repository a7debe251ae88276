"""bench/rm_pair_kinds.py: which table rows a held-out pair counts in (the rows drive README claims)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("rm_pair_kinds", ROOT / "bench" / "rm_pair_kinds.py")
rm_pair_kinds = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rm_pair_kinds)


def answers(**overrides: float) -> dict[str, float]:
    good = {"syntax": 1.0, "api_fits": 1.0, "api_args": 1.0, "complete": 1.0}
    return {**good, **overrides}


def test_both_run_row_needs_both_programs_to_run_and_the_api_to_differ():
    right = answers(api_args=0.0)  # the asked-for API with a wrong value, and it runs
    wrong_api_runs = answers(api_fits=0.0, api_args=0.0)
    assert rm_pair_kinds.rows_of(right, wrong_api_runs) == ["api_fits", "api_fits, both run"]
    # the rejected one crashes: an API-fit pair, but not one where only the API tells them apart
    assert rm_pair_kinds.rows_of(right, answers(api_fits=0.0, api_args=0.0, complete=0.0)) == ["api_fits"]
    assert rm_pair_kinds.rows_of(answers(complete=0.0), wrong_api_runs) == ["api_fits"]


def test_rows_follow_the_first_question_that_differs():
    assert rm_pair_kinds.rows_of(answers(), answers(syntax=0.0, api_fits=0.0)) == ["syntax"]
    assert rm_pair_kinds.rows_of(answers(), answers(api_args=0.0)) == ["api_args"]
    assert rm_pair_kinds.rows_of(answers(), answers(complete=0.0)) == ["complete"]
    assert rm_pair_kinds.rows_of(answers(), answers()) == ["other"]
