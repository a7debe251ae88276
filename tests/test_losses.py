"""Tests for minirlaif/losses.py: each function against a direct, independent computation
(plain Python loops over batch and time, or hand-computed small cases), in float64."""

from __future__ import annotations

import math

import pytest
import torch

from minirlaif.losses import (
    bradley_terry_accuracy,
    check_response_batch,
    dpo_loss,
    bradley_terry_loss,
    entropy_from_logits,
    explained_variance,
    gae,
    group_advantages,
    kl_penalized_rewards,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    pointwise_bce_loss,
    ppo_policy_loss,
    ppo_value_loss,
    rloo_advantages,
    sequence_kl,
)

DT = torch.float64
LENGTHS = [5, 3, 1, 4]  # real response tokens per row; T = 5
T = 5


def mask_from_lengths(lengths: list[int], T: int = T) -> torch.Tensor:
    """(B, T) float mask, right-padded, built with a loop."""
    m = torch.zeros(len(lengths), T, dtype=DT)
    for b, n in enumerate(lengths):
        for t in range(n):
            m[b, t] = 1.0
    return m


def with_garbage(x: torch.Tensor, mask: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """x with every padded position replaced by huge random values, inf and nan."""
    g = torch.Generator().manual_seed(seed)
    junk = torch.randn(x.shape, generator=g, dtype=x.dtype) * 1e30
    junk.view(-1)[0::3] = float("inf")
    junk.view(-1)[1::3] = float("nan")
    return torch.where(mask.bool(), x, junk)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def real_values(x: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """The real-token entries of x, row by row, with a loop."""
    return [float(x[b, t]) for b in range(x.shape[0]) for t in range(x.shape[1]) if mask[b, t] == 1]


# --------------------------------------------------------------------------------------------------
# masked statistics


def test_masked_mean_is_mean_over_all_real_tokens():
    mask = mask_from_lengths(LENGTHS)
    x = rand(4, T)
    vals = real_values(x, mask)
    assert masked_mean(x, mask).item() == pytest.approx(sum(vals) / len(vals), abs=1e-12)
    assert masked_mean(x, mask.bool()).item() == pytest.approx(sum(vals) / len(vals), abs=1e-12)
    # NOT the mean of per-row means (rows have different lengths)
    row_means = [sum(float(x[b, t]) for t in range(n)) / n for b, n in enumerate(LENGTHS)]
    assert abs(masked_mean(x, mask).item() - sum(row_means) / len(row_means)) > 1e-6


def test_masked_mean_along_a_dim():
    mask = mask_from_lengths([3, 0, 1])
    x = rand(3, T)
    per_row = masked_mean(x, mask, dim=1)  # (B,)
    assert per_row.shape == (3,)
    assert per_row[0].item() == pytest.approx(float(x[0, :3].sum()) / 3, abs=1e-12)
    assert math.isnan(per_row[1].item())  # the mean of nothing
    assert per_row[2].item() == pytest.approx(float(x[2, 0]), abs=1e-12)


def test_masked_mean_of_nothing_is_nan_and_shapes_must_match():
    x = rand(2, 3)
    assert math.isnan(masked_mean(x, torch.zeros(2, 3)).item())  # no real token: the mean of nothing
    with pytest.raises(ValueError, match="shape mismatch"):
        masked_mean(x, torch.ones(2, 1))  # would broadcast


def test_check_response_batch_accepts_a_good_batch_and_names_each_fault():
    mask = mask_from_lengths(LENGTHS)
    check_response_batch(mask, logprobs=rand(4, T), values=rand(4, T))
    check_response_batch(mask.bool())
    with pytest.raises(ValueError, match="only 0 and 1"):
        check_response_batch(mask * 0.5)
    with pytest.raises(ValueError, match="right-padded"):
        check_response_batch(torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="at least one real"):
        check_response_batch(mask_from_lengths([2, 0], 3))
    with pytest.raises(ValueError, match="no broadcasting"):
        check_response_batch(mask, logprobs=rand(4, 1))
    with pytest.raises(ValueError, match="no broadcasting"):
        check_response_batch(torch.ones(4))  # not (B, T)


def test_masked_var_matches_manual_selection():
    mask = mask_from_lengths(LENGTHS)
    x = rand(4, T, seed=1)
    vals = real_values(x, mask)
    n, mu = len(vals), sum(vals) / len(vals)
    ss = sum((v - mu) ** 2 for v in vals)
    assert masked_var(x, mask).item() == pytest.approx(ss / (n - 1), abs=1e-12)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(ss / n, abs=1e-12)
    with pytest.raises(ValueError):
        masked_var(x, mask_from_lengths([1, 0, 0, 0]))  # one token: no unbiased variance


def test_masked_whiten_matches_manual_and_has_mean_0_var_1():
    mask = mask_from_lengths(LENGTHS)
    x = 3.0 + 2.0 * rand(4, T, seed=2)
    vals = real_values(x, mask)
    n, mu = len(vals), sum(vals) / len(vals)
    var = sum((v - mu) ** 2 for v in vals) / (n - 1)

    w = masked_whiten(x, mask)
    for b in range(4):
        for t in range(T):
            expected = (float(x[b, t]) - mu) / math.sqrt(var + 1e-8) if mask[b, t] == 1 else 0.0
            assert w[b, t].item() == pytest.approx(expected, abs=1e-12)
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert masked_var(w, mask).item() == pytest.approx(1.0, abs=1e-6)

    kept = masked_whiten(x, mask, shift_mean=False)
    assert masked_mean(kept, mask).item() == pytest.approx(mu, abs=1e-12)
    assert masked_var(kept, mask).item() == pytest.approx(1.0, abs=1e-6)
    assert (kept[mask == 0] == 0).all()

    biased = masked_whiten(x, mask, unbiased=False)
    assert masked_var(biased, mask, unbiased=False).item() == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------------------------------
# log-probabilities and entropy


def test_logprobs_and_entropy_match_a_loop():
    B, Tn, V = 2, 3, 5
    logits = rand(B, Tn, V, seed=3) * 3
    labels = torch.tensor([[0, 4, 2], [1, 1, 3]])
    lp = logprobs_from_logits(logits, labels)
    ent = entropy_from_logits(logits)
    assert lp.shape == ent.shape == (B, Tn)
    for b in range(B):
        for t in range(Tn):
            z = [float(logits[b, t, v]) for v in range(V)]
            log_z = math.log(sum(math.exp(zi) for zi in z))
            assert lp[b, t].item() == pytest.approx(z[int(labels[b, t])] - log_z, abs=1e-12)
            p = [math.exp(zi - log_z) for zi in z]
            assert ent[b, t].item() == pytest.approx(-sum(pi * math.log(pi) for pi in p), abs=1e-12)
    # uniform logits: entropy log V; large logits stay finite
    assert entropy_from_logits(torch.zeros(1, 1, V, dtype=DT)).item() == pytest.approx(math.log(V))
    big = torch.tensor([[[1000.0, 0.0, -1000.0]]], dtype=DT)
    assert logprobs_from_logits(big, torch.tensor([[0]])).item() == pytest.approx(0.0, abs=1e-12)
    assert torch.isfinite(entropy_from_logits(big)).all()


def test_logprobs_upcasts_bf16():
    logits = rand(1, 2, 7, seed=4).to(torch.bfloat16)
    out = logprobs_from_logits(logits, torch.tensor([[3, 6]]))
    assert out.dtype == torch.float32


# --------------------------------------------------------------------------------------------------
# KL-penalised rewards


def test_kl_penalized_rewards_match_a_loop_and_score_lands_on_last_real_token():
    mask = mask_from_lengths(LENGTHS)
    logp, ref = rand(4, T, seed=5), rand(4, T, seed=6)
    score = torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=DT)
    beta = 0.1
    rewards, kl = kl_penalized_rewards(score, logp, ref, mask, beta)
    assert rewards.shape == kl.shape == (4, T)
    for b, n in enumerate(LENGTHS):
        for t in range(T):
            if t < n:
                k = float(logp[b, t]) - float(ref[b, t])
                expected = -beta * k + (float(score[b]) if t == n - 1 else 0.0)
                assert kl[b, t].item() == pytest.approx(k, abs=1e-12)
                assert rewards[b, t].item() == pytest.approx(expected, abs=1e-12)
            else:
                assert rewards[b, t].item() == 0.0 and kl[b, t].item() == 0.0
    # with beta = 0 the rewards are exactly the score, at index length - 1
    r0, _ = kl_penalized_rewards(score, logp, ref, mask, 0.0)
    for b, n in enumerate(LENGTHS):
        assert r0[b].nonzero().flatten().tolist() == [n - 1] and r0[b, n - 1].item() == float(score[b])
    # sequence_kl: the whole-response KL per row
    skl = sequence_kl(kl, mask)
    for b, n in enumerate(LENGTHS):
        assert skl[b].item() == pytest.approx(sum(float(logp[b, t] - ref[b, t]) for t in range(n)), abs=1e-12)


# --------------------------------------------------------------------------------------------------
# GAE


def gae_loop(rewards: list[float], values: list[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """GAE for ONE row of real tokens only, written plainly."""
    n = len(rewards)
    adv = [0.0] * n
    next_adv = 0.0
    for t in reversed(range(n)):
        next_value = values[t + 1] if t + 1 < n else 0.0  # terminal after the last token
        delta = rewards[t] + gamma * next_value - values[t]
        adv[t] = delta + gamma * lam * next_adv
        next_adv = adv[t]
    return adv, [a + v for a, v in zip(adv, values)]


@pytest.mark.parametrize("gamma,lam", [(0.9, 0.8), (0.99, 0.95), (1.0, 0.95), (0.5, 0.0)])
def test_gae_matches_a_per_row_loop_for_rows_of_different_lengths(gamma, lam):
    lengths = LENGTHS + [0]
    mask = mask_from_lengths(lengths)
    rewards, values = rand(5, T, seed=7), rand(5, T, seed=8)
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for b, n in enumerate(lengths):
        r_row = [float(rewards[b, t]) for t in range(n)]
        v_row = [float(values[b, t]) for t in range(n)]
        exp_adv, exp_ret = gae_loop(r_row, v_row, gamma, lam)
        for t in range(T):
            assert adv[b, t].item() == pytest.approx(exp_adv[t] if t < n else 0.0, abs=1e-12)
            assert ret[b, t].item() == pytest.approx(exp_ret[t] if t < n else 0.0, abs=1e-12)


def test_gae_hand_computed_three_token_example():
    # r = [0, 0, 1], V = [0.5, 0.6, 0.7], gamma = 0.9, lam = 0.8, then 2 padded positions.
    #   t=2: delta = 1 + 0.9*0   - 0.7 = 0.3    A2 = 0.3
    #   t=1: delta = 0 + 0.9*0.7 - 0.6 = 0.03   A1 = 0.03 + 0.72*0.3   = 0.246
    #   t=0: delta = 0 + 0.9*0.6 - 0.5 = 0.04   A0 = 0.04 + 0.72*0.246 = 0.21712
    #   returns = A + V = [0.71712, 0.846, 1.0]
    mask = mask_from_lengths([3])
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]], dtype=DT)
    values = torch.tensor([[0.5, 0.6, 0.7, 0.0, 0.0]], dtype=DT)
    adv, ret = gae(with_garbage(rewards, mask), with_garbage(values, mask, seed=1), mask, 0.9, 0.8)
    assert adv[0].tolist() == pytest.approx([0.21712, 0.246, 0.3, 0.0, 0.0], abs=1e-12)
    assert ret[0].tolist() == pytest.approx([0.71712, 0.846, 1.0, 0.0, 0.0], abs=1e-12)


def test_gae_with_gamma_lam_1_is_reward_to_go_minus_value():
    mask = mask_from_lengths(LENGTHS)
    rewards, values = rand(4, T, seed=9), rand(4, T, seed=10)
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    for b, n in enumerate(LENGTHS):
        for t in range(n):
            to_go = sum(float(rewards[b, k]) for k in range(t, n))
            assert adv[b, t].item() == pytest.approx(to_go - float(values[b, t]), abs=1e-12)
            assert ret[b, t].item() == pytest.approx(to_go, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# PPO losses


def test_ppo_policy_loss_matches_a_loop():
    mask = mask_from_lengths(LENGTHS)
    logp, old, adv = rand(4, T, seed=11) * 0.3, rand(4, T, seed=12) * 0.3, rand(4, T, seed=13)
    eps = 0.2
    loss, stats = ppo_policy_loss(logp, old, adv, mask, eps)
    terms, clipped, sq, k3, ratios = [], [], [], [], []
    for b, n in enumerate(LENGTHS):
        for t in range(n):
            d = float(logp[b, t]) - float(old[b, t])
            rho, a = math.exp(d), float(adv[b, t])
            l1, l2 = -a * rho, -a * min(max(rho, 1 - eps), 1 + eps)
            terms.append(max(l1, l2))
            clipped.append(1.0 if l2 > l1 else 0.0)
            sq.append(d * d)
            k3.append((rho - 1) - d)
            ratios.append(rho)
    n = len(terms)
    assert loss.item() == pytest.approx(sum(terms) / n, abs=1e-12)
    assert stats["clip_frac"].item() == pytest.approx(sum(clipped) / n, abs=1e-12)
    assert 0 < stats["clip_frac"].item() < 1  # the random case exercises both branches
    assert stats["approx_kl"].item() == pytest.approx(0.5 * sum(sq) / n, abs=1e-12)
    assert stats["approx_kl_k3"].item() == pytest.approx(sum(k3) / n, abs=1e-12)
    assert stats["ratio_mean"].item() == pytest.approx(sum(ratios) / n, abs=1e-12)


def test_ppo_policy_loss_hand_case_clip_frac_and_gradients():
    # eps = 0.2, five real tokens and one padded one:
    #   A=+1 rho=1.5: max(-1.5, -1.2) = -1.2  clipped (no grad)
    #   A=+1 rho=0.5: max(-0.5, -0.8) = -0.5  unclipped  d/dlogp = -A*rho/5 = -0.1
    #   A=-1 rho=1.5: max( 1.5,  1.2) =  1.5  unclipped  d/dlogp = 0.3
    #   A=-1 rho=0.5: max( 0.5,  0.8) =  0.8  clipped (no grad)
    #   A=+1 rho=1.1: inside the clip range  -1.1  d/dlogp = -0.22
    #   loss = (-1.2 - 0.5 + 1.5 + 0.8 - 1.1) / 5 = -0.1, clip_frac = 2/5
    rho = torch.tensor([[1.5, 0.5, 1.5, 0.5, 1.1, 7.0]], dtype=DT)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 1.0, 99.0]], dtype=DT)
    mask = mask_from_lengths([5], 6)
    old = torch.full((1, 6), -2.0, dtype=DT)
    logp = (old + rho.log()).requires_grad_(True)
    loss, stats = ppo_policy_loss(logp, old, adv, mask, 0.2)
    assert loss.item() == pytest.approx(-0.1, abs=1e-12)
    assert stats["clip_frac"].item() == pytest.approx(0.4, abs=1e-12)
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([0.0, -0.1, 0.3, 0.0, -0.22, 0.0], abs=1e-12)
    assert logp.grad[0, 0].item() == 0.0  # A > 0 and rho > 1 + eps: exactly zero


def test_ppo_value_loss_matches_a_loop():
    mask = mask_from_lengths(LENGTHS)
    v, v_old, ret = rand(4, T, seed=14), rand(4, T, seed=15), rand(4, T, seed=16)
    eps = 0.2
    loss, stats = ppo_value_loss(v, v_old, ret, mask, eps)
    terms, clipped = [], []
    for b, n in enumerate(LENGTHS):
        for t in range(n):
            vo, vv, r = float(v_old[b, t]), float(v[b, t]), float(ret[b, t])
            v_clip = vo + min(max(vv - vo, -eps), eps)
            e1, e2 = (vv - r) ** 2, (v_clip - r) ** 2
            terms.append(max(e1, e2))
            clipped.append(1.0 if e2 > e1 else 0.0)
    n = len(terms)
    assert loss.item() == pytest.approx(0.5 * sum(terms) / n, abs=1e-12)
    assert stats["value_clip_frac"].item() == pytest.approx(sum(clipped) / n, abs=1e-12)
    assert 0 < stats["value_clip_frac"].item() < 1


def test_ppo_value_loss_hand_case():
    # V_old = 0, R = 1, eps = 0.2.  V = 0.5: V_clip = 0.2, max(0.25, 0.64) = 0.64 (clipped, no grad)
    #                               V = 1.5: V_clip = 0.2, max(0.25, 0.64) = 0.64 (clipped, no grad)
    #                               V = 0.1: V_clip = 0.1, 0.81 both (not counted as clipped)
    # loss = 0.5 * (0.64 + 0.64 + 0.81) / 3
    v = torch.tensor([[0.5, 1.5, 0.1]], dtype=DT, requires_grad=True)
    loss, stats = ppo_value_loss(v, torch.zeros(1, 3, dtype=DT), torch.ones(1, 3, dtype=DT), torch.ones(1, 3), 0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.64 + 0.81) / 3, abs=1e-12)
    assert stats["value_clip_frac"].item() == pytest.approx(2 / 3, abs=1e-12)
    loss.backward()
    # d/dV of 0.5 * (V - R)^2 / 3 at V = 0.1 is (0.1 - 1) / 3
    assert v.grad[0].tolist() == pytest.approx([0.0, 0.0, -0.3], abs=1e-12)


def test_explained_variance():
    mask = mask_from_lengths(LENGTHS)
    ret = rand(4, T, seed=17)
    assert explained_variance(ret, ret, mask) == pytest.approx(1.0, abs=1e-12)
    assert explained_variance(torch.zeros(4, T, dtype=DT), ret, mask) == pytest.approx(0.0, abs=1e-12)
    v = rand(4, T, seed=18)
    r_vals, v_vals = real_values(ret, mask), real_values(v, mask)
    n = len(r_vals)

    def var(xs):
        mu = sum(xs) / len(xs)
        return sum((x - mu) ** 2 for x in xs) / len(xs)

    expected = 1 - var([r - vv for r, vv in zip(r_vals, v_vals)]) / var(r_vals)
    assert n == sum(LENGTHS)
    assert explained_variance(v, ret, mask) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(explained_variance(v, torch.ones(4, T, dtype=DT), mask))


# --------------------------------------------------------------------------------------------------
# padding never matters


def _all_outputs(mask, logp, old, ref, adv, values, old_values, returns, rewards):
    """Every per-token function's outputs, flattened into one list of tensors."""
    score = torch.tensor([1.0, -1.0, 0.5, 2.0], dtype=DT)
    r, kl = kl_penalized_rewards(score, logp, ref, mask, 0.1)
    a, ret = gae(rewards, values, mask, 0.95, 0.9)
    pl, ps = ppo_policy_loss(logp, old, adv, mask, 0.2)
    vl, vs = ppo_value_loss(values, old_values, returns, mask, 0.2)
    outs = [masked_mean(adv, mask), masked_mean(adv, mask, dim=1), masked_var(adv, mask), masked_whiten(adv, mask),
            masked_whiten(adv, mask, shift_mean=False), r, kl, sequence_kl(kl, mask), a, ret, pl, vl,
            torch.tensor(explained_variance(values, returns, mask), dtype=DT)]
    return outs + list(ps.values()) + list(vs.values())


def test_padding_values_never_affect_results_or_gradients():
    mask = mask_from_lengths(LENGTHS)
    names = ["logp", "old", "ref", "adv", "values", "old_values", "returns", "rewards"]
    clean = {k: torch.where(mask.bool(), rand(4, T, seed=20 + i), 0.0) for i, k in enumerate(names)}
    dirty = {k: with_garbage(x, mask, seed=i) for i, (k, x) in enumerate(clean.items())}
    for k in ("logp", "values"):
        clean[k].requires_grad_(True)
        dirty[k].requires_grad_(True)

    outs_clean, outs_dirty = _all_outputs(mask, **clean), _all_outputs(mask, **dirty)
    for oc, od in zip(outs_clean, outs_dirty):
        assert torch.equal(oc, od), (oc, od)

    # gradients of the two losses: equal on real tokens, exactly 0 on padding
    for outs in (outs_clean, outs_dirty):
        policy_loss, value_loss = outs[10], outs[11]
        (policy_loss + value_loss).backward()
    for k in ("logp", "values"):
        assert torch.equal(clean[k].grad, dirty[k].grad)
        assert (dirty[k].grad[mask == 0] == 0).all()
        assert torch.isfinite(dirty[k].grad).all()


def test_losses_reject_mismatched_shapes():
    x = rand(2, 3)
    with pytest.raises(ValueError, match="shape mismatch"):
        ppo_policy_loss(x, x, rand(2, 1), torch.ones(2, 3), 0.2)
    with pytest.raises(ValueError, match="shape mismatch"):
        ppo_value_loss(x, x, x, torch.ones(3), 0.2)
    with pytest.raises(ValueError, match="shape mismatch"):
        gae(x, rand(2, 4), torch.ones(2, 3), 1.0, 0.95)
    with pytest.raises(ValueError, match="shape mismatch"):
        bradley_terry_loss(rand(3), rand(1))


# --------------------------------------------------------------------------------------------------
# reward-model losses


def test_bradley_terry_loss_hand_values_and_gradient_sign():
    chosen = torch.tensor([2.0], dtype=DT, requires_grad=True)
    rejected = torch.tensor([0.0], dtype=DT, requires_grad=True)
    loss = bradley_terry_loss(chosen, rejected)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-12)
    assert loss.item() == pytest.approx(0.1269280110429725, abs=1e-12)
    loss.backward()
    # d/d chosen = -sigmoid(-2) = -0.1192..., d/d rejected = +0.1192...
    assert chosen.grad.item() == pytest.approx(-1 / (1 + math.exp(2)), abs=1e-12)
    assert chosen.grad.item() < 0 < rejected.grad.item()
    # the mean over pairs, and stability for huge margins
    c, r = torch.tensor([2.0, 0.0, -1000.0], dtype=DT), torch.tensor([0.0, 0.0, 1000.0], dtype=DT)
    expected = (math.log(1 + math.exp(-2)) + math.log(2) + 2000.0) / 3
    assert bradley_terry_loss(c, r).item() == pytest.approx(expected, abs=1e-9)


def test_bradley_terry_accuracy():
    c = torch.tensor([2.0, 0.0, -1.0, 3.0])
    r = torch.tensor([1.0, 0.0, 1.0, -3.0])
    assert bradley_terry_accuracy(c, r).item() == pytest.approx((1 + 0.5 + 0 + 1) / 4)


def test_pointwise_bce_loss_matches_formula():
    z = torch.tensor([2.0, -1.0, 0.0, 30.0], dtype=DT)
    y = torch.tensor([1, 0, 1, 0])
    # -log sigma(z) = log(1 + e^-z);  -log(1 - sigma(z)) = log(1 + e^z)
    terms = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(-1.0)), math.log(2.0), 30.0 + math.log1p(math.exp(-30.0))]
    assert pointwise_bce_loss(z, y).item() == pytest.approx(sum(terms) / 4, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# beyond PPO: DPO, GRPO, RLOO (checked against loops and hand computations)


def test_dpo_loss_matches_a_loop_and_its_gradient_pushes_the_right_way():
    pc, pr, rc, rr = (rand(5, seed=s) for s in (40, 41, 42, 43))
    beta = 0.3
    margins = [beta * ((float(pc[i]) - float(rc[i])) - (float(pr[i]) - float(rr[i]))) for i in range(5)]
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    loss, stats = dpo_loss(pc, pr, rc, rr, beta)
    assert loss.item() == pytest.approx(sum(math.log1p(math.exp(-m)) for m in margins) / 5, abs=1e-12)
    assert stats["margin"].item() == pytest.approx(sum(margins) / 5, abs=1e-12)
    assert stats["accuracy"].item() == pytest.approx(sum(m > 0 for m in margins) / 5)
    assert stats["reward_chosen"].item() == pytest.approx(beta * float((pc.detach() - rc).mean()), abs=1e-12)
    loss.backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # raise log pi(chosen), lower log pi(rejected)
    # swapping chosen and rejected is not the same loss (the wiring matters)
    swapped, _ = dpo_loss(pr.detach(), pc.detach(), rr, rc, beta)
    assert abs(swapped.item() - loss.item()) > 1e-3


def test_dpo_hand_case_and_reference_equal_policy_gives_log_2():
    z = torch.zeros(3, dtype=DT)
    loss, stats = dpo_loss(z, z, z, z, 0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-12) and stats["accuracy"].item() == 0.0
    # one pair: policy favours chosen by 2 nats relative to the reference, beta 0.5 -> -log sigma(1)
    loss, _ = dpo_loss(torch.tensor([-1.0], dtype=DT), torch.tensor([-3.0], dtype=DT),
                       torch.tensor([-2.0], dtype=DT), torch.tensor([-2.0], dtype=DT), 0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-12)


def test_group_and_rloo_advantages_match_loops():
    k = 4
    scores = rand(12, seed=50)
    grpo, rloo = group_advantages(scores, k), rloo_advantages(scores, k)
    for g in range(3):
        vals = [float(scores[g * k + i]) for i in range(k)]
        mean = sum(vals) / k
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (k - 1))
        for i in range(k):
            assert grpo[g * k + i].item() == pytest.approx((vals[i] - mean) / (std + 1e-4), abs=1e-12)
            others = [v for j, v in enumerate(vals) if j != i]
            assert rloo[g * k + i].item() == pytest.approx(vals[i] - sum(others) / (k - 1), abs=1e-12)


def test_group_advantages_hand_cases_and_bad_shapes():
    # a group that scored alike teaches nothing; groups do not mix
    a = group_advantages(torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=DT), 2)
    assert a[:2].tolist() == [0.0, 0.0] and a[2].item() < 0 < a[3].item()
    assert rloo_advantages(torch.tensor([1.0, 0.0, 0.5], dtype=DT), 3).tolist() == pytest.approx([0.75, -0.75, 0.0])
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.zeros(4), 1)


def test_k3_kl_by_hand_non_negative_zero_on_padding_and_its_gradient():
    from minirlaif.losses import k3_kl

    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -4.0, -9.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -2.0, 0.0], [-0.1, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    got = k3_kl(logp, ref, mask)
    want = [[math.exp(-0.5) + 0.5 - 1, 0.0, math.exp(0.5) - 0.5 - 1], [math.exp(0.2) - 0.2 - 1, math.exp(3.0) - 3.0 - 1, 0.0]]
    assert torch.allclose(got, torch.tensor(want), atol=1e-6) and bool((got >= 0).all())
    got.sum().backward()  # d/d logp of e^(ref - logp) - (ref - logp) - 1 = 1 - e^(ref - logp): pulls logp to ref
    want_grad = [[1 - math.exp(-0.5), 0.0, 1 - math.exp(0.5)], [1 - math.exp(0.2), 1 - math.exp(3.0), 0.0]]
    assert torch.allclose(logp.grad, torch.tensor(want_grad), atol=1e-5)
