"""Step 1: supervised fine-tuning, instruction -> program, teacher-forced cross-entropy.

    loss = - (1 / #target tokens) * sum_t log pi(y_t | x, y_<t)     (target tokens only, EOS included)

    python train_sft.py                      # built-in data, tiny T5 from scratch, -> runs/sft
    python train_sft.py --data ../shared/gorilla --model Salesforce/codet5-large --device cuda
    python train_sft.py --resume             # continue after a kill, same final weights
    torchrun --nproc_per_node 4 train_sft.py # data parallel: global batch = --batch-size x 4 x --grad-accum
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from minirlaif import distributed, flags
from minirlaif.batching import chunks, pad_right
from minirlaif.checkpoint import (claim_run_folder, load_checkpoint, restore_optimizer, resume_hint,
                                  save_checkpoint, write_dir_atomic)
from minirlaif.data.prompts import format_prompt, format_target
from minirlaif.data.splits import load_dataset, with_code
from minirlaif.errors import InputError, RunStopped
from minirlaif.generation import sample
from minirlaif.policy import Seq2SeqPolicy, count_parameters
from minirlaif.tokenizer import SentencePieceTokenizer, check_round_trip, load_tokenizer
from minirlaif.progress import progress_bar
from minirlaif.utils import (JsonlLogger, autocast, debug_kill_point, field, parse_config,
                             quiet_transformers, rng_state, set_rng_state, set_seed, write_json_atomic)


@dataclass
class Config:
    data: str = field("builtin", "'builtin' or a Gorilla APIBench file/folder")
    eval_data: str = field("", "separate eval file (default: the built-in eval split, or a held-out part)")
    api_db: str = field("", "API database file for --data files (Gorilla folders find their own)")
    eval_fraction: float = field(0.1, "held-out fraction when --data has no eval split", type=flags.fraction)
    model: str = field("", "a seq2seq model id or folder to fine-tune (default: --preset from scratch)")
    tokenizer: str = field("", "tokenizer id or folder (default: --model's own, or a new SentencePiece model)")
    preset: str = field("tiny", "architecture when --model is empty (tiny, small, base)")
    vocab_size: int = field(2000, "SentencePiece vocabulary size when training our own tokenizer",
                            type=flags.int_at_least(100, 1_000_000))
    out: str = field("runs/sft", "run folder: model/, checkpoint/, metrics.jsonl")
    overwrite: bool = field(False, "write into an --out folder this script did not make (its outputs there are "
                            "replaced, other files stay)")
    epochs: float = field(6.0, "passes over the training data (ignored when --max-steps > 0)",
                          type=flags.positive_float)
    max_steps: int = field(0, "optimizer steps; 0 = from --epochs", type=flags.count)
    batch_size: int = field(32, "examples per micro-batch (per process under torchrun)", type=flags.positive_int)
    grad_accum: int = field(1, "micro-batches per optimizer step", type=flags.positive_int)
    lr: float = field(2e-3, "peak learning rate (AdamW)", type=flags.positive_float)
    weight_decay: float = field(0.01, "AdamW weight decay", type=flags.nonnegative_float)
    warmup_steps: int = field(50, "linear warmup steps, then cosine decay to 10% of --lr", type=flags.count)
    grad_clip: float = field(1.0, "max global gradient norm", type=flags.positive_float)
    max_prompt_len: int = field(64, "encoder tokens (instruction) kept", type=flags.positive_int)
    max_target_len: int = field(128, "decoder tokens (program + EOS) kept", type=flags.positive_int)
    with_api_call: bool = field(False, "target starts with '<<<api_call>>>: ...' before the program")
    limit_train: int = field(0, "use only the first N training records (0 = all)", type=flags.count)
    eval_every: int = field(200, "steps between eval-loss measurements", type=flags.positive_int)
    save_every: int = field(100, "steps between resumable checkpoints", type=flags.positive_int)
    log_every: int = field(10, "steps between metrics.jsonl lines", type=flags.positive_int)
    samples: int = field(3, "greedy sample generations printed at the end", type=flags.count)
    seed: int = field(0, "seed for init, data order and dropout", type=flags.seed)
    device: str = field("auto", "auto, cpu, cuda, cuda:N", type=flags.device)
    compile: bool = field(False, "torch.compile the training forward pass (the first steps compile)")
    grad_checkpointing: bool = field(False, "recompute activations in backward: less memory, ~30% more compute")
    resume: bool = field(False, "continue from OUT/checkpoint")

    def check(self) -> str | None:
        """Flags that are fine alone but not together (argparse reports it in one line)."""
        logits = self.batch_size * self.max_target_len * self.vocab_size
        return flags.too_big(f"--batch-size {self.batch_size} x --max-target-len {self.max_target_len} x "
                             f"--vocab-size {self.vocab_size} (one batch's logits and their gradient)", logits * 8)


def encode(records, tokenizer, cfg: Config) -> list[tuple[list[int], list[int]]]:
    return [(tokenizer(format_prompt(r), cfg.max_prompt_len),
             tokenizer(format_target(r, cfg.with_api_call), cfg.max_target_len)) for r in records]


def batch_loss(policy, pairs, pad_id, device) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the target tokens of a batch, and how many target tokens it had."""
    src, src_mask = pad_right([p for p, _ in pairs], pad_id, device)  # (B, S)
    tgt, tgt_mask = pad_right([t for _, t in pairs], pad_id, device)  # (B, T)
    with autocast(device):
        logits, _ = policy(src, src_mask, distributed.unwrap(policy).decoder_inputs(tgt))  # (B, T, V)
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


def main(cfg: Config) -> dict:
    out = Path(cfg.out)
    rank, world, _, device = distributed.setup(cfg.device)  # (0, 1, 0, --device) unless launched by torchrun
    if distributed.is_main():
        claim_run_folder(out, "train_sft.py", {f.name for f in fields(Config)}, cfg.overwrite)
    quiet_transformers()
    set_seed(cfg.seed)
    torch.set_float32_matmul_precision("high")

    # ---- data ----
    data = load_dataset(cfg.data, cfg.eval_data or None, cfg.api_db or None, cfg.eval_fraction, cfg.seed)
    train_records = with_code(data.train, "training")
    eval_records = with_code(data.eval, "eval loss")
    if cfg.limit_train:
        train_records = train_records[: cfg.limit_train]
    if not train_records:
        raise InputError(f"--data {cfg.data}: no training records with reference code")

    # ---- tokenizer and model (fresh, or from the checkpoint when resuming) ----
    checkpoint = load_checkpoint(out) if cfg.resume else None
    if cfg.resume and checkpoint is None:
        print(f"--resume: no checkpoint in {out}, starting from scratch")
    if checkpoint is not None:
        tokenizer = load_tokenizer(checkpoint[0])
        policy = Seq2SeqPolicy.from_pretrained(checkpoint[0])
    elif cfg.model:
        tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
        policy = Seq2SeqPolicy.from_pretrained(cfg.model)
    else:
        if cfg.tokenizer:  # a given tokenizer for a model built from --preset
            tokenizer = load_tokenizer(cfg.tokenizer)
        else:
            corpus = [format_prompt(r) for r in train_records] + [format_target(r, cfg.with_api_call) for r in train_records]
            tokenizer = distributed.broadcast_object(  # trained once, on rank 0
                SentencePieceTokenizer.train(corpus, vocab_size=cfg.vocab_size) if distributed.is_main() else None)
        set_seed(cfg.seed)  # the model init must not depend on how much randomness the tokenizer used
        policy = Seq2SeqPolicy.from_preset(cfg.preset, tokenizer.vocab_size, tokenizer.pad_id, tokenizer.eos_id)
    tok_name = f"tokenizer {cfg.tokenizer or cfg.model or '(trained here)'} on --data {cfg.data}"
    check_round_trip(tokenizer, [r.code for r in train_records + eval_records], name=tok_name)
    if tokenizer.vocab_size > policy.config.vocab_size:
        raise InputError(f"{tok_name}: {tokenizer.vocab_size} tokens, more than the model's vocabulary "
                         f"({policy.config.vocab_size}); pass the --tokenizer that belongs to --model")
    policy.to(device).train()
    policy.value_head.requires_grad_(False)  # SFT trains the language model; the (zero) value head is PPO's
    if cfg.grad_checkpointing:
        policy.gradient_checkpointing_enable()
    model = distributed.ddp(torch.compile(policy) if cfg.compile else policy, device)  # the training forward
    if world > 1:
        set_seed(cfg.seed + rank * 100003)  # each rank its own dropout noise (the init above is the same everywhere)

    train_pairs, eval_pairs = encode(train_records, tokenizer, cfg), encode(eval_records, tokenizer, cfg)
    n_cut = sum(len(t) >= cfg.max_target_len for _, t in train_pairs)
    if n_cut:
        print(f"note: {n_cut} of {len(train_pairs)} training targets were cut at --max-target-len {cfg.max_target_len}")
    if world > 1 and len(train_pairs) < cfg.batch_size * world:
        raise InputError(f"{len(train_pairs)} training examples, fewer than the global batch "
                         f"(--batch-size {cfg.batch_size} x {world} processes); lower --batch-size")
    steps_per_epoch = max(1, len(train_pairs) // (cfg.batch_size * world * cfg.grad_accum))
    total_steps = cfg.max_steps or max(1, int(cfg.epochs * steps_per_epoch))

    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, cfg, total_steps))
    start_step = 0
    if checkpoint is not None:
        state = distributed.own_rank_state(checkpoint[1])
        restore_optimizer(state, optimizer, scheduler, cfg.lr, lambda s: lr_at(s, cfg, total_steps))
        set_rng_state(state["rng"])
        start_step = state["step"]
        print(f"resumed from {out}/checkpoint at step {start_step}")
    logger = JsonlLogger(out / "metrics.jsonl" if distributed.is_main() else os.devnull, start_step)  # rank 0 logs
    if distributed.is_main():
        write_json_atomic(asdict(cfg), out / "args.json")
    print(f"SFT: {len(train_pairs)} train / {len(eval_pairs)} eval examples, {count_parameters(policy):,} "
          f"parameters, vocab {tokenizer.vocab_size}, {total_steps} steps on {device}"
          + (f" x {world} processes" if world > 1 else ""))

    def save_model(directory: Path) -> None:
        policy.save_pretrained(directory, extra={"preset": cfg.model or cfg.preset, "stage": "sft"})
        tokenizer.save(directory)

    # ---- loop ----
    t0, tokens_seen = time.time(), 0
    bar = progress_bar(range(start_step, total_steps), initial=start_step, total=total_steps, desc="sft",
                       disable=not distributed.is_main())
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for k in range(cfg.grad_accum):
            # the global micro-batch (--batch-size x world examples); each rank takes its slice
            idx = batch_indices(step * cfg.grad_accum + k, len(train_pairs), cfg.batch_size * world, cfg.seed)
            with distributed.no_sync(model, skip=k < cfg.grad_accum - 1):  # DDP all-reduces after the last one
                loss, n = batch_loss(model, [train_pairs[i] for i in distributed.shard(idx)], tokenizer.pad_id, device)
                n_all = distributed.all_reduce_sum(n)  # target tokens of the micro-batch on every rank
                share = n * world / n_all  # 1 in one process; DDP's mean over ranks is then the global token mean
                (loss * share / cfg.grad_accum).backward()
            step_loss += loss.item() * share / cfg.grad_accum
            tokens_seen += n_all
        step_loss = distributed.all_reduce_mean(step_loss)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip))
        if not math.isfinite(step_loss) or not math.isfinite(grad_norm):
            raise RunStopped(f"step {step}: loss {step_loss} / grad norm {grad_norm} is not finite; "
                             f"{resume_hint(out)}")
        optimizer.step()
        scheduler.step()
        done = step + 1
        row = {"step": done, "loss": step_loss, "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm}
        if done % cfg.eval_every == 0 or done == total_steps:
            row["eval_loss"] = eval_loss(policy, eval_pairs, tokenizer.pad_id, device, cfg.batch_size)
        if done % cfg.log_every == 0 or "eval_loss" in row:
            logger.log(**row, tokens_per_s=tokens_seen / (time.time() - t0))
        bar.set_postfix(loss=f"{step_loss:.3f}", **({"eval": f"{row['eval_loss']:.3f}"} if "eval_loss" in row else {}))
        if done % cfg.save_every == 0 or done == total_steps:
            state = distributed.with_rank_states({"optimizer": optimizer.state_dict(), "step": done,
                                                  "scheduler": scheduler.state_dict(), "config": asdict(cfg)},
                                                 {"rng": rng_state()})  # per rank
            if distributed.is_main():
                save_checkpoint(out, save_model, state)
        debug_kill_point(done)
    bar.close()

    # ---- save and report ----
    final_eval = eval_loss(policy, eval_pairs, tokenizer.pad_id, device, cfg.batch_size)
    if distributed.is_main():
        write_dir_atomic(out / "model", save_model)
    summary = {"eval_loss": final_eval, "steps": total_steps, "train_examples": len(train_pairs),
               "parameters": count_parameters(policy), "seconds": round(time.time() - t0, 1)}
    if distributed.is_main():
        write_json_atomic(summary, out / "summary.json")
    print(f"eval loss {final_eval:.4f} after {total_steps} steps; model saved to {out / 'model'}")
    policy.eval()
    for r in eval_records[: cfg.samples if distributed.is_main() else 0]:
        src, src_mask = pad_right([tokenizer(format_prompt(r), cfg.max_prompt_len)], tokenizer.pad_id, device)
        s = sample(policy, src, src_mask, cfg.max_target_len, tokenizer.eos_id, tokenizer.pad_id, greedy=True)
        print(f"\n# instruction: {r.instruction}\n{tokenizer.decode(s.tokens[0].tolist())}")
    logger.close()
    distributed.cleanup()
    return summary


if __name__ == "__main__":
    from minirlaif.utils import run_main

    run_main(lambda: main(parse_config(Config, __doc__.split("\n")[0])))
