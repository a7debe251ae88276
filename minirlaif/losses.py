"""The math of RLAIF: masked statistics, KL-penalised rewards, GAE, the PPO losses, the reward-model
losses and the KL controllers. Pure functions on tensors: no model, tokenizer or data imports.

Conventions (every function):
- Per-token tensors have shape (B, T) over the RESPONSE tokens, right-padded.
- `mask` is an explicit bool or 0/1 float/int tensor of the same shape, 1 = real token. Masks are
  never derived from token ids here (in T5, pad == decoder_start).
- "masked mean" = the mean over ALL real tokens of the batch (not a mean of per-row means).
- Values at padded positions never influence a result, even if they are inf/nan garbage: every
  function replaces them by 0 before computing, so their gradient is exactly 0 too.
- Shapes are checked; nothing is silently broadcast.

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
# shape and mask checks


def _check_same_shape(**tensors: Tensor) -> None:
    """Raise ValueError unless all the named tensors have the same shape (no broadcasting)."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"shape mismatch (no broadcasting allowed): {shapes}")


def _as_bool_mask(mask: Tensor, like: Tensor) -> Tensor:
    """The mask as a bool tensor of `like`'s shape; a float/int mask must hold only 0 and 1."""
    _check_same_shape(x=like, mask=mask)
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must contain only 0 and 1 (1 = real token)")
    return mask != 0


def _check_right_padded(mask: Tensor) -> None:
    """Raise ValueError unless every row of a (B, T) bool mask is 1...1 0...0."""
    if mask.dim() != 2:
        raise ValueError(f"expected a (B, T) mask, got shape {tuple(mask.shape)}")
    if bool((mask[:, 1:] & ~mask[:, :-1]).any()):  # a real token after a padded one
        raise ValueError("mask must be right-padded: real tokens first, then padding")


def _zero_padding(x: Tensor, mask: Tensor) -> Tensor:
    """x with padded positions replaced by 0 (garbage there, even inf/nan, cannot leak; grad there = 0)."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


# --------------------------------------------------------------------------------------------------
# masked statistics


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x over real tokens: sum_{b,t} m_bt x_bt / sum_{b,t} m_bt.

    dim=None: one scalar over ALL real tokens of the batch (ValueError if there are none).
    dim=d: the mean along d only (e.g. dim=1 gives a per-row mean, shape (B,)); a slice with no real
    token gives nan (the mean of nothing).
    """
    m = _as_bool_mask(mask, x)
    total = _zero_padding(x, m).sum() if dim is None else _zero_padding(x, m).sum(dim)
    count = m.sum() if dim is None else m.sum(dim)
    if dim is None and int(count) == 0:
        raise ValueError("masked_mean: the mask has no real tokens")
    return total / count.to(x.dtype)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of x over all real tokens (a scalar).

    Var = sum m (x - mu)^2 / (n - 1)  (unbiased, TRL's choice)  or  / n  (biased, TF/N-details' choice),
    with mu = masked_mean(x) and n = number of real tokens.
    """
    m = _as_bool_mask(mask, x)
    n = int(m.sum())
    if n < (2 if unbiased else 1):
        raise ValueError(f"masked_var: {n} real token(s) is too few for the {'un' if unbiased else ''}biased variance")
    mu = masked_mean(x, m)
    centered = _zero_padding(x - mu, m)  # (B, T)
    return (centered**2).sum() / (n - 1 if unbiased else n)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, unbiased: bool = True) -> Tensor:
    """Whiten x over real tokens: (x - mu) / sqrt(Var + 1e-8); with shift_mean=False mu is added back.

    mu and Var are masked_mean / masked_var over ALL real tokens of the batch. Padded positions are
    returned as 0. Advantages are whitened with shift_mean=True; rewards (optional) with
    shift_mean=False. `unbiased` as in masked_var (TRL: True; the N-details reproduction: False).
    """
    m = _as_bool_mask(mask, x)
    mu = masked_mean(x, m)
    var = masked_var(x, m, unbiased=unbiased)
    out = (x - mu) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mu
    return _zero_padding(out, m)  # (B, T)


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
# rewards and advantages


def kl_penalized_rewards(
    score: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    """Per-token rewards with a KL penalty (Ziegler et al. 2019; TRL `compute_rewards`).

        kl_t = log pi(y_t) - log pi_ref(y_t)                    (the k1 estimator, per token)
        r_t  = -beta * kl_t + [t == last real token] * score

    score (B,), logprobs / ref_logprobs / mask (B, T) -> (rewards (B, T), kl (B, T)), both 0 at
    padding. Every row needs at least one real token (the score must land somewhere).
    For the adaptive KL controller, the KL of a batch is sequence_kl(kl, mask).mean().
    """
    _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    if logprobs.dim() != 2 or score.shape != logprobs.shape[:1]:
        shapes = (tuple(score.shape), tuple(logprobs.shape))
        raise ValueError(f"expected score (B,) and logprobs (B, T), got {shapes}")
    m = _as_bool_mask(mask, logprobs)
    _check_right_padded(m)
    lengths = m.sum(dim=1)  # (B,)
    if bool((lengths == 0).any()):
        raise ValueError("kl_penalized_rewards: every row needs at least one real response token")

    kl = _zero_padding(logprobs - ref_logprobs, m)  # (B, T)
    rewards = -beta * kl  # (B, T)
    last = (lengths - 1).unsqueeze(1)  # (B, 1) index of the last real token
    score_at_last = torch.zeros_like(rewards).scatter(1, last, score.to(rewards.dtype).unsqueeze(1))  # (B, T)
    return rewards + score_at_last, kl


def sequence_kl(kl: Tensor, mask: Tensor) -> Tensor:
    """KL of each whole response: sum_t m_t kl_t, shape (B,).

    Its batch mean is what the adaptive KL controller's target (e.g. 6 nats) refers to, as in
    Ziegler et al. and TRL's `objective/kl` (a per-token mean would be ~T times smaller).
    """
    m = _as_bool_mask(mask, kl)
    return _zero_padding(kl, m).sum(dim=1)  # (B,)


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), backwards over each response.

        delta_t = r_t + gamma * V_{t+1} - V_t          (V after the last real token = 0: terminal)
        A_t     = delta_t + gamma * lambda * A_{t+1}    (A after the last real token = 0)
        R_t     = A_t + V_t                             (the value targets, "returns")

    rewards, values, mask (B, T), right-padded, rows may have different lengths (even 0).
    Returns (advantages (B, T), returns (B, T)), both 0 at padding. Not whitened: call
    masked_whiten(advantages, mask) afterwards. Pass detached values (this runs on rollout data).
    """
    _check_same_shape(rewards=rewards, values=values, mask=mask)
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gae: gamma and lam must be in [0, 1], got {gamma}, {lam}")
    m = _as_bool_mask(mask, rewards)
    _check_right_padded(m)
    r = _zero_padding(rewards, m)  # (B, T)
    v = _zero_padding(values, m)  # (B, T)

    B, T = r.shape
    advantages = torch.zeros_like(r)  # (B, T)
    next_value = torch.zeros_like(r[:, 0])  # (B,) V_{t+1}; 0 after the end (and at padding)
    next_advantage = torch.zeros_like(r[:, 0])  # (B,) A_{t+1}
    for t in reversed(range(T)):
        delta = r[:, t] + gamma * next_value - v[:, t]  # (B,)
        a = delta + gamma * lam * next_advantage  # (B,)
        a = _zero_padding(a, m[:, t])  # padding: A = 0 (r = V = 0 there already; made explicit)
        advantages[:, t] = a
        next_value, next_advantage = v[:, t], a
    returns = _zero_padding(advantages + v, m)  # (B, T)
    return advantages, returns


# --------------------------------------------------------------------------------------------------
# PPO losses


def ppo_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped surrogate (Schulman et al. 2017), as a loss to minimise:

        rho_t = exp(log pi(y_t) - log pi_old(y_t))
        L     = masked_mean( max(-A_t rho_t, -A_t clip(rho_t, 1 - epsilon, 1 + epsilon)) )

    logprobs (with grad), old_logprobs, advantages, mask (B, T) -> (loss (0-dim), stats).
    Stats (detached 0-dim tensors, masked means over real tokens):
      clip_frac     fraction of tokens where the clipped term is strictly larger, i.e. clipping is
                    active and the token gets no gradient (TRL's `clipfrac`)
      approx_kl     0.5 * masked_mean((log pi - log pi_old)^2)   (k2; TRL's `approxkl`)
      approx_kl_k3  masked_mean((rho - 1) - log rho)            (k3, Schulman; CleanRL's `approx_kl`)
      policy_kl     masked_mean(log pi_old - log pi)            (k1; TRL's `policykl`, can be < 0)
      ratio_mean    masked_mean(rho)                            (TRL skips a minibatch when > 10)
    All three KL estimates are of KL(pi_old || pi) on tokens sampled from pi_old.
    """
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    m = _as_bool_mask(mask, logprobs)
    log_ratio = _zero_padding(logprobs, m) - _zero_padding(old_logprobs, m)  # (B, T), 0 at padding
    adv = _zero_padding(advantages, m)  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T), 1 at padding

    unclipped = -adv * ratio  # (B, T)
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)  # (B, T)
    loss = masked_mean(torch.maximum(unclipped, clipped), m)

    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((clipped > unclipped).to(logprobs.dtype), m),
            "approx_kl": 0.5 * masked_mean(log_ratio**2, m),
            "approx_kl_k3": masked_mean((ratio - 1.0) - log_ratio, m),
            "policy_kl": masked_mean(-log_ratio, m),
            "ratio_mean": masked_mean(ratio, m),
        }
    return loss, stats


def ppo_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_eps: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped value loss (baselines PPO2, TRL):

        V_clip = V_old + clip(V - V_old, -epsilon, epsilon)
        L_V    = 0.5 * masked_mean( max((V - R)^2, (V_clip - R)^2) )

    values (with grad), old_values, returns, mask (B, T) -> (loss (0-dim), stats).
    Stats (detached 0-dim tensors): value_clip_frac (fraction of real tokens where the clipped error
    is strictly larger, so the token gets no gradient; TRL's `vf_clipfrac`), value_mse
    (masked_mean((V - R)^2), unclipped).
    """
    _check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    m = _as_bool_mask(mask, values)
    v = _zero_padding(values, m)  # (B, T)
    v_old = _zero_padding(old_values, m)  # (B, T)
    ret = _zero_padding(returns, m)  # (B, T)

    v_clip = v_old + torch.clamp(v - v_old, -clip_eps, clip_eps)  # (B, T)
    err_unclipped = (v - ret) ** 2  # (B, T)
    err_clipped = (v_clip - ret) ** 2  # (B, T)
    loss = 0.5 * masked_mean(torch.maximum(err_unclipped, err_clipped), m)

    with torch.no_grad():
        stats = {
            "value_clip_frac": masked_mean((err_clipped > err_unclipped).to(values.dtype), m),
            "value_mse": masked_mean(err_unclipped, m),
        }
    return loss, stats


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """1 - Var(R - V) / Var(R) over real tokens (1 = perfect, 0 = no better than a constant, < 0 worse).

    Both variances use the same (biased) normaliser, which cancels in the ratio. nan if Var(R) = 0.
    """
    _check_same_shape(values=values, returns=returns, mask=mask)
    m = _as_bool_mask(mask, values)
    with torch.no_grad():
        var_returns = float(masked_var(returns, m, unbiased=False))
        if var_returns == 0.0:
            return math.nan
        var_residual = float(masked_var(_zero_padding(returns, m) - _zero_padding(values, m), m, unbiased=False))
    return 1.0 - var_residual / var_returns


# --------------------------------------------------------------------------------------------------
# reward-model losses


def bradley_terry_loss(chosen: Tensor, rejected: Tensor) -> Tensor:
    """Pairwise preference loss: mean over pairs of -log sigma(r_chosen - r_rejected).

    chosen, rejected (N,) scalar rewards -> 0-dim loss. Uses logsigmoid, so it stays finite for any
    margin (e.g. r_chosen - r_rejected = -1000 gives 1000, not inf).
    """
    _check_same_shape(chosen=chosen, rejected=rejected)
    if chosen.dim() != 1:
        raise ValueError(f"expected chosen and rejected of shape (N,), got {tuple(chosen.shape)}")
    return -F.logsigmoid(chosen - rejected).mean()


def bradley_terry_accuracy(chosen: Tensor, rejected: Tensor) -> Tensor:
    """Fraction of pairs ranked correctly: mean of 1[r_chosen > r_rejected], a tie counting 1/2.

    (Ties count 1/2 so that an untrained, constant reward model scores chance = 0.5.) Detached 0-dim.
    """
    _check_same_shape(chosen=chosen, rejected=rejected)
    if chosen.dim() != 1:
        raise ValueError(f"expected chosen and rejected of shape (N,), got {tuple(chosen.shape)}")
    with torch.no_grad():
        correct = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
        return correct.mean()


def pointwise_bce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Pointwise reward-model loss: mean of -[y log sigma(z) + (1 - y) log(1 - sigma(z))].

    logits (N,) and labels (N,) in {0, 1} (or soft labels in [0, 1]) -> 0-dim loss.
    """
    _check_same_shape(logits=logits, labels=labels)
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


# --------------------------------------------------------------------------------------------------
# KL controllers (Ziegler et al. 2019)


class AdaptiveKLController:
    """Adapts beta so the per-sequence KL tracks a target:

        e    = clip(KL / target - 1, -0.2, 0.2)
        beta <- beta * (1 + e * n_steps / horizon)

    `current_kl` is the batch mean of the whole-response KL, sequence_kl(kl, mask).mean() (the
    target is in nats per sequence, e.g. 6), and `n_steps` the number of rollouts it was measured on.
    """

    kind = "adaptive"

    def __init__(self, init_beta: float, target: float, horizon: float) -> None:
        if init_beta < 0 or target <= 0 or horizon <= 0:
            raise ValueError(f"need init_beta >= 0, target > 0, horizon > 0; got {init_beta}, {target}, {horizon}")
        self.value = float(init_beta)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"kind": self.kind, "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        _check_kind(self.kind, state)
        self.value, self.target, self.horizon = float(state["value"]), float(state["target"]), float(state["horizon"])


class FixedKLController:
    """A constant beta with the adaptive controller's interface (update does nothing)."""

    kind = "fixed"

    def __init__(self, beta: float) -> None:
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.value = float(beta)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"kind": self.kind, "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        _check_kind(self.kind, state)
        self.value = float(state["value"])


def _check_kind(kind: str, state: dict) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"this is a {kind} KL controller but the checkpoint holds a {state.get('kind')!r} one")
