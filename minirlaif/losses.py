"""The math of RLAIF: masked statistics, KL-penalised rewards, GAE, the PPO losses, the reward-model
losses and the KL controllers. Pure functions on tensors: no model, tokenizer or data imports.

Conventions (every function):
- Per-token tensors have shape (B, T) over the RESPONSE tokens, right-padded.
- `mask` is an explicit bool or 0/1 float/int tensor of the same shape, 1 = real token, at least one
  per row. Masks are never derived from token ids here (in T5, pad == decoder_start).
- The mask is validated once, where a batch is assembled (`check_response_batch`, in ppo.rollout);
  a loss only guards shapes (nothing is silently broadcast), so a minibatch step never waits for the device.
- "masked mean" = the mean over ALL real tokens of the batch (not a mean of per-row means).
- Values at padded positions never influence a result, even if they are inf/nan garbage: every
  function replaces them by 0 before computing, so their gradient is exactly 0 too.

Symbols (Schulman et al. 2016/2017, Ziegler et al. 2019): r_t reward, V value, delta_t TD residual,
A_t advantage, gamma discount, lambda GAE parameter, epsilon clip range, beta KL coefficient,
rho_t = pi(y_t) / pi_old(y_t) the probability ratio.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# --------------------------------------------------------------------------------------------------
# the conventions, checked once where a batch is assembled (not in every loss: no device sync per minibatch)


def check_response_batch(mask: Tensor, **per_token: Tensor) -> None:
    """Raise ValueError unless `mask` is a (B, T) right-padded 0/1 mask with at least one real token per row
    and every tensor in `per_token` has its shape. The losses below assume this and do not check again."""
    shapes = {name: tuple(t.shape) for name, t in per_token.items()}
    if mask.dim() != 2 or any(s != tuple(mask.shape) for s in shapes.values()):
        raise ValueError(f"expected (B, T) tensors of the mask's shape {tuple(mask.shape)} (no broadcasting): {shapes}")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must contain only 0 and 1 (1 = real token)")
    m = mask.bool()
    if bool((m[:, 1:] & ~m[:, :-1]).any()):  # a real token after a padded one
        raise ValueError("mask must be right-padded: real tokens first, then padding")
    if bool((m.sum(1) == 0).any()):
        raise ValueError("every row needs at least one real response token (the score lands on the last one)")


def _same_shape(*tensors: Tensor) -> None:
    """Shapes only (no device sync): the one guard every loss keeps, since torch.where would broadcast."""
    if len({tuple(t.shape) for t in tensors}) != 1:
        raise ValueError(f"shape mismatch (no broadcasting allowed): {[tuple(t.shape) for t in tensors]}")


def _zero_pad(x: Tensor, m: Tensor) -> Tensor:
    """x with 0 where the bool mask m is False: garbage there (even inf/nan) cannot leak, and its grad is 0."""
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))


# --------------------------------------------------------------------------------------------------
# masked statistics


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum_{b,t} m_bt x_bt / sum_{b,t} m_bt: one scalar over ALL real tokens of the batch (dim=None), or
    along `dim` only (dim=1: per row, shape (B,)). No real token gives nan, the mean of nothing."""
    _same_shape(x, mask)
    m = mask.bool()
    if dim is None:
        return _zero_pad(x, m).sum() / m.sum().to(x.dtype)
    return _zero_pad(x, m).sum(dim) / m.sum(dim).to(x.dtype)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Var = sum m (x - mu)^2 / (n - 1)  (unbiased, TRL's choice)  or  / n  (biased, N-details' choice),
    mu = masked_mean(x), n = the number of real tokens. A scalar."""
    _same_shape(x, mask)
    m = mask.bool()
    n = int(m.sum())  # once per batch (whitening, statistics), never per minibatch
    if n < (2 if unbiased else 1):
        raise ValueError(f"masked_var: {n} real token(s) is too few for the {'un' if unbiased else ''}biased variance")
    return (_zero_pad(x - masked_mean(x, m), m) ** 2).sum() / (n - 1 if unbiased else n)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, unbiased: bool = True) -> Tensor:
    """(x - mu) / sqrt(Var + 1e-8) over ALL real tokens, 0 at padding; shift_mean=False adds mu back
    (for rewards; advantages are whitened with the mean removed). `unbiased` as in masked_var."""
    m = mask.bool()
    return whiten(x, m, masked_mean(x, m), masked_var(x, m, unbiased=unbiased), shift_mean)


def whiten(x: Tensor, mask: Tensor, mu: Tensor, var: Tensor, shift_mean: bool = True) -> Tensor:
    """(x - mu) / sqrt(var + 1e-8), 0 at padding, given the moments (distributed.py passes the global batch's)."""
    out = (x - mu) * torch.rsqrt(var + 1e-8)
    return _zero_pad(out if shift_mean else out + mu, mask.bool())  # (B, T)


# --------------------------------------------------------------------------------------------------
# per-token log-probabilities and entropy


def logprobs_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """log pi(y_t) = log softmax(z_t)[y_t] = z_t[y_t] - logsumexp_v z_t[v].

    logits (B, T, V), labels (B, T) int64 -> (B, T). Computed as gather - logsumexp (same value as
    log_softmax then gather, without a (B, T, V) log-prob tensor). fp16/bf16 logits are upcast to
    float32. Labels at padded positions must still be valid ids (e.g. the pad id, not -100); mask the
    result afterwards. Divide the logits by the sampling temperature BEFORE calling this.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        shapes = (tuple(logits.shape), tuple(labels.shape))
        raise ValueError(f"expected logits (B, T, V) and labels (B, T), got {shapes}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    picked = torch.gather(logits, dim=-1, index=labels.long().unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked - torch.logsumexp(logits, dim=-1)  # (B, T)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """H_t = -sum_v pi(v) log pi(v), pi = softmax(z_t). logits (B, T, V) -> (B, T). Logits must be finite."""
    if logits.dim() != 3:
        raise ValueError(f"expected logits (B, T, V), got {tuple(logits.shape)}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)  # (B, T, V)
    return -(logp.exp() * logp).sum(dim=-1)  # (B, T)


# --------------------------------------------------------------------------------------------------
# rewards and advantages (rollout data: mask checked by check_response_batch)


def kl_penalized_rewards(
    score: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    """Per-token rewards with a KL penalty (Ziegler et al. 2019; TRL `compute_rewards`):

        kl_t = log pi(y_t) - log pi_ref(y_t)                    (the k1 estimator, per token)
        r_t  = -beta * kl_t + [t == last real token] * score

    score (B,), logprobs / ref_logprobs / mask (B, T) -> (rewards (B, T), kl (B, T)), 0 at padding.
    """
    _same_shape(logprobs, ref_logprobs, mask)
    m = mask.bool()
    kl = _zero_pad(logprobs - ref_logprobs, m)  # (B, T)
    last = (m.sum(dim=1) - 1).unsqueeze(1)  # (B, 1) index of the last real token
    score_at_last = torch.zeros_like(kl).scatter(1, last, score.to(kl.dtype).unsqueeze(1))  # (B, T)
    return -beta * kl + score_at_last, kl


def k3_kl(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Per-token KL(pi || pi_ref) by the k3 estimator (Schulman 2020), GRPO's KL term (Shao et al. 2024):

        kl_t = exp(log pi_ref(y_t) - log pi(y_t)) - (log pi_ref(y_t) - log pi(y_t)) - 1      (>= 0)

    Unbiased for y_t ~ pi, never negative (unlike k1 = log pi - log pi_ref), and differentiable in log pi:
    GRPO puts it in the loss, not in the reward. (B, T) inputs -> (B, T), 0 at padding."""
    _same_shape(logprobs, ref_logprobs, mask)
    d = ref_logprobs - logprobs  # (B, T)
    return _zero_pad(torch.exp(d) - d - 1.0, mask.bool())


def sequence_kl(kl: Tensor, mask: Tensor) -> Tensor:
    """The KL of each whole response, sum_t m_t kl_t (B,): its batch mean is what the adaptive controller's
    target (e.g. 6 nats) refers to, as in Ziegler et al. and TRL's `objective/kl`."""
    _same_shape(kl, mask)
    return _zero_pad(kl, mask.bool()).sum(dim=1)  # (B,)


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), backwards over each response:

        delta_t = r_t + gamma * V_{t+1} - V_t          (V after the last real token = 0: terminal)
        A_t     = delta_t + gamma * lambda * A_{t+1}    (A after the last real token = 0)
        R_t     = A_t + V_t                             (the value targets, "returns")

    rewards, values, mask (B, T), right-padded -> (A (B, T), R (B, T)), 0 at padding, A not whitened.
    """
    _same_shape(rewards, values, mask)
    m = mask.bool()
    r, v = _zero_pad(rewards, m), _zero_pad(values, m)  # (B, T)
    advantages = torch.zeros_like(r)  # (B, T)
    next_value = next_advantage = torch.zeros_like(r[:, 0])  # (B,) V_{t+1}, A_{t+1}: 0 after the end
    for t in reversed(range(r.shape[1])):
        delta = r[:, t] + gamma * next_value - v[:, t]  # (B,)
        advantages[:, t] = _zero_pad(delta + gamma * lam * next_advantage, m[:, t])  # A = 0 at padding
        next_value, next_advantage = v[:, t], advantages[:, t]
    return advantages, _zero_pad(advantages + v, m)


# --------------------------------------------------------------------------------------------------
# PPO losses (one minibatch: shapes guarded, the mask was checked with its batch)


def ppo_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped surrogate (Schulman et al. 2017), as a loss to minimise:

        rho_t = exp(log pi(y_t) - log pi_old(y_t))
        L     = masked_mean( max(-A_t rho_t, -A_t clip(rho_t, 1 - epsilon, 1 + epsilon)) )

    (B, T) each -> (loss, stats). Stats, all of KL(pi_old || pi) on tokens sampled from pi_old:
    clip_frac (tokens where clipping is active, so no gradient; TRL's `clipfrac`), approx_kl (k2,
    0.5 (log rho)^2; TRL), approx_kl_k3 ((rho - 1) - log rho; CleanRL), policy_kl (k1, -log rho), ratio_mean.
    """
    _same_shape(logprobs, old_logprobs, advantages, mask)
    m = mask.bool()
    log_ratio = _zero_pad(logprobs, m) - _zero_pad(old_logprobs, m)  # (B, T), 0 at padding
    ratio, adv = torch.exp(log_ratio), _zero_pad(advantages, m)  # (B, T)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), m)
    with torch.no_grad():
        stats = {"clip_frac": masked_mean((clipped > unclipped).to(logprobs.dtype), m),
                 "approx_kl": 0.5 * masked_mean(log_ratio**2, m),
                 "approx_kl_k3": masked_mean((ratio - 1.0) - log_ratio, m),
                 "policy_kl": masked_mean(-log_ratio, m), "ratio_mean": masked_mean(ratio, m)}
    return loss, stats


def ppo_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_eps: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped value loss (baselines PPO2, TRL):

        V_clip = V_old + clip(V - V_old, -epsilon, epsilon)
        L_V    = 0.5 * masked_mean( max((V - R)^2, (V_clip - R)^2) )

    (B, T) each -> (loss, stats): value_clip_frac (tokens with no gradient; TRL's `vf_clipfrac`) and
    value_mse (the unclipped masked_mean((V - R)^2)).
    """
    _same_shape(values, old_values, returns, mask)
    m = mask.bool()
    v, v_old, ret = _zero_pad(values, m), _zero_pad(old_values, m), _zero_pad(returns, m)  # (B, T)
    v_clip = v_old + torch.clamp(v - v_old, -clip_eps, clip_eps)
    err_unclipped, err_clipped = (v - ret) ** 2, (v_clip - ret) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err_unclipped, err_clipped), m)
    with torch.no_grad():
        stats = {"value_clip_frac": masked_mean((err_clipped > err_unclipped).to(values.dtype), m),
                 "value_mse": masked_mean(err_unclipped, m)}
    return loss, stats


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """1 - Var(R - V) / Var(R) over real tokens (1 = perfect, 0 = no better than a constant); nan if
    Var(R) = 0. Both variances biased: the normaliser cancels."""
    _same_shape(values, returns, mask)
    m = mask.bool()
    with torch.no_grad():
        var_returns = float(masked_var(returns, m, unbiased=False))
        if var_returns == 0.0:
            return math.nan
        var_residual = float(masked_var(_zero_pad(returns, m) - _zero_pad(values, m), m, unbiased=False))
    return 1.0 - var_residual / var_returns


# --------------------------------------------------------------------------------------------------
# reward-model losses: chosen, rejected, logits, labels are (N,)


def bradley_terry_loss(chosen: Tensor, rejected: Tensor) -> Tensor:
    """mean over pairs of -log sigma(r_chosen - r_rejected); logsigmoid keeps it finite for any margin."""
    _same_shape(chosen, rejected)
    return -F.logsigmoid(chosen - rejected).mean()


def bradley_terry_accuracy(chosen: Tensor, rejected: Tensor) -> Tensor:
    """mean of 1[r_chosen > r_rejected], a tie counting 1/2 (so a constant reward model scores 0.5)."""
    _same_shape(chosen, rejected)
    with torch.no_grad():
        return ((chosen > rejected).float() + 0.5 * (chosen == rejected).float()).mean()


def pointwise_bce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """mean of -[y log sigma(z) + (1 - y) log(1 - sigma(z))], labels y in {0, 1} (or soft, in [0, 1])."""
    _same_shape(logits, labels)
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


# --------------------------------------------------------------------------------------------------
# beyond PPO: the same preferences and scores used without a critic (issue 17)


def dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor,
             ref_rejected_logps: Tensor, beta: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Direct preference optimisation (Rafailov et al. 2023): the Bradley-Terry loss of the implicit reward
    r(x, y) = beta (log pi(y|x) - log pi_ref(y|x)), with no reward model and no sampling:

        L = mean over pairs of -log sigma( beta [(log pi(y_c) - log pi_ref(y_c)) - (log pi(y_r) - log pi_ref(y_r))] )

    Inputs (N,): each response's summed log-probs under the policy (with grad) and the frozen reference.
    Stats (detached): reward_chosen / reward_rejected (mean implicit rewards), accuracy (pairs where the
    chosen one's implicit reward is higher), margin (mean reward_chosen - reward_rejected).
    """
    _same_shape(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    reward_chosen = beta * (policy_chosen_logps - ref_chosen_logps)  # (N,)
    reward_rejected = beta * (policy_rejected_logps - ref_rejected_logps)  # (N,)
    loss = -F.logsigmoid(reward_chosen - reward_rejected).mean()
    with torch.no_grad():
        stats = {"reward_chosen": reward_chosen.mean(), "reward_rejected": reward_rejected.mean(),
                 "accuracy": (reward_chosen > reward_rejected).float().mean(),
                 "margin": (reward_chosen - reward_rejected).mean()}
    return loss, stats


def _groups(scores: Tensor, group_size: int) -> Tensor:
    """(B,) scores in consecutive groups of `group_size` (the k samples of one prompt) -> (B / k, k)."""
    if scores.dim() != 1 or group_size < 1 or scores.shape[0] % group_size:
        raise ValueError(f"expected scores (B,) with B a multiple of group_size {group_size}, got {tuple(scores.shape)}")
    return scores.view(-1, group_size)


def group_advantages(scores: Tensor, group_size: int, eps: float = 1e-4) -> Tensor:
    """GRPO (Shao et al. 2024): each sample's score against the other samples of its prompt, no critic:

        A_i = (r_i - mean_g(r)) / (std_g(r) + eps)        (std: unbiased, over the k samples of group g)

    scores (B,) ordered in consecutive groups of k -> A (B,). A group whose k samples scored alike gets
    A = 0 (nothing to learn from it). One advantage per response: every token of it shares it."""
    g = _groups(scores, group_size)  # (B / k, k)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + eps)).reshape(-1)


def rloo_advantages(scores: Tensor, group_size: int) -> Tensor:
    """RLOO (Ahmadian et al. 2024): REINFORCE with the leave-one-out mean of the other k - 1 samples of the
    same prompt as the baseline, no critic:

        A_i = r_i - 1 / (k - 1) * sum_{j != i} r_j         (= k / (k - 1) * (r_i - mean_g(r)))

    scores (B,) ordered in consecutive groups of k >= 2 -> A (B,)."""
    if group_size < 2:
        raise ValueError(f"RLOO needs at least 2 samples per prompt, got group_size {group_size}")
    g = _groups(scores, group_size)  # (B / k, k)
    return (g - (g.sum(1, keepdim=True) - g) / (group_size - 1)).reshape(-1)
