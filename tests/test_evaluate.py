"""evaluate.py end to end: on a checkpoint (built-in-style tiny data) and on Gorilla's response files."""

import json

import pytest

import evaluate
from minirlaif.data import load_apibench
from minirlaif.metrics import codebleu, rouge_l
from minirlaif.sandbox import run_program
from tiny_data import train_tiny_sft, write_tiny


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("eval")
    tiny = write_tiny(base / "data")
    train_tiny_sft(base / "sft", tiny, "--max-steps", "150", "--lr", "3e-3")
    return base, tiny


def test_evaluate_checkpoint_summary_matches_its_examples(sft_run, capsys):
    base, tiny = sft_run
    cfg = evaluate.parse_config(evaluate.Config, "", [
        "--models", str(base / "sft"), "--data", str(tiny["train"]), "--eval-data", str(tiny["eval"]),
        "--api-db", str(tiny["api"]), "--hub", "builtin", "--runs", "2", "--out", str(base / "eval"), "--device", "cpu"])
    report = evaluate.main(cfg)
    assert "executability rate [run]" in capsys.readouterr().out
    runs = report["results"]["sft"]
    assert len(runs) == 2 and report["exec_mode"] == "run"
    rows = [json.loads(line) for line in open(base / "eval" / "sft.examples.jsonl")]
    records = load_apibench(tiny["eval"])
    assert [r["instruction"] for r in rows] == [r.instruction for r in records]
    first = runs[0]
    assert 0 < first["executability"] < 1 and 0 < first["ast_accuracy"]  # a model that is neither garbage nor perfect
    # Every summary number recomputed independently from the per-example rows of the first run.
    assert first["executability"] == pytest.approx(sum(r["executable"] for r in rows) / len(rows))
    assert first["ast_accuracy"] == pytest.approx(sum(r["ast_correct"] for r in rows) / len(rows))
    assert first["rouge_l"] == pytest.approx(sum(rouge_l(r["reference"], r["program"]) for r in rows) / len(rows))
    assert first["codebleu"] == pytest.approx(codebleu([r["reference"] for r in rows], [r["program"] for r in rows])["codebleu"])
    for row in rows[:4]:  # the sandbox verdict is what a direct run gives
        assert run_program(row["program"]).ok == row["executable"]


def test_evaluate_gorilla_response_file(gorilla, tmp_path):
    cfg = evaluate.parse_config(evaluate.Config, "", [
        "--responses", str(gorilla / "eval-data/responses/huggingface/response_huggingface_Gorilla_FT_0_shot.jsonl"),
        "--data", str(gorilla), "--out", str(tmp_path)])
    report = evaluate.main(cfg)
    (summary,) = report["results"]["response_huggingface_Gorilla_FT_0_shot"]
    assert summary["n"] == 904 and report["exec_mode"] == "static"
    assert round(summary["hallucination"], 4) == 0.1095  # Gorilla's published 0-shot FT figure
    assert 0.685 <= summary["ast_accuracy"] <= 0.70


def test_long_responses_are_scored_on_a_bounded_prefix_and_say_so():
    """A 1 MB response (a call chain: CodeBLEU's dataflow is superlinear in it) is cut for scoring."""
    from minirlaif.metrics.report import MAX_SCORED_CHARS, score_responses
    from tiny_data import tiny_records

    records = tiny_records(2)
    db = [r.api_data for r in records]
    huge = "x" + ".f(x)" * 200_000
    short = records[1].code
    summary, rows = score_responses([huge, short], [huge, short], records, db, "builtin", exec_mode="static")
    assert rows[0]["truncated_from"] == len(huge) and rows[1]["truncated_from"] is None
    assert rows[0]["program"] == huge[:MAX_SCORED_CHARS] and rows[0]["response"] == huge[:MAX_SCORED_CHARS]
    assert rows[1]["program"] == short and rows[1]["rouge_l"] == pytest.approx(1.0)
    assert summary["n"] == 2
