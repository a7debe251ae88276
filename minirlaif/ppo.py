"""PPO for a seq2seq policy: one rollout, then several epochs of clipped minibatch updates.

rollout():  x -> sample y ~ pi_old (log pi_old, V_old recorded while sampling)
               -> log pi_ref(y) (frozen SFT model) and score s = RM(x, y)
               -> r_t = -beta (log pi_old - log pi_ref) + [t = last] s     (kl_penalized_rewards)
               -> A_t, R_t = GAE(r, V_old; gamma, lambda), A whitened
update():   for each epoch, for each shuffled minibatch:
               loss = L_clip(pi) + vf_coef * L_V(V) - ent_coef * H(pi)     (losses.py)

--algo grpo / rloo keep the rollout and the clipped update but drop the critic: k samples per prompt
(consecutive rows), one advantage per response from the other samples of its prompt, shared by its tokens:
    grpo: A = (s - mean_g s) / (std_g s + eps)  (group_advantages); the KL is a loss term instead of a reward:
          loss = L_clip + beta * mean_t k3(pi, pi_ref)                                   (Shao et al. 2024)
    rloo: R = s - beta * sum_t kl_t (the PPO reward summed); A = R - mean of the other k - 1 R's
          (rloo_advantages); loss = L_clip                                             (Ahmadian et al. 2024)

Every switch is a field of `PPOConfig`. Dropout stays off everywhere (the caller puts all models in
eval mode), and the same temperature divides the logits when sampling and when training.

This is PPO as one process runs it. Under torchrun, minirlaif/distributed.py is the thin layer around
it: each rank calls rollout() on its slice of the prompts (whitening there uses the global batch's
moments), distributed.all_gather_fields() gives every rank the global batch, and inside update()
distributed.minibatches() hands each rank its rows of every minibatch with a loss weight, so the
2-process update equals the 1-process one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from minirlaif import distributed, flags
from minirlaif.batching import cat_padded
from minirlaif.generation import Samples, sample
from minirlaif.losses import (check_response_batch, entropy_from_logits, explained_variance, gae, group_advantages,
                              k3_kl, kl_penalized_rewards, logprobs_from_logits, masked_mean, ppo_policy_loss,
                              ppo_value_loss, rloo_advantages, sequence_kl)
from minirlaif.policy import Policy, autocast
from minirlaif.reward_model import RewardModel
from minirlaif.settings import SamplingSettings
from minirlaif.utils import field


@dataclass
class PPOConfig(SamplingSettings):
    """Every PPO switch, declared once: train_ppo.py's flags are these fields (plus temperature and
    max_new_tokens from SamplingSettings: the same temperature divides the logits in every log-prob)."""

    missing_eos_penalty: float = field(-1.0, "score for responses cut at --max-new-tokens (nan = keep the RM's)",
                                       type=flags.float_in(-1e6, 1e6, allow_nan=True))
    whiten_scores: bool = field(False, "whiten RM scores over the batch (the RM is already normalised)")
    gamma: float = field(1.0, "discount gamma", type=flags.unit_interval)
    lam: float = field(0.95, "GAE lambda", type=flags.unit_interval)
    whiten_advantages: bool = field(True, "whiten the advantages over the batch's real tokens")
    clip_eps: float = field(0.2, "policy ratio clip epsilon", type=flags.positive_float)
    value_clip_eps: float = field(0.2, "value clip around V_old", type=flags.positive_float)
    vf_coef: float = field(0.1, "value-loss weight", type=flags.nonnegative_float)
    ent_coef: float = field(0.0, "entropy-bonus weight", type=flags.finite_float)
    ppo_epochs: int = field(4, "passes over each batch", type=flags.positive_int)
    minibatch_size: int = field(16, "sequences per gradient step (global: each of N processes computes 1/N of "
                                "them)", type=flags.positive_int)
    gen_batch_size: int = field(0, "prompts per sampling call (0 = all of this process's rollouts at once)",
                                type=flags.count)
    max_grad_norm: float = field(1.0, "gradient-norm clip", type=flags.positive_float)
    algo: str = field("ppo", "ppo (value head + GAE), grpo (group-normalised scores, k3 KL in the loss) or rloo "
                      "(leave-one-out baseline on score - beta * KL); grpo and rloo train no critic",
                      choices=["ppo", "grpo", "rloo"])
    group_size: int = field(4, "grpo/rloo: samples per prompt (--rollouts / group-size prompts per iteration)",
                            type=flags.positive_int)

    @property
    def samples_per_prompt(self) -> int:
        """k: how many consecutive rollouts share one prompt (1 for PPO, which needs no group)."""
        return 1 if self.algo == "ppo" else self.group_size


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # (B, S)
    prompt_mask: torch.Tensor  # (B, S)
    tokens: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T) float
    logprobs: torch.Tensor  # (B, T) log pi_old
    ref_logprobs: torch.Tensor  # (B, T) log pi_ref
    values: torch.Tensor  # (B, T) V_old
    scores: torch.Tensor  # (B,) score used in the reward (after EOS penalty / whitening)
    rm_scores: torch.Tensor  # (B,) raw reward-model output
    rewards: torch.Tensor  # (B, T)
    kl: torch.Tensor  # (B, T) log pi_old - log pi_ref
    advantages: torch.Tensor  # (B, T)
    returns: torch.Tensor  # (B, T)
    finished: torch.Tensor  # (B,) bool


def response_logprobs(policy: Policy, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      tokens: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher-forced log pi(y_t) (B, T) and V(s_t) (B, T), 0 at padding, and the logits (B, T, V) / temperature
    for responses `tokens` (B, T) to prompts `input_ids` (B, S). `policy` may be a DDP / torch.compile wrapper."""
    logits, values = policy(input_ids, attention_mask, tokens)  # (B, T, V), (B, T)
    if temperature != 1.0:
        logits = logits / temperature
    return logprobs_from_logits(logits, tokens) * mask, values * mask, logits


@torch.no_grad()
def rollout(policy: Policy, ref_policy: Policy, reward_model: RewardModel,
            prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, beta: float, cfg: PPOConfig,
            eos_id: int, pad_id: int, generator: torch.Generator | None = None) -> Rollout:
    """Sample one response per prompt and turn it into per-token rewards, advantages and returns."""
    chunks, refs, rms = [], [], []
    step = cfg.gen_batch_size or prompt_ids.shape[0]
    with autocast(prompt_ids.device):
        for i in range(0, prompt_ids.shape[0], step):  # `gen_batch_size` prompts per sampling call
            ids, mask = prompt_ids[i : i + step], prompt_mask[i : i + step]
            s = sample(policy, ids, mask, cfg.max_new_tokens, eos_id, pad_id,
                       temperature=cfg.temperature, generator=generator)
            refs.append(response_logprobs(ref_policy, ids, mask, s.tokens, s.mask, cfg.temperature)[0])
            rms.append(reward_model(ids, mask, s.tokens, s.mask).float())  # (B,)
            chunks.append(s)
    if len(chunks) > 1:  # one batch again, responses right-padded to the longest
        s = Samples(tokens=cat_padded([c.tokens for c in chunks], pad_id), mask=cat_padded([c.mask for c in chunks]),
                    logprobs=cat_padded([c.logprobs for c in chunks]), values=cat_padded([c.values for c in chunks]),
                    finished=torch.cat([c.finished for c in chunks]))
    ref_logprobs, rm_scores = cat_padded(refs) if len(refs) > 1 else refs[0], torch.cat(rms)
    check_response_batch(s.mask, logprobs=s.logprobs, ref_logprobs=ref_logprobs, values=s.values)  # once per batch
    scores = rm_scores.clone()
    if not math.isnan(cfg.missing_eos_penalty):
        scores = torch.where(s.finished, scores, torch.full_like(scores, cfg.missing_eos_penalty))
    if cfg.whiten_scores and scores.numel() * distributed.get_world_size() > 1:
        mean, std = distributed.mean_std(scores)  # over the global batch: every rank's scores
        scores = (scores - mean) / (std + 1e-8)
    if cfg.algo == "ppo":
        rewards, kl = kl_penalized_rewards(scores, s.logprobs, ref_logprobs, s.mask, beta)
        advantages, returns = gae(rewards, s.values, s.mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = distributed.masked_whiten(advantages, s.mask)  # = masked_whiten over the global batch
    else:  # no critic: one advantage per response (its group is on this rank), shared by its tokens
        rewards, kl = kl_penalized_rewards(scores, s.logprobs, ref_logprobs, s.mask, beta if cfg.algo == "rloo" else 0.0)
        if cfg.algo == "grpo":
            per_response = group_advantages(scores, cfg.group_size)  # (B,); its KL is a loss term (update)
        else:
            per_response = rloo_advantages(rewards.sum(1), cfg.group_size)  # (B,) on R = s - beta * sum_t kl_t
        advantages = per_response.unsqueeze(1) * s.mask  # (B, T)
        returns = s.values  # nothing trains the value head
    return Rollout(prompt_ids, prompt_mask, s.tokens, s.mask, s.logprobs, ref_logprobs, s.values, scores,
                   rm_scores, rewards, kl, advantages, returns, s.finished)


def update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Rollout, cfg: PPOConfig,
           generator: torch.Generator | None = None, beta: float = 0.0) -> dict[str, float]:
    """`ppo_epochs` passes of clipped policy + value updates over shuffled minibatches of `batch`:

        loss = L_clip + vf_coef * L_V - ent_coef * H     (per minibatch; one optimizer step each)
        grpo: L_clip + beta * mean_t k3(pi, pi_ref) - ent_coef * H;   rloo: L_clip - ent_coef * H

    Returns the mean over steps of each loss and statistic. `model` is the policy, or its DDP / torch.compile
    wrapper; under torchrun `batch` is the global batch (distributed.all_gather_fields) and
    distributed.minibatches gives each rank its rows of every minibatch and the loss weight that makes DDP's
    mean the whole minibatch's gradient. In one process it gives every minibatch whole, with weight 1.
    """
    sums: dict[str, torch.Tensor] = {}
    n_updates = 0
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(batch.tokens.shape[0], generator=generator)
        for idx, weight in distributed.minibatches(order, cfg.minibatch_size, batch.mask):
            width = int(batch.mask[idx].sum(1).max())  # drop columns that are padding for every row
            mask = batch.mask[idx, :width]  # (b, t)
            with autocast(mask.device):  # bf16 on CUDA, plain fp32 on CPU
                logprobs, values, logits = response_logprobs(model, batch.prompt_ids[idx], batch.prompt_mask[idx],
                                                             batch.tokens[idx, :width], mask, cfg.temperature)
            pg_loss, pg_stats = ppo_policy_loss(logprobs, batch.logprobs[idx, :width], batch.advantages[idx, :width],
                                                mask, cfg.clip_eps)
            with torch.set_grad_enabled(cfg.ent_coef != 0):  # only a statistic unless it is in the loss
                entropy = masked_mean(entropy_from_logits(logits), mask)
            if cfg.algo == "ppo":
                vf_loss, vf_stats = ppo_value_loss(values, batch.values[idx, :width], batch.returns[idx, :width],
                                                   mask, cfg.value_clip_eps)
                loss = pg_loss + cfg.vf_coef * vf_loss - cfg.ent_coef * entropy
                term = {"value_loss": vf_loss}
            elif cfg.algo == "grpo":
                vf_stats = {}
                kl_loss = masked_mean(k3_kl(logprobs, batch.ref_logprobs[idx, :width], mask), mask)
                loss = pg_loss + beta * kl_loss - cfg.ent_coef * entropy
                term = {"kl_loss": kl_loss}
            else:  # rloo: the KL is already in the advantages
                vf_stats, term = {}, {}
                loss = pg_loss - cfg.ent_coef * entropy
            optimizer.zero_grad(set_to_none=True)
            (loss * weight).backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            step_stats = {"policy_loss": pg_loss, **term, "entropy": entropy, "grad_norm": grad_norm,
                          **pg_stats, **vf_stats}
            for k, v in step_stats.items():  # summed in float64 on the device: no wait for it in the step
                sums[k] = sums.get(k, 0.0) + v.detach().double() * weight
            n_updates += 1
    totals = distributed.all_reduce_mean([float(v) for v in sums.values()])  # token-weighted over ranks
    return {k: v / max(n_updates, 1) for k, v in zip(sums, totals)}


def rollout_stats(batch: Rollout, beta: float, critic: bool = True) -> dict[str, float]:
    """What a reader wants to see each iteration (per-sequence sums for KL and reward); the value head's
    explained variance only when it is trained (`critic`, --algo ppo)."""
    stats = {
        "score": float(batch.scores.mean()),
        "rm_score": float(batch.rm_scores.mean()),
        "reward": float((batch.rewards * batch.mask).sum(1).mean()),
        "kl": float(sequence_kl(batch.kl, batch.mask).mean()),
        "beta": beta,
        "response_length": float(batch.mask.sum(1).mean()),
        "finished": float(batch.finished.float().mean()),
    }
    if critic:
        stats["explained_variance"] = explained_variance(batch.values, batch.returns, batch.mask)
    return stats
