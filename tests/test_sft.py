import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train_sft
from tiny_data import write_tiny

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("tiny"))


def sft_args(tiny, out, *extra):
    return ["--data", str(tiny["train"]), "--eval-data", str(tiny["eval"]), "--api-db", str(tiny["api"]),
            "--out", str(out), "--batch-size", "8", "--vocab-size", "300", "--samples", "0",
            "--warmup-steps", "2", "--device", "cpu", *extra]


def test_sft_loss_decreases(tiny, tmp_path):
    cfg = train_sft.parse_config(train_sft.Config, "", sft_args(tiny, tmp_path, "--max-steps", "40", "--eval-every", "1000"))
    summary = train_sft.main(cfg)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    first_loss = rows[0]["loss"]
    assert summary["eval_loss"] < 0.6 * first_loss, (first_loss, summary["eval_loss"])
    assert (tmp_path / "model" / "config.json").exists() and (tmp_path / "model" / "spm.model").exists()


def run_script(args, env_extra=None):
    env = {**os.environ, "PYTHONHASHSEED": "0", **(env_extra or {})}
    return subprocess.run([sys.executable, str(ROOT / "train_sft.py"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(tiny, tmp_path):
    common = ["--max-steps", "7", "--save-every", "2", "--eval-every", "3", "--grad-accum", "2", "--log-every", "1"]
    full = run_script(sft_args(tiny, tmp_path / "full", *common))
    assert full.returncode == 0, full.stderr[-2000:]

    killed = run_script(sft_args(tiny, tmp_path / "killed", *common), {"MINIRLAIF_KILL_AT_STEP": "5"})
    assert killed.returncode == -9  # really SIGKILLed after step 5 (last checkpoint: step 4)
    assert not (tmp_path / "killed" / "model").exists()
    resumed = run_script(sft_args(tiny, tmp_path / "killed", *common, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout and "step 4" in resumed.stdout
    # the log has each step once (step 5 was logged, then redone after the resume), with the same losses
    logged = [[(r["step"], r["loss"]) for r in map(json.loads, open(tmp_path / run / "metrics.jsonl"))]
              for run in ("full", "killed")]
    assert logged[0] == logged[1] and [s for s, _ in logged[0]] == list(range(1, 8))

    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_bad_data_exits_2_with_clear_message(tiny, tmp_path):
    bad = tmp_path / "bad.json"
    good_line = open(tiny["train"]).readline()
    bad.write_text(good_line + "not json\n")
    r = run_script(["--data", str(bad), "--api-db", str(bad), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert r.returncode == 2
    assert "bad.json:2" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o" / "model").exists()


def test_given_tokenizer_is_used_with_a_preset(tiny, tmp_path):
    from minirlaif.tokenizer import SentencePieceTokenizer, load_tokenizer
    from tiny_data import tiny_records

    recs = tiny_records(64)
    tok = SentencePieceTokenizer.train([r.instruction for r in recs] + [r.code for r in recs], vocab_size=400)
    tok.save(tmp_path / "tok")
    cfg = train_sft.parse_config(train_sft.Config, "", sft_args(tiny, tmp_path / "run", "--max-steps", "2",
                                                                 "--tokenizer", str(tmp_path / "tok")))
    train_sft.main(cfg)
    saved = load_tokenizer(tmp_path / "run" / "model")
    assert saved.model_proto == tok.model_proto  # not a freshly trained one (that would have vocab 300)


def test_value_swap_trains_on_swapped_records_before_the_tokenizer_is_made(tiny, tmp_path, monkeypatch):
    """--value-swap P passes the training records, P and --seed to value_swapped, and what it returns is what the
    tokenizer and the model see (the eval records stay as they are)."""
    from minirlaif.data.augment import value_swapped

    calls, corpora = [], []
    real_train = train_sft.SentencePieceTokenizer.train

    def swapped(records, fraction, seed):
        calls.append((len(records), fraction, seed))
        return value_swapped(records, fraction, seed)

    monkeypatch.setattr(train_sft, "value_swapped", swapped)
    monkeypatch.setattr(train_sft.SentencePieceTokenizer, "train",
                        staticmethod(lambda texts, **kw: corpora.append(list(texts)) or real_train(corpora[-1], **kw)))
    cfg = train_sft.parse_config(train_sft.Config, "", sft_args(tiny, tmp_path, "--max-steps", "1", "--value-swap", "1",
                                                                "--seed", "3"))
    train_sft.main(cfg)
    records = train_sft.with_code(train_sft.load_dataset(cfg.data, cfg.eval_data, cfg.api_db).train, "training")
    expected = value_swapped(records, 1.0, 3)
    assert calls == [(len(records), 1.0, 3)] and expected != records
    assert corpora[0][: len(expected)] == [train_sft.format_prompt(r) for r in expected]
