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


def _torchhub_entry(domain: str, model: str, repo: str) -> dict:
    return {"domain": domain, "framework": "PyTorch", "functionality": model, "api_name": model,
            "api_call": f"torch.hub.load(repo_or_dir='{repo}', model='{model}', pretrained=True)",
            "api_arguments": ["repo_or_dir", "model", "pretrained"], "python_environment_requirements": ["torch"],
            "example_code": "N/A", "performance": {"dataset": "N/A", "accuracy": "N/A"}, "description": model}


def test_torchhub_columns_of_a_model_that_writes_bare_programs(sft_run, tmp_path, monkeypatch):
    """Gorilla's TorchHub rule reads only what follows an api_call marker; a model trained without
    --with-api-call writes bare programs, so evaluate.py wraps them (as the analyzer judge does). Three known
    cases: the gold model (correct, exact API, arguments), a real API of another domain (an error), a model
    that does not exist (a hallucination). Before the wrapping every column read 0."""
    from minirlaif.data.apibench import write_api_database, write_apibench
    from minirlaif.data.records import APIRecord

    base, _ = sft_run
    db = [_torchhub_entry("Classification", "resnet18", "pytorch/vision"),
          _torchhub_entry("Object Detection", "yolov5s", "ultralytics/yolov5")]
    gold = db[0]
    records = [APIRecord(instruction=f"Classify image {i} with a pretrained ResNet-18.", api_call=gold["api_call"],
                         domain=gold["domain"], provider="PyTorch",
                         code=f"import torch\nmodel = {gold['api_call']}\n", api_data=gold, source="th", line=i + 1,
                         explanation="", api_name="resnet18") for i in range(3)]
    write_apibench(records, tmp_path / "torchhub_eval.json")
    write_apibench(records, tmp_path / "torchhub_train.json")
    write_api_database(db, tmp_path / "torchhub_api.jsonl")
    programs = ["import torch\nmodel = torch.hub.load('pytorch/vision', 'resnet18', pretrained=True)\n",
                "import torch\nmodel = torch.hub.load('ultralytics/yolov5', 'yolov5s', pretrained=True)\n",
                "import torch\nmodel = torch.hub.load('pytorch/vision', 'resnet1000', pretrained=True)\n"]
    monkeypatch.setattr(evaluate, "generate_texts", lambda *a, **k: list(programs))
    cfg = evaluate.parse_config(evaluate.Config, "", [
        "--models", str(base / "sft"), "--data", str(tmp_path / "torchhub_train.json"), "--eval-data",
        str(tmp_path / "torchhub_eval.json"), "--api-db", str(tmp_path / "torchhub_api.jsonl"), "--greedy",
        "--exec-mode", "static", "--out", str(tmp_path / "eval"), "--device", "cpu"])
    (summary,) = evaluate.main(cfg)["results"]["sft"]
    assert (summary["ast_accuracy"], summary["exact_api"], summary["args_match"], summary["hallucination"]) == \
        pytest.approx((1 / 3, 1 / 3, 1 / 3, 1 / 3))
    rows = [json.loads(line) for line in open(tmp_path / "eval" / "sft.examples.jsonl")]
    assert [r["matched_api"] for r in rows] == ["resnet18", "yolov5s", None]
    assert [r["response"] for r in rows] == programs  # the record keeps what the model wrote


def test_best_of_n_answers_with_the_samples_the_reward_model_scores_highest(sft_run, tmp_path):
    """Best-of-n through evaluate.main: each chosen response is, among the first n of the same N samples, the
    one that a plain forward pass of the reward model scores highest (recomputed here sample by sample)."""
    import torch

    from minirlaif.data.prompts import format_prompt
    from minirlaif.generation import generate_texts
    from minirlaif.policy import Seq2SeqPolicy
    from minirlaif.reward_model import RewardModel, encode_texts
    from minirlaif.tokenizer import load_tokenizer

    base, tiny = sft_run
    rm = RewardModel.from_pretrained(base / "sft" / "model", "mean")
    torch.manual_seed(0)
    torch.nn.init.normal_(rm.head.weight, std=1.0)  # a head that tells samples apart
    rm.save_pretrained(tmp_path / "rm" / "model")
    cfg = evaluate.parse_config(evaluate.Config, "", [
        "--models", str(base / "sft"), "--rm", str(tmp_path / "rm"), "--best-of", "3,6", "--data", str(tiny["train"]),
        "--eval-data", str(tiny["eval"]), "--api-db", str(tiny["api"]), "--hub", "builtin", "--runs", "1",
        "--limit", "8", "--exec-mode", "static", "--out", str(tmp_path / "eval"), "--device", "cpu"])
    report = evaluate.main(cfg)
    assert list(report["results"]) == ["sft", "sft best-of-3", "sft best-of-6"]

    policy, tokenizer = Seq2SeqPolicy.from_pretrained(base / "sft" / "model").eval(), load_tokenizer(base / "sft" / "model")
    prompts = [format_prompt(r) for r in load_apibench(tiny["eval"])[:8]]
    samples = generate_texts(policy, tokenizer, [p for p in prompts for _ in range(6)], cfg.max_prompt_len,
                             cfg.max_new_tokens, cfg.temperature, False, cfg.batch_size,
                             torch.Generator().manual_seed(cfg.seed + 500009))  # the run's best-of seed
    picked_any_later = False
    for n in (3, 6):
        chosen = [json.loads(line)["response"] for line in open(tmp_path / "eval" / f"sft.best-of-{n}.examples.jsonl")]
        for i, prompt in enumerate(prompts):
            mine = samples[6 * i : 6 * i + n]
            with torch.no_grad():
                scores = [float(rm(*encode_texts(tokenizer, [prompt], [t], cfg.max_prompt_len, cfg.max_new_tokens, "cpu")))
                          for t in mine]
            assert chosen[i] == mine[max(range(n), key=scores.__getitem__)], (n, i, scores)
            picked_any_later |= chosen[i] != mine[0]
    assert picked_any_later  # the choice is not simply the first sample
