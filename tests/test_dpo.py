"""train_dpo.py: its step rebuilt by hand from plain forward passes, and the script end to end (kill/resume, bad input)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import train_dpo
from minirlaif.data import load_apibench
from minirlaif.data.prompts import format_prompt, format_target
from minirlaif.policy import Seq2SeqPolicy
from minirlaif.tokenizer import load_tokenizer
from tiny_data import train_tiny_sft, write_tiny

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sft_and_pairs(tmp_path_factory):
    """A tiny SFT run, and an RM-run folder holding pairs: chosen = the reference program, rejected = it cut short."""
    base = tmp_path_factory.mktemp("dpo")
    tiny = write_tiny(base / "data")
    train_tiny_sft(base / "sft", tiny, "--max-steps", "30")
    records = load_apibench(tiny["train"])
    pairs = [{"prompt": format_prompt(r), "chosen": format_target(r), "rejected": format_target(r)[: 12 + i % 7],
              "chosen_score": 1.0, "rejected_score": 0.2} for i, r in enumerate(records)]
    (base / "rm").mkdir()
    for name, part in (("pairs.jsonl", pairs[:48]), ("heldout_pairs.jsonl", pairs[48:56])):
        (base / "rm" / name).write_text("".join(json.dumps(p) + "\n" for p in part))
    return base, tiny, pairs


def test_dpo_step_equals_a_hand_computation_from_plain_forward_passes(sft_and_pairs):
    base, _, pairs = sft_and_pairs
    cfg = train_dpo.Config(beta=0.3, max_new_tokens=40)
    tokenizer = load_tokenizer(base / "sft" / "model")
    ref = Seq2SeqPolicy.from_pretrained(base / "sft" / "model").eval()
    policy = Seq2SeqPolicy.from_pretrained(base / "sft" / "model").eval()
    with torch.no_grad():  # a policy that has moved from the reference, so both terms matter
        gen = torch.Generator().manual_seed(0)
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    batch = [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs[:5]]
    loss, stats = train_dpo.dpo_step_loss(policy, ref, tokenizer, batch, cfg, "cpu")

    def summed_logp(model, prompt: str, response: str) -> float:
        """log pi(y | x) summed over y's tokens (EOS included): one unpadded example, decoder input [start] + y_<t."""
        ids = torch.tensor([tokenizer(prompt, cfg.max_prompt_len)])
        y = torch.tensor([tokenizer(response, cfg.max_new_tokens)])
        start = torch.full_like(y[:, :1], model.decoder_start_id)
        with torch.no_grad():
            logits = model.backbone(input_ids=ids, attention_mask=torch.ones_like(ids),
                                    decoder_input_ids=torch.cat([start, y[:, :-1]], 1)).logits
        return float(torch.log_softmax(logits.double(), -1).gather(-1, y.unsqueeze(-1)).sum())

    margins = []
    for prompt, chosen, rejected in batch:
        pc, pr = summed_logp(policy, prompt, chosen), summed_logp(policy, prompt, rejected)
        rc, rr = summed_logp(ref, prompt, chosen), summed_logp(ref, prompt, rejected)
        margins.append(cfg.beta * ((pc - rc) - (pr - rr)))
    want = float(-F.logsigmoid(torch.tensor(margins, dtype=torch.float64)).mean())
    assert abs(loss.item() - want) < 1e-4, (loss.item(), want)
    assert abs(float(stats["margin"]) - sum(margins) / len(margins)) < 1e-4
    assert any(abs(m) > 1e-2 for m in margins)  # the comparison above is not between zeros
    # Swapping chosen and rejected is a different loss: the pairing's direction is wired in.
    swapped, _ = train_dpo.dpo_step_loss(policy, ref, tokenizer, [(p, r, c) for p, c, r in batch], cfg, "cpu")
    assert abs(swapped.item() - float(-F.logsigmoid(-torch.tensor(margins, dtype=torch.float64)).mean())) < 1e-4


def run_dpo(base, tiny, out, *extra, env=None):
    args = [sys.executable, str(ROOT / "train_dpo.py"), "--sft", str(base / "sft"), "--rm", str(base / "rm"), "--out", str(out), "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--max-new-tokens", "40",
            "--save-every", "2", "--device", "cpu", *extra]
    return subprocess.run(args, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_train_dpo_learns_the_pairs_and_kill_resume_equals_uninterrupted(sft_and_pairs, tmp_path):
    base, tiny, _ = sft_and_pairs
    full = run_dpo(base, tiny, tmp_path / "full")
    assert full.returncode == 0, full.stderr[-2000:]
    killed = run_dpo(base, tiny, tmp_path / "k", env={"MINIRLAIF_KILL_AT_STEP": "5"})
    assert killed.returncode == -9
    resumed = run_dpo(base, tiny, tmp_path / "k", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = [[json.loads(line) for line in open(tmp_path / run / "metrics.jsonl")] for run in ("full", "k")]
    assert [(r["step"], r["loss"]) for r in rows[0]] == [(r["step"], r["loss"]) for r in rows[1]]
    assert len(rows[0]) == 12  # 48 pairs / 8 x 2 epochs
    a, b = (load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("full", "k"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    # The pairs are easy (a whole program vs its cut-off start): the implicit reward learns to rank them.
    assert summary["heldout_accuracy"] >= 0.75 and rows[0][-1]["margin"] > rows[0][0]["margin"]


def test_missing_pairs_are_one_line_and_no_run_folder(sft_and_pairs, tmp_path):
    base, tiny, _ = sft_and_pairs
    r = run_dpo(base, tiny, tmp_path / "out", "--rm", str(tmp_path / "no_rm"))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'no_rm' / 'pairs.jsonl'}: no such file; run train_rm.py first (its pairs are DPO's data), "
        "or pass --rm"]
    assert not (tmp_path / "out").exists()
