"""Step 3: PPO against the reward model, with a per-token KL penalty to the frozen SFT policy.

    r_t = -beta (log pi(y_t) - log pi_ref(y_t)) + [t = T] RM(x, y)    ->  GAE  ->  clipped PPO

    python train_ppo.py                      # reads runs/sft and runs/rm, writes runs/ppo
    python train_ppo.py --resume             # continue after a kill
    python train_ppo.py --plot               # also draw runs/ppo/curves.png
    torchrun --nproc_per_node 4 train_ppo.py # data parallel: each process samples --rollouts / 4 prompts
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from minirlaif import distributed, flags
from minirlaif.batching import pad_right
from minirlaif.checkpoint import (claim_run_folder, load_checkpoint, model_dir, resume_hint, save_checkpoint,
                                  write_dir_atomic)
from minirlaif.data.prompts import format_prompt
from minirlaif.data.splits import load_dataset, with_code
from minirlaif.errors import InputError, RunStopped
from minirlaif.losses import AdaptiveKLController, FixedKLController
from minirlaif.policy import Seq2SeqPolicy
from minirlaif.ppo import PPOConfig, gather, rollout, rollout_stats, update
from minirlaif.reward_model import RewardModel
from minirlaif.tokenizer import load_tokenizer
from minirlaif.progress import progress_bar
from minirlaif.utils import (JsonlLogger, debug_kill_point, field, parse_config,
                             quiet_transformers, rng_state, set_rng_state, set_seed, write_json_atomic)


@dataclass
class Config:
    sft: str = field("runs/sft", "SFT run folder (or model folder): the initial and the reference policy")
    rm: str = field("runs/rm", "reward-model run folder (or model folder)")
    out: str = field("runs/ppo", "run folder: model/, checkpoint/, metrics.jsonl")
    overwrite: bool = field(False, "write into an --out folder this script did not make (its outputs there are "
                            "replaced, other files stay)")
    data: str = field("builtin", "'builtin' or a Gorilla APIBench file/folder (prompts come from its train split)")
    eval_data: str = field("", "separate eval file (unused for training; kept for symmetry)")
    api_db: str = field("", "API database for --data files")
    iterations: int = field(80, "rollout + update iterations", type=flags.positive_int)
    rollouts: int = field(64, "responses sampled per iteration (the PPO batch; under torchrun the global batch, "
                          "each of N processes samples rollouts / N)", type=flags.positive_int)
    minibatch_size: int = field(16, "sequences per gradient step (global: each of N processes computes 1/N of them)",
                                type=flags.positive_int)
    gen_batch_size: int = field(0, "prompts per sampling call (0 = all of this process's rollouts at once)",
                                type=flags.count)
    ppo_epochs: int = field(4, "passes over each batch", type=flags.positive_int)
    lr: float = field(5e-5, "learning rate (AdamW, constant)", type=flags.positive_float)
    temperature: float = field(1.0, "sampling temperature (also divides logits for every log-prob)",
                               type=flags.positive_float)
    max_new_tokens: int = field(128, "response length limit", type=flags.positive_int)
    max_prompt_len: int = field(64, "encoder tokens kept", type=flags.positive_int)
    kl_coef: float = field(0.2, "initial KL coefficient beta", type=flags.nonnegative_float)
    adaptive_kl: bool = field(False, "adapt beta towards --kl-target (Ziegler et al.)")
    kl_target: float = field(6.0, "target per-sequence KL for the adaptive controller", type=flags.positive_float)
    kl_horizon: float = field(10000, "horizon of the adaptive controller", type=flags.positive_float)
    missing_eos_penalty: float = field(-1.0, "score for responses cut at --max-new-tokens (nan = off)",
                                       type=flags.float_in(-1e6, 1e6, allow_nan=True))
    whiten_scores: bool = field(False, "whiten RM scores per batch")
    gamma: float = field(1.0, "discount gamma", type=flags.unit_interval)
    lam: float = field(0.95, "GAE lambda", type=flags.unit_interval)
    clip_eps: float = field(0.2, "policy ratio clip epsilon", type=flags.positive_float)
    value_clip_eps: float = field(0.2, "value clip", type=flags.positive_float)
    vf_coef: float = field(0.1, "value-loss weight", type=flags.nonnegative_float)
    ent_coef: float = field(0.0, "entropy-bonus weight", type=flags.finite_float)
    max_grad_norm: float = field(1.0, "gradient-norm clip", type=flags.positive_float)
    max_kl: float = field(100.0, "stop (keeping the last good checkpoint) if per-sequence KL exceeds this",
                          type=flags.positive_float)
    save_every: int = field(5, "iterations between checkpoints", type=flags.positive_int)
    seed: int = field(0, "seed for prompt order and sampling", type=flags.seed)
    device: str = field("auto", "auto, cpu, cuda, cuda:N", type=flags.device)
    compile: bool = field(False, "torch.compile the training forward pass (the first steps compile)")
    grad_checkpointing: bool = field(False, "recompute activations in backward: less memory, ~30% more compute")
    resume: bool = field(False, "continue from OUT/checkpoint")
    plot: bool = field(False, "draw the training curves to OUT/curves.png at the end")

    def check(self) -> str | None:
        """Flags that are fine alone but not together (argparse reports it in one line)."""
        if self.minibatch_size > self.rollouts:
            return f"--minibatch-size {self.minibatch_size} is larger than --rollouts {self.rollouts}"
        if self.gen_batch_size > self.rollouts:
            return f"--gen-batch-size {self.gen_batch_size} is larger than --rollouts {self.rollouts}"
        tokens = self.rollouts * (self.max_prompt_len + self.max_new_tokens)
        return flags.too_big(f"--rollouts {self.rollouts} (tokens, log-probs, values, advantages of {tokens:,} "
                             "tokens per iteration)", tokens * flags.ROLLOUT_BYTES_PER_TOKEN)


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def prompt_batch(iteration: int, prompts: list[list[int]], size: int, seed: int) -> list[list[int]]:
    """Prompts of one iteration: consecutive slices of a seeded permutation, reshuffled every pass."""
    out = []
    for j in range(iteration * size, (iteration + 1) * size):
        epoch, pos = divmod(j, len(prompts))
        perm = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
        out.append(prompts[perm[pos]])
    return out


def main(cfg: Config) -> dict:
    out = Path(cfg.out)
    rank, world, _, device = distributed.setup(cfg.device)  # (0, 1, 0, --device) unless launched by torchrun
    if cfg.rollouts % world or cfg.minibatch_size % world:
        raise InputError(f"--rollouts {cfg.rollouts} and --minibatch-size {cfg.minibatch_size} must be multiples "
                         f"of the number of processes ({world})")
    if distributed.is_main():
        claim_run_folder(out, "train_ppo.py", {f.name for f in fields(Config)}, cfg.overwrite)
    quiet_transformers()
    set_seed(cfg.seed)
    ppo_cfg = PPOConfig(**{f.name: getattr(cfg, f.name) for f in fields(PPOConfig) if hasattr(cfg, f.name)})
    if math.isnan(cfg.missing_eos_penalty):
        ppo_cfg.missing_eos_penalty = None

    # ---- models: policy (trained), reference (frozen SFT), reward model (frozen) ----
    sft_dir = model_dir(cfg.sft)
    tokenizer = load_tokenizer(sft_dir)
    checkpoint = load_checkpoint(out) if cfg.resume else None
    policy = Seq2SeqPolicy.from_pretrained(checkpoint[0] if checkpoint else sft_dir).to(device)
    ref_policy = frozen(Seq2SeqPolicy.from_pretrained(sft_dir).to(device))
    reward_model = frozen(RewardModel.from_pretrained(model_dir(cfg.rm)).to(device))
    if reward_model.backbone.config.vocab_size != policy.config.vocab_size:
        raise InputError(f"{cfg.rm}: reward model vocabulary ({reward_model.backbone.config.vocab_size}) differs "
                         f"from the policy's ({policy.config.vocab_size}); train the RM from this SFT run")
    policy.eval()  # dropout off during RL: rollout and update see the same network
    if cfg.grad_checkpointing:
        policy.gradient_checkpointing_enable()
    model = distributed.ddp(torch.compile(policy) if cfg.compile else policy, device)  # the update's forward
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.adaptive_kl
              else FixedKLController(cfg.kl_coef))
    generator = torch.Generator(device=device).manual_seed(cfg.seed + rank * 100003)  # sampling: a seed per rank
    shuffle_gen = torch.Generator().manual_seed(cfg.seed + 1)
    start = 0
    if checkpoint is not None:
        state = distributed.own_rank_state(checkpoint[1])
        optimizer.load_state_dict(state["optimizer"])
        if optimizer.param_groups[0]["lr"] != cfg.lr:  # resumed with another --lr (e.g. after non-finite stats)
            print(f"--lr {cfg.lr} replaces the checkpoint's {optimizer.param_groups[0]['lr']}")
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr
        try:
            kl_ctl.load_state_dict(state["kl_controller"])
        except ValueError as e:
            raise InputError(f"{out}/checkpoint: {e} (resume with the same --adaptive-kl, or pick a new --out)") from None
        if not cfg.adaptive_kl and kl_ctl.value != cfg.kl_coef:  # resumed with another --kl-coef: use it
            print(f"--kl-coef {cfg.kl_coef} replaces the checkpoint's {kl_ctl.value}")
            kl_ctl.value = cfg.kl_coef
        set_rng_state(state["rng"])
        generator.set_state(state["generator"])
        shuffle_gen.set_state(state["shuffle_generator"])
        start = state["iteration"]
        print(f"resumed from {out}/checkpoint at iteration {start}")
    elif distributed.is_main() and (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()

    data = load_dataset(cfg.data, cfg.eval_data or None, cfg.api_db or None, seed=cfg.seed)
    prompts = [tokenizer(format_prompt(r), cfg.max_prompt_len) for r in with_code(data.train)]
    logger = JsonlLogger(out / "metrics.jsonl" if distributed.is_main() else os.devnull, start, key="iteration")
    if distributed.is_main():
        write_json_atomic(asdict(cfg), out / "args.json")
    print(f"PPO: {len(prompts)} prompts, {cfg.iterations} iterations x {cfg.rollouts} rollouts on {device}"
          + (f" x {world} processes" if world > 1 else ""))

    def save_model(directory: Path) -> None:
        policy.save_pretrained(directory, extra={"stage": "ppo"})
        tokenizer.save(directory)

    # ---- loop ----
    bar = progress_bar(range(start, cfg.iterations), initial=start, total=cfg.iterations, desc="ppo",
                       disable=not distributed.is_main())
    for it in bar:
        t0 = time.time()
        # the global batch of prompts; each rank samples its slice, then every rank holds all the rollouts
        prompts_it = distributed.shard(prompt_batch(it, prompts, cfg.rollouts, cfg.seed))
        ids, mask = pad_right(prompts_it, tokenizer.pad_id, device)
        batch = rollout(policy, ref_policy, reward_model, ids, mask, kl_ctl.value, ppo_cfg,
                        tokenizer.eos_id, tokenizer.pad_id, generator)
        batch = gather(batch, tokenizer.pad_id)
        t_rollout = time.time() - t0
        stats = rollout_stats(batch, kl_ctl.value)
        with policy.checkpointing_in_eval_mode():  # a no-op without --grad-checkpointing
            stats.update(update(model, optimizer, batch, ppo_cfg, shuffle_gen))
        if not all(math.isfinite(v) for k, v in stats.items() if k != "explained_variance"):
            raise RunStopped(f"iteration {it}: non-finite statistics {stats}; {resume_hint(out)}")
        if stats["kl"] > cfg.max_kl:
            raise RunStopped(f"iteration {it}: KL {stats['kl']:.1f} exceeds --max-kl {cfg.max_kl}; "
                             f"{resume_hint(out, 'raise --kl-coef or lower --lr')}")
        kl_ctl.update(stats["kl"], cfg.rollouts)
        seconds = time.time() - t0
        stats.update(iteration=it + 1, seconds=seconds, rollout_seconds=t_rollout,
                     tokens_per_s=float(batch.mask.sum()) * (1 + cfg.ppo_epochs) / seconds)
        logger.log(**stats)
        bar.set_postfix(score=f"{stats['score']:.2f}", kl=f"{stats['kl']:.2f}", len=f"{stats['response_length']:.0f}")
        done = it + 1
        if done % cfg.save_every == 0 or done == cfg.iterations:
            state = distributed.with_rank_states({
                "optimizer": optimizer.state_dict(), "kl_controller": kl_ctl.state_dict(), "iteration": done,
                "shuffle_generator": shuffle_gen.get_state(), "config": asdict(cfg)},
                {"rng": rng_state(), "generator": generator.get_state()})  # per rank
            if distributed.is_main():
                save_checkpoint(out, save_model, state)
        debug_kill_point(done)
    bar.close()

    logger.close()
    summary = {"iterations": cfg.iterations, "final_beta": kl_ctl.value}
    if distributed.is_main():
        write_dir_atomic(out / "model", save_model)
        if cfg.plot:
            from minirlaif.plots import plot_metrics

            plot_metrics(out / "metrics.jsonl", out / "curves.png")
        write_json_atomic(summary, out / "summary.json")
    print(f"PPO done; policy saved to {out / 'model'}")
    distributed.cleanup()
    return summary


if __name__ == "__main__":
    from minirlaif.utils import run_main

    run_main(lambda: main(parse_config(Config, __doc__.split("\n")[0])))
