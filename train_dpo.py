"""Step 3 without a reward model and without sampling: DPO on the reward-model run's preference pairs.

    r(x, y) = beta * (log pi(y | x) - log pi_ref(y | x))                 (the implicit reward; pi_ref = SFT, frozen)
    loss    = mean over pairs of -log sigmoid(r(x, y_chosen) - r(x, y_rejected))      (Rafailov et al. 2023)

The pairs are the ones train_rm.py built from the judge's scores (OUT_rm/pairs.jsonl): the same AI feedback,
used offline. Held-out pairs (OUT_rm/heldout_pairs.jsonl) measure the implicit reward's pair accuracy.

    python train_dpo.py                       # pairs from runs/rm, policy and reference from runs/sft -> runs/dpo
    python train_dpo.py --resume              # continue after a kill
    torchrun --nproc_per_node 4 train_dpo.py  # data parallel: global batch = --batch-size x 4
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from minirlaif import distributed, flags
from minirlaif.batching import epoch_batch
from minirlaif.checkpoint import model_dir, resume_hint
from minirlaif.errors import InputError, RunStopped
from minirlaif.feedback.pairs import read_pairs
from minirlaif.losses import dpo_loss
from minirlaif.policy import autocast, load_policy
from minirlaif.ppo import PPOConfig, response_logprobs
from minirlaif.reward_model import encode_texts
from minirlaif.run import Run
from minirlaif.settings import DataSettings, ForwardSettings, RunSettings, SamplingSettings, TrainingSettings, default_for
from minirlaif.tokenizer import load_tokenizer
from minirlaif.utils import field, parse_config


@dataclass
class Config(RunSettings, TrainingSettings, ForwardSettings):
    """train_dpo.py's flags: the shared groups (minirlaif/settings.py) and these. No data flags: the pairs hold
    the instructions and programs; no temperature: log-probs are the policy's own (temperature 1)."""

    sft: str = field("runs/sft", "SFT run folder (or model folder): the initial policy and the frozen reference")
    rm: str = field("runs/rm", "reward-model run folder whose pairs.jsonl / heldout_pairs.jsonl are the data")
    out: str = default_for(RunSettings, "out", "runs/dpo")
    save_every: int = default_for(TrainingSettings, "save_every", 50)
    beta: float = field(0.1, "DPO beta: how far the implicit reward lets the policy move from the reference",
                        type=flags.positive_float)
    epochs: int = field(2, "passes over the training pairs", type=flags.positive_int)
    batch_size: int = field(32, "pairs per step (per process under torchrun)", type=flags.positive_int)
    lr: float = field(1e-5, "learning rate (AdamW, linear decay to 0); README: 1e-4 collapsed the default chain's model",
                      type=flags.positive_float)
    max_grad_norm: float = default_for(PPOConfig, "max_grad_norm", 1.0)
    max_prompt_len: int = default_for(DataSettings, "max_prompt_len", 64)
    max_new_tokens: int = default_for(SamplingSettings, "max_new_tokens", 128)


def read_pair_file(path: Path) -> list[tuple[str, str, str]]:
    if not path.exists():
        raise InputError(f"{path}: no such file; run train_rm.py first (its pairs are DPO's data), or pass --rm")
    return [(p.prompt, p.chosen, p.rejected) for p in read_pairs(path)]


def pair_logps(policy, tokenizer, pairs: list[tuple[str, str, str]], cfg: Config, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log pi(y | x) of the chosen and of the rejected responses (N,) each, one forward pass: rows
    [0, N) chosen, [N, 2N) rejected. Responses are encoded with their EOS, as the policy emits them."""
    prompts = [p for p, _, _ in pairs] * 2
    responses = [c for _, c, _ in pairs] + [r for _, _, r in pairs]
    ids, mask, tokens, tmask = encode_texts(tokenizer, prompts, responses, cfg.max_prompt_len, cfg.max_new_tokens,
                                            device)  # (2N, S) x 2, (2N, T) x 2
    with autocast(device):
        logps = response_logprobs(policy, ids, mask, tokens, tmask.float())[0].float().sum(1)  # (2N,)
    return logps[: len(pairs)], logps[len(pairs):]


def dpo_step_loss(model, ref_policy, tokenizer, pairs, cfg: Config, device) -> tuple[torch.Tensor, dict]:
    policy_chosen, policy_rejected = pair_logps(model, tokenizer, pairs, cfg, device)
    with torch.no_grad():
        ref_chosen, ref_rejected = pair_logps(ref_policy, tokenizer, pairs, cfg, device)
    return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, cfg.beta)


@torch.no_grad()
def heldout(policy, ref_policy, tokenizer, pairs, cfg: Config, device, batch: int = 64) -> dict[str, float]:
    """DPO loss and implicit-reward pair accuracy on held-out pairs (pair-weighted means)."""
    totals, n = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0}, 0
    for start in range(0, len(pairs), batch):
        part = pairs[start : start + batch]
        loss, stats = dpo_step_loss(policy, ref_policy, tokenizer, part, cfg, device)
        for key, value in (("loss", loss), ("accuracy", stats["accuracy"]), ("margin", stats["margin"])):
            totals[key] += float(value) * len(part)
        n += len(part)
    return {f"heldout_{k}": v / max(n, 1) for k, v in totals.items()}


def main(cfg: Config) -> dict:
    rm_dir = Path(cfg.rm)
    train_pairs = read_pair_file(rm_dir / "pairs.jsonl")  # bad input fails before the run folder is made
    test_pairs = read_pair_file(rm_dir / "heldout_pairs.jsonl")
    sft = model_dir(cfg.sft)
    run = Run("train_dpo.py", cfg)  # torchrun setup, run folder, seed
    device, world = run.device, run.world

    # ---- policy (trained, from SFT or the checkpoint) and reference (frozen SFT); dropout off in both ----
    tokenizer = load_tokenizer(sft)
    checkpoint = run.checkpoint()
    policy = load_policy(checkpoint[0] if checkpoint else sft).to(device).eval()
    policy.value_head.requires_grad_(False)  # DPO trains the language model only
    ref_policy = load_policy(sft).to(device).eval().requires_grad_(False)
    if cfg.grad_checkpointing:
        policy.gradient_checkpointing_enable()
    model = distributed.ddp(torch.compile(policy) if cfg.compile else policy, device)
    steps_per_epoch = len(train_pairs) // (cfg.batch_size * world) if world > 1 else math.ceil(len(train_pairs) / cfg.batch_size)
    if steps_per_epoch == 0:
        raise InputError(f"{rm_dir / 'pairs.jsonl'}: {len(train_pairs)} pairs, fewer than the global batch "
                         f"(--batch-size {cfg.batch_size} x {world} processes); lower --batch-size")
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / total_steps)
    start = run.restore(checkpoint[1], optimizer, scheduler, lambda s: 1.0 - s / total_steps) if checkpoint else 0
    logger = run.logger(start)
    print(f"DPO: {len(train_pairs)} training pairs, {len(test_pairs)} held out, beta {cfg.beta}, {total_steps} steps "
          f"on {device}" + (f" x {world} processes" if world > 1 else ""))

    def save_model(directory: Path) -> None:
        policy.save_pretrained(directory, extra={"stage": "dpo"})
        tokenizer.save(directory)

    # ---- loop: the DPO loss on a seeded shuffle of the pairs each epoch ----
    bar = run.progress(start, total_steps, "dpo")
    for step in bar:
        batch = [train_pairs[i] for i in distributed.shard(epoch_batch(step, steps_per_epoch, len(train_pairs),
                                                                       cfg.batch_size * world, cfg.seed))]
        loss, stats = dpo_step_loss(model, ref_policy, tokenizer, batch, cfg, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        values = distributed.all_reduce_mean([loss.item(), *(float(v) for v in stats.values()), float(grad_norm)])
        row = dict(zip(["loss", *stats, "grad_norm"], values))
        if not math.isfinite(row["loss"]):
            raise RunStopped(f"step {step}: DPO loss is {row['loss']}; {resume_hint(run.out)}")
        logger.log(step=step + 1, lr=scheduler.get_last_lr()[0], **row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.2f}", margin=f"{row['margin']:.2f}")
        run.end_step(step + 1, total_steps, save_model, {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
    bar.close()

    summary = {"steps": total_steps, "train_pairs": len(train_pairs), "beta": cfg.beta,
               **(heldout(policy, ref_policy, tokenizer, test_pairs, cfg, device) if run.main and test_pairs else {})}
    run.finish(save_model, summary)
    if run.main:
        print(f"DPO done: held-out pair accuracy of the implicit reward {summary.get('heldout_accuracy', float('nan')):.3f}; "
              f"policy saved to {run.out / 'model'}")
    return summary


if __name__ == "__main__":
    from minirlaif.utils import run_main

    run_main(lambda: main(parse_config(Config, __doc__.split("\n")[0])))
