import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train_ppo
from minirlaif.ppo import PPOConfig, response_logprobs, rollout, rollout_stats, update
from minirlaif.reward_model import RewardModel
from tiny_data import tiny_models, train_tiny_sft, write_tiny

ROOT = Path(__file__).resolve().parents[1]


def prompts(b=8, s=10):
    ids = torch.randint(3, 200, (b, s), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    ids[0, 6:], mask[0, 6:] = 0, 0
    return ids, mask


def test_one_iteration_changes_weights_and_kl_starts_at_zero():
    policy, ref, rm = tiny_models()
    ids, mask = prompts()
    cfg = PPOConfig(max_new_tokens=12, ppo_epochs=2, minibatch_size=4)
    batch = rollout(policy, ref, rm, ids, mask, beta=0.1, cfg=cfg, eos_id=1, pad_id=0,
                    generator=torch.Generator().manual_seed(0))
    assert batch.kl.abs().max() < 1e-4  # policy == reference at step 0
    assert torch.all(batch.mask[:, 0] == 1)  # the first generated token is a response token
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    stats = update(policy, torch.optim.AdamW(policy.parameters(), lr=1e-3), batch, cfg, torch.Generator().manual_seed(0))
    stats.update(rollout_stats(batch, 0.1))
    assert all(torch.isfinite(torch.tensor(v)) for k, v in stats.items() if k != "explained_variance")
    changed = [k for k, v in policy.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("value_head") for k in changed) and any(k.startswith("backbone") for k in changed)
    # after the update the policy has moved away from the reference
    logp, _, _ = response_logprobs(policy, ids, mask, batch.tokens, batch.mask, cfg.temperature)
    assert (logp - batch.ref_logprobs).abs().max() > 1e-4


def test_first_response_token_gets_gradient():
    policy, ref, rm = tiny_models(1)
    ids, mask = prompts(4)
    cfg = PPOConfig(max_new_tokens=8)
    batch = rollout(policy, ref, rm, ids, mask, 0.1, cfg, 1, 0, torch.Generator().manual_seed(1))
    logits, _ = policy(ids, mask, policy.decoder_inputs(batch.tokens))
    logits.retain_grad()
    from minirlaif.losses import logprobs_from_logits, ppo_policy_loss

    logp = logprobs_from_logits(logits, batch.tokens)
    loss, _ = ppo_policy_loss(logp, batch.logprobs, batch.advantages, batch.mask, 0.2)
    loss.backward()
    assert logits.grad[:, 0].abs().sum() > 0  # TRL's old seq2seq PPO masked this position out


def test_eos_penalty_replaces_score_of_unfinished():
    policy, ref, rm = tiny_models(2)
    ids, mask = prompts(6)
    cfg = PPOConfig(max_new_tokens=3, missing_eos_penalty=-7.0)  # 3 tokens: most responses are cut
    batch = rollout(policy, ref, rm, ids, mask, 0.0, cfg, 1, 0, torch.Generator().manual_seed(0))
    assert (~batch.finished).any()
    assert torch.all(batch.scores[~batch.finished] == -7.0)
    assert torch.equal(batch.scores[batch.finished], batch.rm_scores[batch.finished])


@pytest.fixture(scope="module")
def sft_and_rm(tmp_path_factory):
    base = tmp_path_factory.mktemp("ppo")
    tiny = write_tiny(base / "data")
    train_tiny_sft(base / "sft", tiny, "--max-steps", "30")
    rm = RewardModel.from_pretrained(base / "sft" / "model")
    rm.save_pretrained(base / "rm" / "model")
    return base, tiny


def run_ppo(base, tiny, out, *extra, env=None):
    args = [sys.executable, str(ROOT / "train_ppo.py"), "--sft", str(base / "sft"), "--rm", str(base / "rm"),
            "--data", str(tiny["train"]), "--eval-data", str(tiny["eval"]), "--api-db", str(tiny["api"]),
            "--out", str(out), "--iterations", "4", "--rollouts", "8", "--minibatch-size", "4", "--ppo-epochs", "2",
            "--max-new-tokens", "24", "--save-every", "1", "--device", "cpu", *extra]
    return subprocess.run(args, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_train_ppo_kill_and_resume_equals_uninterrupted(sft_and_rm, tmp_path):
    base, tiny = sft_and_rm
    full = run_ppo(base, tiny, tmp_path / "full", "--plot")
    assert full.returncode == 0, full.stderr[-2000:]
    assert (tmp_path / "full" / "curves.png").stat().st_size > 1000
    # killed after iteration 3, whose checkpoint (every 2) is iteration 2: iteration 3 is logged, then redone
    killed = run_ppo(base, tiny, tmp_path / "k", "--save-every", "2", env={"MINIRLAIF_KILL_AT_STEP": "3"})
    assert killed.returncode == -9
    resumed = run_ppo(base, tiny, tmp_path / "k", "--save-every", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "iteration 2" in resumed.stdout
    logged = [[(r["iteration"], r["score"], r["kl"]) for r in map(json.loads, open(tmp_path / run / "metrics.jsonl"))]
              for run in ("full", "k")]
    assert logged[0] == logged[1]  # each iteration once, with the same numbers
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "k" / "model" / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    va = load_file(str(tmp_path / "full" / "model" / "value_head.safetensors"))
    vb = load_file(str(tmp_path / "k" / "model" / "value_head.safetensors"))
    assert all(torch.equal(va[k], vb[k]) for k in va)
    # the sft weights are not what PPO saved: it trained
    s = load_file(str(base / "sft" / "model" / "model.safetensors"))
    assert any(not torch.equal(s[k], a[k]) for k in a)


def killed_and_resumed(base, tiny, tmp_path, *args):
    """One uninterrupted run and one SIGKILLed after iteration 3 (checkpoint at 2) then resumed, with `args`:
    (metrics rows of each, policy weights of each). Asserts that every run exited as it should."""
    full = run_ppo(base, tiny, tmp_path / "full", *args)
    assert full.returncode == 0, full.stderr[-2000:]
    killed = run_ppo(base, tiny, tmp_path / "k", *args, "--save-every", "2", env={"MINIRLAIF_KILL_AT_STEP": "3"})
    assert killed.returncode == -9
    resumed = run_ppo(base, tiny, tmp_path / "k", *args, "--save-every", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = [[json.loads(line) for line in open(tmp_path / run / "metrics.jsonl")] for run in ("full", "k")]
    weights = [load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("full", "k")]
    return rows, weights


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_train_ppo_without_a_critic_trains_resumes_and_leaves_the_value_head(sft_and_rm, tmp_path, algo):
    """--algo grpo / rloo end to end: killed after iteration 3 and resumed, it equals the uninterrupted run; the
    value head is never trained; the log has no critic statistics (and GRPO's k3 KL term)."""
    base, tiny = sft_and_rm
    rows, (a, b) = killed_and_resumed(base, tiny, tmp_path, "--algo", algo, "--group-size", "4")
    assert [(r["iteration"], r["score"], r["kl"]) for r in rows[0]] == [(r["iteration"], r["score"], r["kl"]) for r in rows[1]]
    assert all("value_loss" not in r and "explained_variance" not in r for r in rows[0])
    assert all(("kl_loss" in r) == (algo == "grpo") for r in rows[0])
    assert all(torch.equal(a[k], b[k]) for k in a)
    s = load_file(str(base / "sft" / "model" / "model.safetensors"))
    assert any(not torch.equal(s[k], a[k]) for k in a)  # it trained
    v_sft = load_file(str(base / "sft" / "model" / "value_head.safetensors"))
    v = load_file(str(tmp_path / "full" / "model" / "value_head.safetensors"))
    assert all(torch.equal(v[k], v_sft[k]) for k in v)  # no critic: the value head is the SFT run's


def test_group_settings_that_do_not_fit_are_one_line_errors(sft_and_rm, tmp_path):
    base, tiny = sft_and_rm
    for extra, message in [(("--algo", "grpo", "--group-size", "3"), "--rollouts 8 must be a multiple of --group-size 3"),
                           (("--algo", "rloo", "--group-size", "1"), "--algo rloo compares the samples of one prompt")]:
        r = run_ppo(base, tiny, tmp_path / "x", *extra)
        assert r.returncode == 2 and message in r.stderr.strip().splitlines()[-1], r.stderr[-2000:]
        assert not (tmp_path / "x").exists()


def test_judge_reward_scores_each_decoded_program_with_its_own_record_chunk_by_chunk(sft_and_rm):
    """JudgeReward, called as rollout() calls a reward model (in chunks, in row order), gives each response the
    score label() gives its decoded program with its own record."""
    from minirlaif.batching import pad_right
    from minirlaif.data import load_api_database, load_apibench
    from minirlaif.data.prompts import extract_program
    from minirlaif.feedback import Item, label, make_judge
    from minirlaif.feedback.online import JudgeReward
    from minirlaif.tokenizer import load_tokenizer

    base, tiny = sft_and_rm
    tokenizer = load_tokenizer(base / "sft" / "model")
    records = load_apibench(tiny["train"])[:6]
    judge = make_judge("analyzer", api_database=load_api_database(tiny["api"]), hub="builtin")
    programs = [r.code for r in records[:3]] + [records[0].code, "print(", "import math\nprint(math.gcd(4, 6))"]
    tokens, mask = pad_right([tokenizer(p, 128) for p in programs], tokenizer.pad_id)
    scorer = JudgeReward(judge, None, {"api_fits": 3.0}, tokenizer)
    scorer.expect(records)
    got = torch.cat([scorer(None, None, tokens[:4], mask[:4]), scorer(None, None, tokens[4:], mask[4:])])
    decoded = [extract_program(tokenizer.decode(tokenizer(p, 128))) for p in programs]
    want = [fb.score for fb in label(judge, [Item(r.instruction, r.api_data, d, r) for r, d in zip(records, decoded)],
                                     weights={"api_fits": 3.0}, progress=False)]
    assert got.tolist() == pytest.approx(want) and len(set(want)) > 1
    assert got[0] > got[3]  # row 3 is record 0's program answering record 3: judged against its own record
    with pytest.raises(RuntimeError, match="only 0 records expected"):
        scorer(None, None, tokens[:1], mask[:1])


@pytest.mark.slow
def test_train_ppo_with_the_judge_as_reward_needs_no_reward_model_and_resumes(sft_and_rm, tmp_path):
    base, tiny = sft_and_rm
    # no reward model anywhere
    rows, (a, b) = killed_and_resumed(base, tiny, tmp_path, "--reward", "judge", "--whiten-scores",
                                      "--rm", str(tmp_path / "no_rm"))
    assert [(r["iteration"], r["rm_score"], r["kl"]) for r in rows[0]] == [(r["iteration"], r["rm_score"], r["kl"]) for r in rows[1]]
    assert all(0.0 <= r["rm_score"] <= 1.0 for r in rows[0])  # the judge's weighted P(good), not an RM's output
    cache = [json.loads(line) for line in open(tmp_path / "full" / "feedback" / "cache.rank0.jsonl")]
    assert cache and {e["judge"].split(":")[0] for e in cache} == {"analyzer"}
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- the KL controllers (train_ppo.py) ----------------------------------------------------------------
def test_adaptive_kl_controller_sequence_by_hand():
    ctl = train_ppo.AdaptiveKLController(init_beta=0.2, target=6.0, horizon=10000)
    assert ctl.value == 0.2
    # KL 12: e = clip(12/6 - 1) = clip(1.0) = +0.2; mult = 1 + 0.2 * 256/10000 = 1.00512
    ctl.update(12.0, 256)
    assert ctl.value == pytest.approx(0.201024, abs=1e-15)
    # KL 3: e = clip(-0.5) = -0.2; mult = 0.99488; 0.201024 * 0.99488 = 0.19999475712
    ctl.update(3.0, 256)
    assert ctl.value == pytest.approx(0.19999475712, abs=1e-15)
    # KL 6.6: e = +0.1 (inside the clip); mult = 1 + 0.1 * 100/10000 = 1.001
    ctl.update(6.6, 100)
    assert ctl.value == pytest.approx(0.20019475187712, abs=1e-15)
    # on target: unchanged; negative KL (k1 noise): e = clip(-1.5) = -0.2
    ctl.update(6.0, 1000)
    assert ctl.value == pytest.approx(0.20019475187712, abs=1e-15)
    ctl.update(-3.0, 50)
    assert ctl.value == pytest.approx(0.20019475187712 * (1 - 0.2 * 50 / 10000), abs=1e-15)

    # checkpoint round trip restores beta
    fresh = train_ppo.AdaptiveKLController(init_beta=0.2, target=6.0, horizon=10000)
    fresh.load_state_dict(ctl.state_dict())
    assert fresh.value == ctl.value and fresh.state_dict() == ctl.state_dict()


def test_fixed_kl_controller_and_kind_check():
    ctl = train_ppo.FixedKLController(0.05)
    ctl.update(100.0, 512)
    assert ctl.value == 0.05
    other = train_ppo.FixedKLController(0.3)
    other.load_state_dict(ctl.state_dict())
    assert other.value == 0.05
    with pytest.raises(ValueError, match="adaptive"):
        other.load_state_dict(train_ppo.AdaptiveKLController(0.2, 6.0, 10000).state_dict())
