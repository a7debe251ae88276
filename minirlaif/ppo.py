"""PPO for a seq2seq policy: one rollout, then several epochs of clipped minibatch updates.

rollout():  x -> sample y ~ pi_old (log pi_old, V_old recorded while sampling)
               -> log pi_ref(y) (frozen SFT model) and score s = RM(x, y)
               -> r_t = -beta (log pi_old - log pi_ref) + [t = last] s     (kl_penalized_rewards)
               -> A_t, R_t = GAE(r, V_old; gamma, lambda), A whitened
update():   for each epoch, for each shuffled minibatch:
               loss = L_clip(pi) + vf_coef * L_V(V) - ent_coef * H(pi)     (losses.py)

Every switch is a visible field of `PPOConfig`. Dropout stays off everywhere (the caller puts all
models in eval mode), and the same temperature divides the logits when sampling and when training.

Under torchrun (minirlaif/distributed.py) each rank calls rollout() on its slice of the prompts:
advantages (and scores) are whitened over the global batch from all-reduced sums and counts. gather()
then gives every rank the global batch, and update() computes the one-process update of that batch:
every rank draws the same minibatches and computes the gradient of its share of each.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from minirlaif import distributed
from minirlaif.batching import cat_padded
from minirlaif.generation import Samples, response_logprobs, sample
from minirlaif.losses import (entropy_from_logits, explained_variance, gae, kl_penalized_rewards, masked_mean,
                              ppo_policy_loss, ppo_value_loss, sequence_kl)
from minirlaif.policy import Seq2SeqPolicy
from minirlaif.reward_model import RewardModel
from minirlaif.utils import autocast


@dataclass
class PPOConfig:
    temperature: float = 1.0  # sampling temperature; also divides the logits in every log-prob
    max_new_tokens: int = 128  # response length limit
    missing_eos_penalty: float | None = -1.0  # score for a response cut at the limit (None = keep RM score)
    whiten_scores: bool = False  # whiten RM scores across the batch (the RM is already normalised)
    gamma: float = 1.0  # discount
    lam: float = 0.95  # GAE lambda
    clip_eps: float = 0.2  # policy ratio clip epsilon
    value_clip_eps: float = 0.2  # value clip around V_old
    vf_coef: float = 0.1  # weight of the value loss
    ent_coef: float = 0.0  # weight of the entropy bonus
    ppo_epochs: int = 4  # passes over each rollout batch
    minibatch_size: int = 16  # sequences per gradient step
    gen_batch_size: int = 0  # prompts per sampling call (0 = the whole batch at once)
    max_grad_norm: float = 1.0  # global gradient-norm clip
    whiten_advantages: bool = True  # masked whitening of A over the batch


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


@torch.no_grad()
def rollout(policy: Seq2SeqPolicy, ref_policy: Seq2SeqPolicy, reward_model: RewardModel,
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
    scores = rm_scores.clone()
    if cfg.missing_eos_penalty is not None:
        scores = torch.where(s.finished, scores, torch.full_like(scores, cfg.missing_eos_penalty))
    if cfg.whiten_scores and scores.numel() * distributed.get_world_size() > 1:
        mean, std = distributed.mean_std(scores)  # over the global batch: every rank's scores
        scores = (scores - mean) / (std + 1e-8)
    rewards, kl = kl_penalized_rewards(scores, s.logprobs, ref_logprobs, s.mask, beta)
    advantages, returns = gae(rewards, s.values, s.mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = distributed.masked_whiten(advantages, s.mask)  # = masked_whiten over the global batch
    return Rollout(prompt_ids, prompt_mask, s.tokens, s.mask, s.logprobs, ref_logprobs, s.values, scores,
                   rm_scores, rewards, kl, advantages, returns, s.finished)


def gather(batch: Rollout, pad_id: int) -> Rollout:
    """Under torchrun, the global batch on every rank: each rank's rollouts in rank order, right-padded to the
    longest prompt and response. `batch` itself in one process."""
    if not distributed.is_distributed():
        return batch
    pads = {"prompt_ids": pad_id, "tokens": pad_id}
    return Rollout(**{f.name: distributed.all_gather(getattr(batch, f.name), pads.get(f.name, 0))
                      for f in fields(Rollout)})


def update(policy: Seq2SeqPolicy, optimizer: torch.optim.Optimizer, batch: Rollout, cfg: PPOConfig,
           generator: torch.Generator | None = None) -> dict[str, float]:
    """`ppo_epochs` passes of clipped policy + value updates over shuffled minibatches of `batch`.

    Under torchrun, `policy` is the DDP-wrapped model and `batch` the global batch (gather()). Every rank
    draws the same minibatches (same `generator` state) and computes the loss of its share of each (rows
    rank, rank + world, ...), weighted by the share's fraction of the minibatch's tokens times world: DDP's
    mean over ranks is then the gradient of the whole minibatch's loss, as in one process.
    """
    rank, world = distributed.get_rank(), distributed.get_world_size()
    n = batch.tokens.shape[0]
    sums: dict[str, float] = {}
    n_updates = 0
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, cfg.minibatch_size):
            idx = order[start : start + cfg.minibatch_size].to(batch.tokens.device)
            minibatch_tokens = batch.mask[idx].sum()
            idx = idx[rank::world]  # this rank's share (all of the minibatch in one process)
            mask = batch.mask[idx]
            share = float(mask.sum() / minibatch_tokens)  # 1.0 in one process
            width = int(mask.sum(1).max())  # drop columns that are padding for every row
            mask, tokens = mask[:, :width], batch.tokens[idx, :width]
            with autocast(tokens.device):  # bf16 on CUDA, plain fp32 on CPU
                logprobs, values, logits = response_logprobs(
                    policy, batch.prompt_ids[idx], batch.prompt_mask[idx], tokens, mask, cfg.temperature)
            pg_loss, pg_stats = ppo_policy_loss(logprobs, batch.logprobs[idx, :width],
                                                batch.advantages[idx, :width], mask, cfg.clip_eps)
            vf_loss, vf_stats = ppo_value_loss(values, batch.values[idx, :width], batch.returns[idx, :width],
                                               mask, cfg.value_clip_eps)
            with torch.set_grad_enabled(cfg.ent_coef != 0):  # only a statistic unless it is in the loss
                entropy = masked_mean(entropy_from_logits(logits), mask)
            loss = pg_loss + cfg.vf_coef * vf_loss - cfg.ent_coef * entropy
            optimizer.zero_grad(set_to_none=True)
            (loss * (share * world)).backward()  # DDP averages the gradients over ranks
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            optimizer.step()
            step_stats = {"policy_loss": pg_loss, "value_loss": vf_loss, "entropy": entropy, "grad_norm": grad_norm,
                          **pg_stats, **vf_stats}
            for k, v in step_stats.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) * share
            n_updates += 1
    sums = dict(zip(sums, distributed.all_reduce_sum(list(sums.values()))))  # token-weighted over ranks
    return {k: v / max(n_updates, 1) for k, v in sums.items()}


def rollout_stats(batch: Rollout, beta: float) -> dict[str, float]:
    """What a reader wants to see each iteration (per-sequence sums for KL and reward)."""
    return {
        "score": float(batch.scores.mean()),
        "rm_score": float(batch.rm_scores.mean()),
        "reward": float((batch.rewards * batch.mask).sum(1).mean()),
        "kl": float(sequence_kl(batch.kl, batch.mask).mean()),
        "beta": beta,
        "response_length": float(batch.mask.sum(1).mean()),
        "finished": float(batch.finished.float().mean()),
        "explained_variance": explained_variance(batch.values, batch.returns, batch.mask),
    }
