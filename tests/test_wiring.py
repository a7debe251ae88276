"""Wiring: each training step rebuilt by hand from a plain forward pass and plain loops, then compared.

The loss functions have their own tests against independent computations (test_losses.py). These
tests check how the steps put them together: which log-probs go where in the KL reward, which way
each loss term points, which positions a loss reads. Each builds the step in float64 Python loops
or plain tensor code, without ppo.py's or train_sft.py's helpers, and compares with the library's.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from minirlaif.ppo import PPOConfig, rollout, update
from tiny_data import tiny_models

EOS, PAD = 1, 0
VOCAB = 12  # small (and T = 2 below), so that some sampled responses end with EOS and some are cut


def _prompts(b: int = 6, s: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(2, VOCAB, (b, s), generator=torch.Generator().manual_seed(11))
    mask = torch.ones_like(ids)
    ids[1, 5:], mask[1, 5:] = PAD, 0  # prompts of different lengths
    ids[4, 7:], mask[4, 7:] = PAD, 0
    return ids, mask


def _plain_forward(model, ids, mask, tokens, temperature):
    """Teacher-forced log pi(y_t), V(s_t), logits/T, by hand. Seq2seq: decoder input = [start] + y_<t.
    Decoder-only: each row alone, unpadded prompt + response; position S_b - 1 + t predicts y_t."""
    if hasattr(model, "decoder_start_id"):
        start = torch.full_like(tokens[:, :1], model.decoder_start_id)
        out = model.backbone(input_ids=ids, attention_mask=mask,
                             decoder_input_ids=torch.cat([start, tokens[:, :-1]], dim=1), output_hidden_states=True)
        hidden, logits = out.decoder_hidden_states[-1], out.logits
    else:
        hidden, logits = [], []
        for b in range(ids.shape[0]):
            prompt = ids[b, mask[b].bool()]
            sequence = torch.cat([prompt, tokens[b]])[None]
            out = model.backbone(input_ids=sequence, attention_mask=torch.ones_like(sequence), output_hidden_states=True)
            S = len(prompt)
            hidden.append(out.hidden_states[-1][0, S - 1 : -1])
            logits.append(out.logits[0, S - 1 : -1])
        hidden, logits = torch.stack(hidden), torch.stack(logits)
    values = model.value_head(hidden).squeeze(-1)
    logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return logp, values, logits


def _models(preset: str = "tiny"):
    """Policy, reference and reward model that differ: a KL of 0 or a zero value head would hide mistakes."""
    policy, ref, rm = tiny_models(seed=7, vocab_size=VOCAB, preset=preset)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(8)
        for p in ref.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        policy.value_head.weight.copy_(0.1 * torch.randn(policy.value_head.weight.shape, generator=gen))
        policy.value_head.bias.fill_(0.3)
    return policy, ref, rm


@pytest.mark.parametrize("preset", ["tiny", "gpt2-tiny"])  # seq2seq and decoder-only
def test_ppo_rollout_and_update_equal_a_hand_built_iteration(preset):
    policy, ref, rm = _models(preset)
    ids, mask = _prompts()
    beta = 0.3
    cfg = PPOConfig(temperature=2.0, max_new_tokens=10, missing_eos_penalty=-1.5, gamma=0.9, lam=0.8,
                    clip_eps=0.2, value_clip_eps=0.2, vf_coef=0.5, ent_coef=0.01, ppo_epochs=1,
                    minibatch_size=6, max_grad_norm=1e9)
    before = copy.deepcopy(policy)
    batch = rollout(policy, ref, rm, ids, mask, beta, cfg, EOS, PAD, generator=torch.Generator().manual_seed(0))
    tokens, m = batch.tokens, batch.mask.bool()  # the samples themselves: sampling has its own tests
    B, T = tokens.shape
    lengths = m.sum(1).tolist()
    assert len(set(lengths)) > 1, "responses of one length would not test the masking"

    # ---- rollout: log-probs, values, scores, per-token rewards, GAE, whitening ----
    with torch.no_grad():
        logp, values, _ = _plain_forward(before, ids, mask, tokens, cfg.temperature)
        ref_logp, _, _ = _plain_forward(ref, ids, mask, tokens, cfg.temperature)
        rm_score = rm(ids, mask, tokens, batch.mask)
    finished = [EOS in tokens[b, :lengths[b]].tolist() for b in range(B)]
    assert finished == batch.finished.tolist() and not all(finished) and any(finished)
    scores = [float(rm_score[b]) if finished[b] else cfg.missing_eos_penalty for b in range(B)]

    rewards = [[0.0] * T for _ in range(B)]
    adv = [[0.0] * T for _ in range(B)]
    ret = [[0.0] * T for _ in range(B)]
    for b in range(B):
        L = lengths[b]
        for t in range(L):  # r_t = -beta (log pi_old - log pi_ref) + [t = last] score
            rewards[b][t] = -beta * (float(logp[b, t]) - float(ref_logp[b, t])) + (scores[b] if t == L - 1 else 0.0)
        a_next, v_next = 0.0, 0.0
        for t in reversed(range(L)):  # delta_t = r_t + gamma V_{t+1} - V_t; A_t = delta_t + gamma lambda A_{t+1}
            v = float(values[b, t])
            a_next = rewards[b][t] + cfg.gamma * v_next - v + cfg.gamma * cfg.lam * a_next
            adv[b][t], ret[b][t], v_next = a_next, a_next + v, v
    real = [adv[b][t] for b in range(B) for t in range(lengths[b])]
    mean = sum(real) / len(real)
    var = sum((a - mean) ** 2 for a in real) / (len(real) - 1)
    white = [[(adv[b][t] - mean) / math.sqrt(var + 1e-8) if t < lengths[b] else 0.0 for t in range(T)]
             for b in range(B)]

    def close(got: torch.Tensor, want, what: str, atol: float = 1e-5) -> None:
        want = torch.as_tensor(want, dtype=torch.float64)
        assert torch.allclose(got.double(), want, atol=atol), f"{what}: max diff {(got.double() - want).abs().max()}"

    close(batch.logprobs, logp * m, "log pi_old")
    close(batch.ref_logprobs, ref_logp * m, "log pi_ref")
    close(batch.values, values * m, "V_old")
    close(batch.scores, scores, "scores (EOS penalty)")
    close(batch.rewards, rewards, "per-token rewards")
    close(batch.returns, ret, "returns")
    close(batch.advantages, white, "whitened advantages")

    # ---- update: one minibatch of the whole batch, one SGD step ----
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    stats = update(policy, optimizer, batch, cfg, generator=torch.Generator().manual_seed(0))

    hand = copy.deepcopy(before)
    new_logp, new_values, logits = _plain_forward(hand, ids, mask, tokens, cfg.temperature)
    old_logp, old_v = batch.logprobs.double(), batch.values.double()
    A, R = torch.tensor(white, dtype=torch.float64), torch.tensor(ret, dtype=torch.float64)
    ratio = torch.exp(new_logp.double() - old_logp)
    surrogate = torch.maximum(-A * ratio, -A * ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps))
    v = new_values.double()
    v_clip = old_v + (v - old_v).clamp(-cfg.value_clip_eps, cfg.value_clip_eps)
    value_err = 0.5 * torch.maximum((v - R) ** 2, (v_clip - R) ** 2)
    probs = torch.softmax(logits.double(), dim=-1)
    entropy = -(probs * torch.log_softmax(logits.double(), dim=-1)).sum(-1)
    n = m.sum()
    pg_loss, vf_loss, ent = (surrogate * m).sum() / n, (value_err * m).sum() / n, (entropy * m).sum() / n
    loss = pg_loss + cfg.vf_coef * vf_loss - cfg.ent_coef * ent
    loss.backward()
    with torch.no_grad():
        for p in hand.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad

    assert math.isclose(stats["policy_loss"], pg_loss.item(), abs_tol=1e-6)
    assert math.isclose(stats["value_loss"], vf_loss.item(), abs_tol=1e-6)
    assert math.isclose(stats["entropy"], ent.item(), abs_tol=1e-5)
    for (name, got), want in zip(policy.named_parameters(), hand.parameters()):
        assert torch.allclose(got, want, atol=1e-6), f"{name}: max diff {(got - want).abs().max()}"
    moved = max((p - q).abs().max().item() for p, q in zip(policy.parameters(), before.parameters()))
    assert moved > 1e-4  # the step did something, so the comparison above means something


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_grpo_and_rloo_rollout_and_update_equal_a_hand_built_iteration(algo):
    """No critic: k = 3 samples of each of 2 prompts; one advantage per response from its own group only
    (GRPO: normalised score; RLOO: leave-one-out on score - beta * sum KL); GRPO adds beta * k3 KL to the loss."""
    policy, ref, rm = _models()
    ids6, mask6 = _prompts()
    k = 3
    ids, mask = ids6[:2].repeat_interleave(k, dim=0), mask6[:2].repeat_interleave(k, dim=0)  # rows 0-2: prompt 0
    beta = 0.3
    cfg = PPOConfig(temperature=2.0, max_new_tokens=10, missing_eos_penalty=-1.5, clip_eps=0.2, ent_coef=0.01,
                    ppo_epochs=1, minibatch_size=6, max_grad_norm=1e9, algo=algo, group_size=k, vf_coef=0.5)
    before = copy.deepcopy(policy)
    batch = rollout(policy, ref, rm, ids, mask, beta, cfg, EOS, PAD, generator=torch.Generator().manual_seed(1))
    tokens, m = batch.tokens, batch.mask.bool()
    B, T = tokens.shape
    lengths = m.sum(1).tolist()
    with torch.no_grad():
        logp, _, _ = _plain_forward(before, ids, mask, tokens, cfg.temperature)
        ref_logp, _, _ = _plain_forward(ref, ids, mask, tokens, cfg.temperature)
        rm_score = rm(ids, mask, tokens, batch.mask)
    finished = [EOS in tokens[b, :lengths[b]].tolist() for b in range(B)]
    scores = [float(rm_score[b]) if finished[b] else cfg.missing_eos_penalty for b in range(B)]
    kl_sum = [sum(float(logp[b, t]) - float(ref_logp[b, t]) for t in range(lengths[b])) for b in range(B)]
    per_response = []
    for b in range(B):
        g = range(b // k * k, b // k * k + k)  # b's group: the rows of its prompt
        if algo == "grpo":
            mean = sum(scores[j] for j in g) / k
            std = math.sqrt(sum((scores[j] - mean) ** 2 for j in g) / (k - 1))
            per_response.append((scores[b] - mean) / (std + 1e-4))
        else:
            R = [scores[j] - beta * kl_sum[j] for j in g]
            per_response.append(R[b % k] - (sum(R) - R[b % k]) / (k - 1))
    assert max(abs(a) for a in per_response) > 0.1, "all-zero advantages would not test anything"
    A = torch.tensor([[per_response[b] if t < lengths[b] else 0.0 for t in range(T)] for b in range(B)],
                     dtype=torch.float64)
    assert torch.allclose(batch.advantages.double(), A, atol=1e-5), (batch.advantages, A)

    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    stats = update(policy, optimizer, batch, cfg, generator=torch.Generator().manual_seed(0), beta=beta)
    hand = copy.deepcopy(before)
    new_logp, _, logits = _plain_forward(hand, ids, mask, tokens, cfg.temperature)
    ratio = torch.exp(new_logp.double() - batch.logprobs.double())
    surrogate = torch.maximum(-A * ratio, -A * ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps))
    probs = torch.softmax(logits.double(), dim=-1)
    entropy = -(probs * torch.log_softmax(logits.double(), dim=-1)).sum(-1)
    n = m.sum()
    loss = (surrogate * m).sum() / n - cfg.ent_coef * (entropy * m).sum() / n
    if algo == "grpo":  # k3 = exp(ref - logp) - (ref - logp) - 1, against the frozen reference
        d = batch.ref_logprobs.double() - new_logp.double()
        kl3 = ((torch.exp(d) - d - 1) * m).sum() / n
        loss = loss + beta * kl3
        assert math.isclose(stats["kl_loss"], kl3.item(), abs_tol=1e-6)
    else:
        assert "kl_loss" not in stats
    assert "value_loss" not in stats  # no critic is trained
    loss.backward()
    with torch.no_grad():
        for p in hand.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    for (name, got), want in zip(policy.named_parameters(), hand.parameters()):
        assert torch.allclose(got, want, atol=1e-6), f"{name}: max diff {(got - want).abs().max()}"
    assert torch.equal(policy.value_head.weight, before.value_head.weight)  # untouched without a critic


def test_sft_loss_reads_only_the_target_tokens():
    """train_sft.batch_loss = mean over target tokens (EOS included) of -log pi(y_t | x, y_<t); the
    instruction's tokens and the padding of either side never count."""
    import train_sft
    from minirlaif.policy import Seq2SeqPolicy

    torch.manual_seed(3)
    policy = Seq2SeqPolicy.from_preset("tiny", vocab_size=120, pad_id=PAD, eos_id=EOS).eval()
    pairs = [([5, 6, 7, 8, 9], [20, 21, 22, EOS]), ([30, 31], [40, 41, 42, 43, 44, 45, EOS]), ([50, 51, 52], [EOS])]
    loss, n_tokens = train_sft.batch_loss(policy, pairs, PAD, "cpu")

    total, count = 0.0, 0
    with torch.no_grad():
        for prompt, target in pairs:  # one unpadded example at a time
            ids = torch.tensor([prompt])
            decoder_input = torch.tensor([[policy.decoder_start_id] + target[:-1]])  # [start] + y_<t, by hand
            logits = policy.backbone(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=decoder_input).logits
            logp = torch.log_softmax(logits[0].double(), dim=-1)
            total -= sum(float(logp[t, y]) for t, y in enumerate(target))
            count += len(target)
    assert n_tokens == count == 12
    assert math.isclose(loss.item(), total / count, rel_tol=1e-5)


def test_reward_model_loss_pairs_each_chosen_with_its_rejected():
    """train_rm.batch_loss: Bradley-Terry over (prompt, chosen, rejected) triples = mean of
    -log sigmoid(r(x, y_chosen) - r(x, y_rejected)), each reward from its own unpadded example; BCE
    with --rm-loss bce. Raw rewards, as in training."""
    import train_rm
    from minirlaif.reward_model import RewardModel
    from minirlaif.tokenizer import SentencePieceTokenizer
    from tiny_data import tiny_records

    recs = tiny_records(60)
    tokenizer = SentencePieceTokenizer.train([r.instruction for r in recs] + [r.code for r in recs], vocab_size=150)
    policy, _, _ = tiny_models(seed=9, vocab_size=tokenizer.vocab_size)
    model = RewardModel(policy.backbone, pooling="mean").eval()
    triples = [(recs[i].instruction, recs[i].code, recs[i + 1].code) for i in range(0, 10, 2)]
    cfg = train_rm.Config(max_prompt_len=64, max_new_tokens=128)

    def reward(prompt: str, response: str) -> float:
        ids, resp = torch.tensor([tokenizer(prompt, 64)]), torch.tensor([tokenizer(response, 128)])
        return float(model.raw_reward(ids, torch.ones_like(ids), resp, torch.ones_like(resp)))

    with torch.no_grad():
        loss, acc = train_rm.batch_loss(model, tokenizer, triples, cfg, "cpu")
        margins = [reward(x, c) - reward(x, r) for x, c, r in triples]
    want = sum(math.log1p(math.exp(-d)) for d in margins) / len(margins)  # -log sigmoid(d)
    assert len({round(d, 3) for d in margins}) == len(margins) and any(d < 0 for d in margins)
    assert math.isclose(float(loss), want, rel_tol=1e-5)
    assert math.isclose(acc, sum(d > 0 for d in margins) / len(margins), rel_tol=1e-6)

    cfg.rm_loss = "bce"
    labelled = [(x, c, 1.0) for x, c, _ in triples] + [(x, r, 0.0) for x, _, r in triples]
    with torch.no_grad():
        loss, _ = train_rm.batch_loss(model, tokenizer, labelled, cfg, "cpu")
        logits = [reward(x, y) for x, y, _ in labelled]
    want = sum(math.log1p(math.exp(-z)) if label else math.log1p(math.exp(z)) for z, (_, _, label)
               in zip(logits, labelled)) / len(labelled)
    assert math.isclose(float(loss), want, rel_tol=1e-5)
