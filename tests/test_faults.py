"""Faults in long runs: SIGKILL at every stage of train_rm.py, non-finite losses, an output folder that cannot
be written, and a judge server that misbehaves. Each run is a subprocess, as a user would start it.

What must hold after each fault: the run either finishes with exactly the result of an uninterrupted run, or
stops with one clear line (exit 1 for a run that stopped, 2 for bad input) saying how to go on; what was
already done (samples, judge answers, checkpoints, earlier stages) is kept intact and is not redone.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fake_openai_server import FakeOpenAIServer, expected_p_yes
from minirlaif.data import load_apibench
from minirlaif.data.prompts import extract_program
from minirlaif.feedback import QUESTIONS, build_messages
from minirlaif.feedback.cache import entry_problem
from tiny_data import write_tiny

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-test-FAULTS-0123456789"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0", "OPENAI_API_KEY": KEY}
for _hook in ("MINIRLAIF_KILL_AT_STEP", "MINIRLAIF_KILL_AT"):
    ENV.pop(_hook, None)


def run(script: str, args: list, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT, env={**ENV, **(env or {})},
                          capture_output=True, text=True, timeout=300)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def same_weights(dir_a: Path, dir_b: Path, *files: str) -> None:
    for name in files:
        a, b = load_file(str(dir_a / name)), load_file(str(dir_b / name))
        assert a.keys() == b.keys(), name
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k} differs"


def one_line_stop(r: subprocess.CompletedProcess, prefix: str) -> str:
    """The run's single message line (`error: ...` or `stopped: ...`), checked to be the last line on stderr."""
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    msgs = [line for line in lines if line.startswith(("error: ", "stopped: "))]
    assert len(msgs) == 1 and lines[-1] == msgs[0] and msgs[0].startswith(prefix), r.stderr[-3000:]
    return msgs[0]


def no_half_written(out: Path) -> None:
    assert not (out / "model").exists(), f"{out}/model appeared"
    leftovers = [p for p in out.rglob("*") if p.name.endswith((".tmp", ".old"))]
    assert not leftovers, leftovers


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """72 training records (so train_rm samples in two chunks of 64 + 8 prompts), a 30-step SFT run, and a
    reward model made from it (for PPO)."""
    import train_sft
    from minirlaif.reward_model import RewardModel

    base = tmp_path_factory.mktemp("faults")
    tiny = write_tiny(base / "data", n_train=72)
    args = ["--data", tiny["train"], "--eval-data", tiny["eval"], "--api-db", tiny["api"], "--out", base / "sft",
            "--batch-size", "8", "--vocab-size", "300", "--samples", "0", "--max-steps", "30", "--device", "cpu"]
    train_sft.main(train_sft.parse_config(train_sft.Config, "", list(map(str, args))))
    RewardModel.from_pretrained(base / "sft" / "model").save_pretrained(base / "rm" / "model")
    return {"base": base, "sft": base / "sft", "rm": base / "rm", **tiny}


def data_args(b):
    return ["--data", b["train"], "--eval-data", b["eval"], "--api-db", b["api"], "--device", "cpu"]


def sft_args(b, out, *extra):
    return [*data_args(b), "--out", out, "--batch-size", "8", "--vocab-size", "300", "--samples", "0",
            "--warmup-steps", "2", *extra]


def rm_args(b, out, *extra):
    return ["--sft", b["sft"], *data_args(b), "--out", out, "--k", "2", "--max-new-tokens", "24", *extra]


def ppo_args(b, out, *extra):
    return ["--sft", b["sft"], "--rm", b["rm"], *data_args(b), "--out", out, "--rollouts", "8", "--minibatch-size",
            "4", "--ppo-epochs", "2", "--max-new-tokens", "24", "--save-every", "1", *extra]


def cache_lines(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), "torn last line in the feedback cache"
    entries = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    assert all(entry_problem(e) is None for e in entries)
    return entries


# ---- 1. train_rm.py killed in every stage ------------------------------------------------------------------

@pytest.mark.slow
def test_train_rm_killed_in_every_stage_resumes_to_the_uninterrupted_result(base, tmp_path):
    """One run is SIGKILLed three times: after the first sampling chunk (plus a torn half line, as a kill in
    the middle of a write leaves), after the 100th judge answer, and after reward-model step 3 (checkpoint at
    2). Each --resume keeps what the last one finished; the final reward model equals an uninterrupted run's
    bitwise on CPU (weights, head and normalisation), and so do the samples, the cache and the pairs."""
    common = ["--prompts", "72", "--save-every", "2"]
    out = tmp_path / "killed"
    args = rm_args(base, out, *common)
    with ThreadPoolExecutor(2) as pool:  # the uninterrupted run, and the first killed one, side by side
        full = pool.submit(run, "train_rm.py", rm_args(base, tmp_path / "full", *common))
        # 1. killed after the first chunk (64 prompts x 2 samples) of sampling
        r = run("train_rm.py", args, {"MINIRLAIF_KILL_AT": "sample:1"})
        full = full.result()
    assert full.returncode == 0, full.stderr[-3000:]
    full_samples = (tmp_path / "full" / "samples.jsonl").read_text().splitlines(keepends=True)
    full_cache = {e["key"]: e for e in cache_lines(tmp_path / "full" / "feedback" / "cache.jsonl")}
    assert len(full_samples) == 144 and len(full_cache) > 100

    assert r.returncode == -9, r.stderr[-3000:]
    assert (out / "samples.jsonl").read_text().splitlines(keepends=True) == full_samples[:128]
    assert (out / "feedback" / "cache.jsonl").read_bytes() == b""  # opened (locked) at the start, nothing judged
    no_half_written(out)
    with open(out / "samples.jsonl", "a") as f:
        f.write(full_samples[128][:40])  # a torn line, as if killed mid-write

    # 2. resumed, killed once 100 judge answers are on disk
    r = run("train_rm.py", [*args, "--resume"], {"MINIRLAIF_KILL_AT": "answer:100"})
    assert r.returncode == -9, r.stderr[-3000:]
    assert (out / "samples.jsonl").read_text().splitlines(keepends=True) == full_samples
    cached = cache_lines(out / "feedback" / "cache.jsonl")
    assert len(cached) == 100  # every answer received before the kill, no corrupt line
    for e in cached:  # ... and each is the answer the uninterrupted run got
        assert {k: e[k] for k in ("answer", "p_yes", "question_id")} == \
               {k: full_cache[e["key"]][k] for k in ("answer", "p_yes", "question_id")}
    assert not (out / "pairs.jsonl").exists()
    no_half_written(out)

    # 3. resumed, killed after reward-model step 3 (the last checkpoint is step 2)
    r = run("train_rm.py", [*args, "--resume"], {"MINIRLAIF_KILL_AT_STEP": "3"})
    assert r.returncode == -9, r.stderr[-3000:]
    assert "hits=100," in r.stderr  # the 100 cached answers were not asked again
    assert len(cache_lines(out / "feedback" / "cache.jsonl")) == len(full_cache)
    assert torch.load(out / "checkpoint" / "state.pt", weights_only=False)["step"] == 2
    no_half_written(out)

    # 4. resumed to the end
    r = run("train_rm.py", [*args, "--resume"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "checkpoint at step 2" in r.stdout
    assert f"hits={len(full_cache)}," in r.stderr
    same_weights(tmp_path / "full" / "model", out / "model", "model.safetensors", "reward_head.safetensors")
    assert (out / "model" / "reward_norm.json").read_text() == (tmp_path / "full" / "model" / "reward_norm.json").read_text()
    for name in ("samples.jsonl", "pairs.jsonl", "heldout_pairs.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name
    # step 3 was logged before the kill and redone after it: the log has it once, with the same loss
    logged = [[(r["step"], r["loss"]) for r in map(json.loads, open(d / "metrics.jsonl"))] for d in (tmp_path / "full", out)]
    assert logged[0] == logged[1]


# ---- 2. non-finite losses ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sft_non_finite_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(base, tmp_path):
    """Killed after step 3 (checkpoint: step 2), resumed with --lr 1e30: the first update wrecks the weights,
    the next loss is not finite, and the run stops with one line (exit 1) naming the checkpoint and --resume.
    The checkpoint is byte-for-byte what it was, no model/ appears, and resuming with the original --lr ends
    with exactly the weights of an uninterrupted run."""
    args = ["--max-steps", "6", "--save-every", "2"]
    out = tmp_path / "nan"
    with ThreadPoolExecutor(2) as pool:
        full = pool.submit(run, "train_sft.py", sft_args(base, tmp_path / "full", *args))
        r = run("train_sft.py", sft_args(base, out, *args), {"MINIRLAIF_KILL_AT_STEP": "3"})
        full = full.result()
    assert full.returncode == 0, full.stderr[-3000:]
    assert r.returncode == -9
    kept = snapshot(out / "checkpoint")

    r = run("train_sft.py", sft_args(base, out, *args, "--resume", "--lr", "1e30"))
    assert r.returncode == 1, r.stderr[-3000:]
    assert "--lr 1e+30 replaces the checkpoint's 0.002" in r.stdout
    msg = one_line_stop(r, "stopped: step 3: loss")
    assert "is not finite" in msg and f"last good checkpoint is in {out / 'checkpoint'}" in msg and "--resume" in msg
    assert snapshot(out / "checkpoint") == kept
    no_half_written(out)

    r = run("train_sft.py", sft_args(base, out, *args, "--resume"))
    assert r.returncode == 0, r.stderr[-3000:]
    same_weights(tmp_path / "full" / "model", out / "model", "model.safetensors", "value_head.safetensors")


@pytest.mark.slow
def test_ppo_non_finite_stats_stop_cleanly_and_earlier_stages_are_untouched(base, tmp_path):
    """--lr 1e30 from the start: iteration 0's statistics are NaN; the run stops (exit 1, one line) and says
    no checkpoint exists yet. Then in the same folder: killed after iteration 1, resumed with --lr 1e30 (stops,
    checkpoint of iteration 1 byte-for-byte unchanged), resumed with the original --lr: it finishes (that a
    resume from an intact checkpoint equals an uninterrupted run is tests/test_ppo.py's kill/resume test).
    The SFT and reward-model folders are never modified."""
    stages = {k: snapshot(base[k]) for k in ("sft", "rm")}
    out = tmp_path / "ppo"
    r = run("train_ppo.py", ppo_args(base, out, "--iterations", "2", "--lr", "1e30"))
    assert r.returncode == 1, r.stderr[-3000:]
    msg = one_line_stop(r, "stopped: iteration 0: non-finite statistics")
    assert f"no checkpoint was written to {out} yet" in msg
    assert not (out / "checkpoint").exists()
    no_half_written(out)

    r = run("train_ppo.py", ppo_args(base, out, "--iterations", "2"), {"MINIRLAIF_KILL_AT_STEP": "1"})
    assert r.returncode == -9
    kept = snapshot(out / "checkpoint")
    r = run("train_ppo.py", ppo_args(base, out, "--iterations", "2", "--resume", "--lr", "1e30"))
    assert r.returncode == 1, r.stderr[-3000:]
    msg = one_line_stop(r, "stopped: iteration 1: non-finite statistics")
    assert f"last good checkpoint is in {out / 'checkpoint'}" in msg and "--resume" in msg
    assert snapshot(out / "checkpoint") == kept
    no_half_written(out)

    r = run("train_ppo.py", ppo_args(base, out, "--iterations", "2", "--resume"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stdout and "at iteration 1" in r.stdout and "replaces" not in r.stdout
    assert (out / "model" / "model.safetensors").exists()
    assert {k: snapshot(base[k]) for k in ("sft", "rm")} == stages


# ---- 3. an output folder that cannot be written ---------------------------------------------------------------

@pytest.mark.slow
def test_unwritable_output_folder_fails_before_any_work(base, tmp_path):
    """--out below a regular file (chmod does not stop root, a file in the way does): exit 2 with one line naming the folder and the fix, before any work (nothing on stdout)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder\n")
    cases = [("train_sft.py", sft_args(base, blocker / "out", "--max-steps", "1")),
             ("train_rm.py", rm_args(base, blocker / "out", "--prompts", "8")),
             ("train_ppo.py", ppo_args(base, blocker / "out", "--iterations", "1")),
             ("evaluate.py", ["--models", base["sft"], *data_args(base), "--out", blocker / "out", "--greedy"])]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda case: run(*case), cases))
    for (script, _), r in zip(cases, results):
        assert r.returncode == 2, (script, r.stderr[-3000:])
        msg = one_line_stop(r, "error: ")
        assert str(blocker) in msg and "not writable" in msg and "pick another --out" in msg, msg
        assert r.stdout == "", (script, r.stdout)
        assert blocker.read_text() == "not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.slow
def test_second_train_rm_on_a_busy_folder_stops_before_any_work(base, tmp_path):
    """While one run holds OUT's feedback cache, a second train_rm.py on OUT exits 2 with one line, before it
    samples (samples.jsonl is not created), and leaves the cache as it was."""
    from minirlaif.feedback import FeedbackCache

    out = tmp_path / "rm"
    out.mkdir()
    (out / ".minirlaif-run.json").write_text('{"script": "train_rm.py"}')  # the first run claimed the folder
    with FeedbackCache(out / "feedback" / "cache.jsonl"):  # and holds its cache
        r = run("train_rm.py", rm_args(base, out, "--prompts", "8"))
    assert r.returncode == 2, r.stderr[-3000:]
    msg = one_line_stop(r, "error: ")
    assert "in use by another process" in msg and "another --out" in msg, msg
    assert not (out / "samples.jsonl").exists() and (out / "feedback" / "cache.jsonl").read_bytes() == b""


# ---- 4. a judge server that misbehaves --------------------------------------------------------------------------

def judge_args(b, out, server, *extra):
    return rm_args(b, out, "--prompts", "8", "--judge", "openai", "--judge-base-url", server.base_url,
                   "--judge-model", "fake-judge", "--judge-workers", "4", *extra)


def check_labels(b, out: Path) -> dict[str, int]:
    """Every answer in scored.jsonl is the one the fake server gives that exact prompt (soft P(yes) from the
    logprobs, or a hard 0/1 when they were missing); returns how many answers came from each source."""
    records = load_apibench(b["train"])
    random.Random(0).shuffle(records)  # train_rm.py's choice of prompts (seed 0)
    sources: dict[str, int] = {}
    rows = [json.loads(line) for line in (out / "scored.jsonl").read_text().splitlines()]
    assert len(rows) == 16
    for row in rows:
        rec = records[row["meta"]["index"]]
        for q, a in zip(QUESTIONS, row["answers"]):
            assert a["question_id"] == q.id
            p = expected_p_yes(build_messages(rec.instruction, rec.api_data, extract_program(row["response"]), q)[1]["content"])
            assert a["answer"] == ("Yes" if p > 0.5 else "No"), (q.id, a, p)
            if a["source"] == "logprobs":
                assert a["p_yes"] == pytest.approx(p, abs=1e-9)
            else:
                assert a["source"] == "text" and a["p_yes"] == (1.0 if p > 0.5 else 0.0)
                assert a["detail"]["fallback"] == "no logprobs"
            sources[a["source"]] = sources.get(a["source"], 0) + 1
    return sources


@pytest.mark.slow
def test_transient_judge_faults_are_retried_and_every_label_is_right(base, tmp_path):
    """429 with Retry-After, 500, truncated JSON, an empty body, 'Maybe' and missing logprobs, end to end
    through train_rm.py --judge openai: the run completes, each failed request is asked again, 'Maybe' is
    read from the Yes/No odds among its logprobs (not asked again), the three answers without logprobs are
    kept as hard labels (and marked so), and no label is wrong."""
    out = tmp_path / "rm"
    # 4 failures in all: even if one question met every one of them it would still get its 5th attempt
    script = ["429", "no_logprobs", "500", "malformed", "no_logprobs", "maybe", "empty", "no_logprobs"]
    with FakeOpenAIServer(api_key=KEY) as server:
        server.script = list(script)
        r = run("train_rm.py", judge_args(base, out, server))
        assert r.returncode == 0, r.stderr[-3000:]
        actions = [q["action"] for q in server.requests]
    assert actions[: len(script)] == script  # every scripted fault was served
    n_failed = sum(a in ("429", "500", "malformed", "empty") for a in actions)
    assert n_failed == 4
    entries = cache_lines(out / "feedback" / "cache.jsonl")
    assert len(entries) == len(actions) - n_failed  # one answer per question; failures were asked again
    assert sum(e["source"] == "text" for e in entries) == 3
    assert sum(e["detail"]["attempts"] - 1 for e in entries) == n_failed  # each failure: that question again
    sources = check_labels(base, out)
    assert sources.get("text", 0) >= 3 and set(sources) <= {"logprobs", "text"}
    assert (out / "model" / "reward_head.safetensors").exists()
    for f in out.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".jsonl"):
            assert KEY not in f.read_text(), f


@pytest.mark.slow
def test_persistent_judge_fault_stops_with_resume_hint_and_resume_asks_only_the_rest(base, tmp_path):
    """The server answers 20 questions, then only 429s: the judge gives up, the run stops (exit 1) with one line
    naming the HTTP error and --resume; the 20 answers are in the cache, no pairs or model were written. With
    the fault gone, --resume asks exactly the questions that were not answered (the new server's request
    count proves it) and every label is right."""
    out = tmp_path / "rm"
    with FakeOpenAIServer(api_key=KEY) as server:
        server.script = ["ok"] * 20
        server.default = "429"
        r = run("train_rm.py", judge_args(base, out, server))
        answered = {q["user"] for q in server.requests if q["action"] == "ok"}
    assert r.returncode == 1, r.stderr[-3000:]
    msg = one_line_stop(r, "stopped: openai:fake-judge: no answer to question")
    assert "HTTP 429" in msg and "--resume" in msg and "cached answers are not asked again" in msg
    assert KEY not in r.stderr + r.stdout
    assert len(answered) == 20 and len(cache_lines(out / "feedback" / "cache.jsonl")) == 20
    assert not (out / "pairs.jsonl").exists() and not (out / "scored.jsonl").exists()
    no_half_written(out)

    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    unique_questions = len({(s["prompt"], extract_program(s["response"])) for s in samples}) * len(QUESTIONS)
    with FakeOpenAIServer(api_key=KEY) as server:
        r = run("train_rm.py", judge_args(base, out, server, "--resume"))
        asked = [q["user"] for q in server.requests]
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(asked) == unique_questions - 20 == len(set(asked))  # only the unanswered ones, once each
    assert not answered & set(asked)
    assert "hits=" in r.stderr and len(cache_lines(out / "feedback" / "cache.jsonl")) == unique_questions
    check_labels(base, out)
    assert (out / "model" / "reward_head.safetensors").exists()
