"""Step 3: PPO against the reward model, with a per-token KL penalty to the frozen SFT policy.

    r_t = -beta (log pi(y_t) - log pi_ref(y_t)) + [t = T] RM(x, y)    ->  GAE  ->  clipped PPO
    (--reward judge: the judge's score of y in place of RM(x, y), asked online; no reward model)

    python train_ppo.py                      # reads runs/sft and runs/rm, writes runs/ppo
    python train_ppo.py --resume             # continue after a kill
    python train_ppo.py --plot               # also draw runs/ppo/curves.png
    torchrun --nproc_per_node 4 train_ppo.py # data parallel: each process samples --rollouts / 4 prompts
    python train_ppo.py --algo grpo --out runs/grpo    # no critic: 4 samples per prompt, group-normalised scores
    python train_ppo.py --algo rloo --out runs/rloo    # no critic: leave-one-out baseline (minirlaif/ppo.py)
    python train_ppo.py --reward judge --whiten-scores --out runs/ppo_judge   # the analyzer judge as the reward
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from minirlaif import distributed, flags
from minirlaif.batching import pad_right
from minirlaif.checkpoint import model_dir, resume_hint
from minirlaif.data.prompts import format_prompt
from minirlaif.data.splits import load_dataset, with_code
from minirlaif.errors import InputError, RunStopped
from minirlaif.feedback import FeedbackCache, JudgeError, build_judge, parse_weights
from minirlaif.feedback.online import JudgeReward
from minirlaif.policy import load_policy
from minirlaif.ppo import PPOConfig, rollout, rollout_stats, update
from minirlaif.reward_model import RewardModel
from minirlaif.run import Run
from minirlaif.settings import DataSettings, ForwardSettings, JudgeSettings, RunSettings, TrainingSettings, default_for
from minirlaif.tokenizer import load_tokenizer
from minirlaif.utils import field, parse_config


@dataclass
class Config(RunSettings, TrainingSettings, ForwardSettings, DataSettings, PPOConfig, JudgeSettings):
    """train_ppo.py's flags: the shared groups (minirlaif/settings.py), every PPO switch (ppo.PPOConfig), and these."""

    sft: str = field("runs/sft", "SFT run folder (or model folder): the initial and the reference policy")
    rm: str = field("runs/rm", "reward-model run folder (or model folder)")
    reward: str = field("rm", "what scores a rollout: rm (the reward model --rm) or judge (the --judge itself, asked "
                        "online, answers cached in OUT/feedback; no reward model)", choices=["rm", "judge"])
    out: str = default_for(RunSettings, "out", "runs/ppo")
    save_every: int = default_for(TrainingSettings, "save_every", 5)
    iterations: int = field(80, "rollout + update iterations", type=flags.positive_int)
    rollouts: int = field(64, "responses sampled per iteration (the PPO batch; under torchrun the global batch, "
                          "each of N processes samples rollouts / N)", type=flags.positive_int)
    lr: float = field(5e-5, "learning rate (AdamW, constant)", type=flags.positive_float)
    kl_coef: float = field(0.4, "initial KL coefficient beta (why 0.4: the README's levers under the current judge)",
                           type=flags.nonnegative_float)
    adaptive_kl: bool = field(False, "adapt beta towards --kl-target (Ziegler et al.)")
    kl_target: float = field(6.0, "target per-sequence KL for the adaptive controller", type=flags.positive_float)
    kl_horizon: float = field(10000, "horizon of the adaptive controller", type=flags.positive_float)
    max_kl: float = field(100.0, "stop (keeping the last good checkpoint) if per-sequence KL exceeds this",
                          type=flags.positive_float)
    plot: bool = field(False, "draw the training curves to OUT/curves.png at the end")

    def check(self) -> str | None:
        """Flags that are fine alone but not together (argparse reports it in one line)."""
        world = distributed.launched_world_size()
        if self.rollouts % world or self.minibatch_size % world:
            return (f"--rollouts {self.rollouts} and --minibatch-size {self.minibatch_size} must be multiples of "
                    f"the number of processes ({world})")
        k = self.samples_per_prompt
        if k > 1 and self.rollouts % (k * world):
            return (f"--rollouts {self.rollouts} must be a multiple of --group-size {k} x {world} process(es): "
                    "each process holds whole groups")
        if self.algo != "ppo" and k < 2:
            return f"--algo {self.algo} compares the samples of one prompt: use --group-size 2 or more"
        if self.minibatch_size > self.rollouts:
            return f"--minibatch-size {self.minibatch_size} is larger than --rollouts {self.rollouts}"
        if self.gen_batch_size > self.rollouts:
            return f"--gen-batch-size {self.gen_batch_size} is larger than --rollouts {self.rollouts}"
        tokens = self.rollouts * (self.max_prompt_len + self.max_new_tokens)
        return flags.too_big(f"--rollouts {self.rollouts} (tokens, log-probs, values, advantages of {tokens:,} "
                             "tokens per iteration)", tokens * flags.ROLLOUT_BYTES_PER_TOKEN)


# ---- the KL coefficient beta, beside the loop that updates it (Ziegler et al. 2019) ----------------------------
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


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def prompt_batch(iteration: int, prompts: Sequence, size: int, seed: int) -> list:
    """Prompts (or their indices) of one iteration: consecutive slices of a seeded permutation, reshuffled every pass."""
    out = []
    for j in range(iteration * size, (iteration + 1) * size):
        epoch, pos = divmod(j, len(prompts))
        perm = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
        out.append(prompts[perm[pos]])
    return out


def restore_kl_controller(kl_ctl, saved: dict, cfg: Config, out: Path) -> None:
    """The checkpoint's beta; a fixed controller resumed with another --kl-coef takes the new one."""
    try:
        kl_ctl.load_state_dict(saved)
    except ValueError as e:
        raise InputError(f"{out}/checkpoint: {e} (resume with the same --adaptive-kl, or pick a new --out)") from None
    if not cfg.adaptive_kl and kl_ctl.value != cfg.kl_coef:
        print(f"--kl-coef {cfg.kl_coef} replaces the checkpoint's {kl_ctl.value}")
        kl_ctl.value = cfg.kl_coef


def stop_if_diverged(stats: dict, it: int, cfg: Config, out: Path) -> None:
    """Stop (keeping the last good checkpoint) on non-finite statistics or a KL past --max-kl."""
    if not all(math.isfinite(v) for k, v in stats.items() if k != "explained_variance"):
        raise RunStopped(f"iteration {it}: non-finite statistics {stats}; {resume_hint(out)}")
    if stats["kl"] > cfg.max_kl:
        raise RunStopped(f"iteration {it}: KL {stats['kl']:.1f} exceeds --max-kl {cfg.max_kl}; "
                         f"{resume_hint(out, 'raise --kl-coef or lower --lr')}")


def main(cfg: Config) -> dict:
    weights = parse_weights(cfg.weights)  # --reward judge: a bad --weights fails before any work
    run = Run("train_ppo.py", cfg, log_key="iteration")  # torchrun setup, run folder, seed
    device = run.device

    # ---- models: policy (trained), reference (frozen SFT), reward model (frozen) ----
    sft_dir = model_dir(cfg.sft)
    tokenizer = load_tokenizer(sft_dir)
    checkpoint = run.checkpoint()
    policy = load_policy(checkpoint[0] if checkpoint else sft_dir).to(device)
    ref_policy = frozen(load_policy(sft_dir).to(device))
    if cfg.reward == "rm":
        reward_model = frozen(RewardModel.from_pretrained(model_dir(cfg.rm)).to(device))
        if reward_model.backbone.config.vocab_size != policy.config.vocab_size:
            raise InputError(f"{cfg.rm}: reward model vocabulary ({reward_model.backbone.config.vocab_size}) differs "
                             f"from the policy's ({policy.config.vocab_size}); train the RM from this SFT run")
    policy.eval()  # dropout off during RL: rollout and update see the same network
    if cfg.grad_checkpointing:
        policy.gradient_checkpointing_enable()
    # the update's forward; without a critic (grpo, rloo) the value head gets no gradient
    model = distributed.ddp(torch.compile(policy) if cfg.compile else policy, device,
                            find_unused_parameters=cfg.algo != "ppo")
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    kl_ctl = AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.adaptive_kl else FixedKLController(cfg.kl_coef)
    generator = torch.Generator(device=device).manual_seed(cfg.seed + run.rank * 100003)  # sampling: a seed per rank
    shuffle_gen = torch.Generator().manual_seed(cfg.seed + 1)  # minibatch order: the same on every rank
    generators = {"generator": generator, "shuffle_generator": shuffle_gen}
    if checkpoint is not None:
        restore_kl_controller(kl_ctl, checkpoint[1]["kl_controller"], cfg, run.out)
    start = run.restore(checkpoint[1], optimizer, generators=generators) if checkpoint else 0

    data = load_dataset(cfg.data, cfg.eval_data or None, cfg.api_db or None, seed=cfg.seed)
    records = with_code(data.train)
    prompts = [tokenizer(format_prompt(r), cfg.max_prompt_len) for r in records]
    if cfg.reward == "judge":  # each rank asks about its own rollouts, with its own cache file
        cache = FeedbackCache(run.out / "feedback" / f"cache.rank{run.rank}.jsonl")
        reward_model = JudgeReward(build_judge(cfg, data, device), cache, weights, tokenizer, cfg.judge_workers)
    logger = run.logger(start)
    print(f"PPO: {len(prompts)} prompts, {cfg.iterations} iterations x {cfg.rollouts} rollouts on {device}"
          + (f" x {run.world} processes" if run.world > 1 else ""))

    def save_model(directory: Path) -> None:
        policy.save_pretrained(directory, extra={"stage": "ppo"})
        tokenizer.save(directory)

    # ---- loop ----
    bar = run.progress(start, cfg.iterations, "ppo")
    for it in bar:
        t0 = time.time()
        # the global batch of prompts; each rank samples its slice, then every rank holds all the rollouts
        # (grpo / rloo: --rollouts / k prompts, each k times in a row: a group)
        k = cfg.samples_per_prompt
        rows = distributed.shard([i for i in prompt_batch(it, range(len(prompts)), cfg.rollouts // k, cfg.seed)
                                  for _ in range(k)])  # indices of this rank's prompts
        ids, mask = pad_right([prompts[i] for i in rows], tokenizer.pad_id, device)
        if cfg.reward == "judge":
            reward_model.expect([records[i] for i in rows])
        try:
            batch = rollout(policy, ref_policy, reward_model, ids, mask, kl_ctl.value, cfg,
                            tokenizer.eos_id, tokenizer.pad_id, generator)
        except JudgeError as e:
            raise RunStopped(f"{e}; every answer so far is cached in {run.out / 'feedback'}: fix the judge and rerun "
                             "with the same arguments plus --resume") from None
        batch = distributed.all_gather_fields(batch, {"prompt_ids": tokenizer.pad_id, "tokens": tokenizer.pad_id})
        t_rollout = time.time() - t0
        stats = rollout_stats(batch, kl_ctl.value, critic=cfg.algo == "ppo")
        with policy.checkpointing_in_eval_mode():  # a no-op without --grad-checkpointing
            stats.update(update(model, optimizer, batch, cfg, shuffle_gen, beta=kl_ctl.value))
        stop_if_diverged(stats, it, cfg, run.out)
        kl_ctl.update(stats["kl"], cfg.rollouts)
        seconds = time.time() - t0
        stats.update(iteration=it + 1, seconds=seconds, rollout_seconds=t_rollout,
                     tokens_per_s=float(batch.mask.sum()) * (1 + cfg.ppo_epochs) / seconds)
        logger.log(**stats)
        bar.set_postfix(score=f"{stats['score']:.2f}", kl=f"{stats['kl']:.2f}", len=f"{stats['response_length']:.0f}")
        run.end_step(it + 1, cfg.iterations, save_model,
                     {"optimizer": optimizer.state_dict(), "kl_controller": kl_ctl.state_dict()}, generators)
    bar.close()
    if cfg.reward == "judge":
        cache.close()

    summary = {"iterations": cfg.iterations, "final_beta": kl_ctl.value}
    run.finish(save_model, summary)
    if cfg.plot and run.main:
        from minirlaif.plots import plot_metrics

        plot_metrics(run.out / "metrics.jsonl", run.out / "curves.png")
    print(f"PPO done; policy saved to {run.out / 'model'}")
    return summary


if __name__ == "__main__":
    from minirlaif.utils import run_main

    run_main(lambda: main(parse_config(Config, __doc__.split("\n")[0])))
