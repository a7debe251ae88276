"""Step 1: supervised fine-tuning, instruction -> program, teacher-forced cross-entropy.

    loss = - (1 / #target tokens) * sum_t log pi(y_t | x, y_<t)     (target tokens only, EOS included)

    python train_sft.py                      # built-in data, tiny T5 from scratch, -> runs/sft
    python train_sft.py --data ../shared/gorilla --model Salesforce/codet5-large --device cuda
    python train_sft.py --resume             # continue after a kill, same final weights
    torchrun --nproc_per_node 4 train_sft.py # data parallel: global batch = --batch-size x 4 x --grad-accum
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from minirlaif import distributed, flags
from minirlaif.batching import chunks, pad_right
from minirlaif.checkpoint import resume_hint
from minirlaif.data.augment import value_swapped
from minirlaif.data.prompts import format_prompt, format_target
from minirlaif.data.splits import load_dataset, with_code
from minirlaif.errors import InputError, RunStopped
from minirlaif.generation import sample
from minirlaif.policy import autocast, count_parameters, load_policy, new_policy
from minirlaif.run import Run
from minirlaif.settings import DataSettings, ForwardSettings, RunSettings, TrainingSettings, default_for
from minirlaif.tokenizer import SentencePieceTokenizer, check_round_trip, load_tokenizer
from minirlaif.utils import field, parse_config, set_seed


@dataclass
class Config(RunSettings, TrainingSettings, ForwardSettings, DataSettings):
    """train_sft.py's flags: the shared groups (minirlaif/settings.py) and these."""

    out: str = default_for(RunSettings, "out", "runs/sft")
    eval_fraction: float = field(0.1, "held-out fraction when --data has no eval split", type=flags.fraction)
    model: str = field("", "a seq2seq (T5 family) or decoder-only (GPT-2, Llama, ...) model id or "
                                 "folder to fine-tune (default: --preset from scratch)")
    tokenizer: str = field("", "tokenizer id or folder (default: --model's own, or a new SentencePiece model)")
    preset: str = field("tiny", "architecture when --model is empty: T5 tiny, small, base; "
                                  "decoder-only gpt2-tiny, gpt2-small")
    vocab_size: int = field(2000, "SentencePiece vocabulary size when training our own tokenizer",
                            type=flags.int_at_least(100, 1_000_000))
    epochs: float = field(6.0, "passes over the training data (ignored when --max-steps > 0)",
                          type=flags.positive_float)
    max_steps: int = field(0, "optimizer steps; 0 = from --epochs", type=flags.count)
    batch_size: int = field(32, "examples per micro-batch (per process under torchrun)", type=flags.positive_int)
    grad_accum: int = field(1, "micro-batches per optimizer step", type=flags.positive_int)
    lr: float = field(2e-3, "peak learning rate (AdamW)", type=flags.positive_float)
    weight_decay: float = field(0.01, "AdamW weight decay", type=flags.nonnegative_float)
    warmup_steps: int = field(50, "linear warmup steps, then cosine decay to 10% of --lr", type=flags.count)
    grad_clip: float = field(1.0, "max global gradient norm", type=flags.positive_float)
    max_target_len: int = field(128, "decoder tokens (program + EOS) kept", type=flags.positive_int)
    with_api_call: bool = field(False, "target starts with '<<<api_call>>>: ...' before the program")
    limit_train: int = field(0, "use only the first N training records (0 = all)", type=flags.count)
    value_swap: float = field(0.0, "fraction of training records whose numbers shared by instruction and program "
                              "are swapped for random ones, so that copying them is learned (data/augment.py)",
                              type=flags.unit_interval)
    eval_every: int = field(200, "steps between eval-loss measurements", type=flags.positive_int)
    log_every: int = field(10, "steps between metrics.jsonl lines", type=flags.positive_int)
    samples: int = field(3, "greedy sample generations printed at the end", type=flags.count)

    def check(self) -> str | None:
        """Flags that are fine alone but not together (argparse reports it in one line)."""
        logits = self.batch_size * self.max_target_len * self.vocab_size
        return flags.too_big(f"--batch-size {self.batch_size} x --max-target-len {self.max_target_len} x "
                             f"--vocab-size {self.vocab_size} (one batch's logits and their gradient)", logits * 8)


def encode(records, tokenizer, cfg: Config, training: bool = False) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids) per record. Training pairs: a note on targets cut at --max-target-len, and
    an error when torchrun's global batch is larger than the data."""
    pairs = [(tokenizer(format_prompt(r), cfg.max_prompt_len),
              tokenizer(format_target(r, cfg.with_api_call), cfg.max_target_len)) for r in records]
    n_cut = sum(len(t) >= cfg.max_target_len for _, t in pairs)
    if training and n_cut:
        print(f"note: {n_cut} of {len(pairs)} training targets were cut at --max-target-len {cfg.max_target_len}")
    world = distributed.get_world_size()
    if training and world > 1 and len(pairs) < cfg.batch_size * world:
        raise InputError(f"{len(pairs)} training examples, fewer than the global batch "
                         f"(--batch-size {cfg.batch_size} x {world} processes); lower --batch-size")
    return pairs


def batch_loss(policy, pairs, pad_id, device) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the target tokens of a batch, and how many target tokens it had."""
    src, src_mask = pad_right([p for p, _ in pairs], pad_id, device)  # (B, S)
    tgt, tgt_mask = pad_right([t for _, t in pairs], pad_id, device)  # (B, T)
    with autocast(device):
        logits, _ = policy(src, src_mask, tgt)  # (B, T, V): position t has read the prompt and tgt_<t
    nll = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), reduction="none").view_as(tgt)  # (B, T)
    n_tokens = int(tgt_mask.sum())
    return (nll * tgt_mask).sum() / n_tokens, n_tokens


@torch.no_grad()
def eval_loss(policy, pairs, pad_id, device, batch_size: int) -> float:
    policy.eval()
    total, count = 0.0, 0
    for batch in chunks(distributed.shard(pairs), batch_size):  # each rank its slice (all of it in one process)
        loss, n = batch_loss(policy, batch, pad_id, device)
        total, count = total + loss.item() * n, count + n
    total, count = distributed.all_reduce_sum([total, count])
    policy.train()
    return total / max(count, 1)


def lr_at(step: int, cfg: Config, total: int) -> float:
    """Linear warmup for `warmup_steps`, then cosine decay from 1 to 0.1 (a multiplier of --lr)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def batch_indices(micro_step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """The examples of micro-batch `micro_step`: a fresh seeded permutation every epoch (drop last)."""
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(micro_step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000003 + epoch)).tolist()
    return perm[pos * batch_size : (pos + 1) * batch_size]


def tokenizer_and_model(cfg: Config, checkpoint, train_records, eval_records):
    """The checkpoint's tokenizer and model when resuming; else --model's (or --tokenizer's); else a
    SentencePiece tokenizer trained here (on rank 0) and a --preset model from scratch."""
    if checkpoint is not None:
        tokenizer, policy = load_tokenizer(checkpoint[0]), load_policy(checkpoint[0])
    elif cfg.model:
        tokenizer, policy = load_tokenizer(cfg.tokenizer or cfg.model), load_policy(cfg.model)
    else:
        if cfg.tokenizer:  # a given tokenizer for a model built from --preset
            tokenizer = load_tokenizer(cfg.tokenizer)
        else:
            corpus = [format_prompt(r) for r in train_records] + [format_target(r, cfg.with_api_call) for r in train_records]
            tokenizer = distributed.broadcast_object(  # trained once, on rank 0
                SentencePieceTokenizer.train(corpus, vocab_size=cfg.vocab_size) if distributed.is_main() else None)
        set_seed(cfg.seed)  # the model init must not depend on how much randomness the tokenizer used
        policy = new_policy(cfg.preset, tokenizer.vocab_size, tokenizer.pad_id, tokenizer.eos_id)
    tok_name = f"tokenizer {cfg.tokenizer or cfg.model or '(trained here)'} on --data {cfg.data}"
    check_round_trip(tokenizer, [r.code for r in train_records + eval_records], name=tok_name)
    if tokenizer.vocab_size > policy.config.vocab_size:
        raise InputError(f"{tok_name}: {tokenizer.vocab_size} tokens, more than the model's vocabulary "
                         f"({policy.config.vocab_size}); pass the --tokenizer that belongs to --model")
    return tokenizer, policy


def accumulate_gradients(model, train_pairs, step: int, cfg: Config, pad_id: int, device) -> tuple[float, int]:
    """zero_grad, then backward over --grad-accum micro-batches: the gradient of the step's token-mean loss.
    Returns (that loss, its target tokens). Under torchrun each rank takes its slice of every global
    micro-batch, weighted so DDP's mean over ranks is the global token mean (the weight is 1 in one process)."""
    world = distributed.get_world_size()
    model.zero_grad(set_to_none=True)
    step_loss, tokens = 0.0, 0
    for k in range(cfg.grad_accum):
        idx = batch_indices(step * cfg.grad_accum + k, len(train_pairs), cfg.batch_size * world, cfg.seed)
        with distributed.no_sync(model, skip=k < cfg.grad_accum - 1):  # DDP all-reduces after the last one
            loss, n = batch_loss(model, [train_pairs[i] for i in distributed.shard(idx)], pad_id, device)
            n_all = distributed.all_reduce_sum(n)  # target tokens of the micro-batch on every rank
            share = n * world / n_all
            (loss * share / cfg.grad_accum).backward()
        step_loss += loss.item() * share / cfg.grad_accum
        tokens += n_all
    return distributed.all_reduce_mean(step_loss), tokens


@torch.no_grad()
def print_samples(policy, tokenizer, records, cfg: Config, device) -> None:
    """Greedy programs for the first --samples eval instructions: what a user sees first."""
    policy.eval()
    for r in records[: cfg.samples]:
        src, src_mask = pad_right([tokenizer(format_prompt(r), cfg.max_prompt_len)], tokenizer.pad_id, device)
        s = sample(policy, src, src_mask, cfg.max_target_len, tokenizer.eos_id, tokenizer.pad_id, greedy=True)
        print(f"\n# instruction: {r.instruction}\n{tokenizer.decode(s.tokens[0].tolist())}")


def main(cfg: Config) -> dict:
    run = Run("train_sft.py", cfg)  # torchrun setup, run folder, seed
    device, world = run.device, run.world
    torch.set_float32_matmul_precision("high")

    # ---- data ----
    data = load_dataset(cfg.data, cfg.eval_data or None, cfg.api_db or None, cfg.eval_fraction, cfg.seed)
    train_records = with_code(data.train, "training")[: cfg.limit_train or None]
    if cfg.value_swap:  # before the tokenizer is trained: it must see the swapped numbers too
        train_records = value_swapped(train_records, cfg.value_swap, cfg.seed)
    eval_records = with_code(data.eval, "eval loss")
    if not train_records:
        raise InputError(f"--data {cfg.data}: no training records with reference code")

    # ---- tokenizer and model (fresh, or from the checkpoint when resuming) ----
    checkpoint = run.checkpoint()
    tokenizer, policy = tokenizer_and_model(cfg, checkpoint, train_records, eval_records)
    policy.to(device).train()
    policy.value_head.requires_grad_(False)  # SFT trains the language model; the (zero) value head is PPO's
    if cfg.grad_checkpointing:
        policy.gradient_checkpointing_enable()
    model = distributed.ddp(torch.compile(policy) if cfg.compile else policy, device)  # the training forward
    if world > 1:
        set_seed(cfg.seed + run.rank * 100003)  # each rank its own dropout noise (the init above is the same everywhere)

    train_pairs, eval_pairs = encode(train_records, tokenizer, cfg, training=True), encode(eval_records, tokenizer, cfg)
    steps_per_epoch = max(1, len(train_pairs) // (cfg.batch_size * world * cfg.grad_accum))
    total_steps = cfg.max_steps or max(1, int(cfg.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, cfg, total_steps))
    start = run.restore(checkpoint[1], optimizer, scheduler, lambda s: lr_at(s, cfg, total_steps)) if checkpoint else 0
    logger = run.logger(start)
    print(f"SFT: {len(train_pairs)} train / {len(eval_pairs)} eval examples, {count_parameters(policy):,} "
          f"parameters, vocab {tokenizer.vocab_size}, {total_steps} steps on {device}"
          + (f" x {world} processes" if world > 1 else ""))

    def save_model(directory: Path) -> None:
        policy.save_pretrained(directory, extra={"preset": cfg.model or cfg.preset, "stage": "sft"})
        tokenizer.save(directory)

    # ---- loop: teacher-forced cross-entropy on the target tokens ----
    t0, tokens_seen = time.time(), 0
    bar = run.progress(start, total_steps, "sft")
    for step in bar:
        loss, tokens = accumulate_gradients(model, train_pairs, step, cfg, tokenizer.pad_id, device)
        tokens_seen += tokens
        grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip))
        if not math.isfinite(loss) or not math.isfinite(grad_norm):
            raise RunStopped(f"step {step}: loss {loss} / grad norm {grad_norm} is not finite; {resume_hint(run.out)}")
        optimizer.step()
        scheduler.step()
        done = step + 1
        row = {"step": done, "loss": loss, "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm}
        if done % cfg.eval_every == 0 or done == total_steps:
            row["eval_loss"] = eval_loss(policy, eval_pairs, tokenizer.pad_id, device, cfg.batch_size)
        if done % cfg.log_every == 0 or "eval_loss" in row:
            logger.log(**row, tokens_per_s=tokens_seen / (time.time() - t0))
        bar.set_postfix(loss=f"{loss:.3f}", **({"eval": f"{row['eval_loss']:.3f}"} if "eval_loss" in row else {}))
        run.end_step(done, total_steps, save_model, {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
    bar.close()

    # ---- save and report ----
    final_eval = eval_loss(policy, eval_pairs, tokenizer.pad_id, device, cfg.batch_size)
    summary = {"eval_loss": final_eval, "steps": total_steps, "train_examples": len(train_pairs),
               "parameters": count_parameters(policy), "seconds": round(time.time() - t0, 1)}
    run.finish(save_model, summary)
    print(f"eval loss {final_eval:.4f} after {total_steps} steps; model saved to {run.out / 'model'}")
    if run.main:
        print_samples(policy, tokenizer, eval_records, cfg, device)
    return summary


if __name__ == "__main__":
    from minirlaif.utils import run_main

    run_main(lambda: main(parse_config(Config, __doc__.split("\n")[0])))
