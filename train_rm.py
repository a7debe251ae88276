"""Step 2: AI feedback -> preference pairs -> Bradley-Terry reward model.

    1. sample k programs per training instruction from the SFT policy        -> OUT/samples.jsonl
    2. a judge answers 8 yes/no questions about each; score = weighted P(good) -> OUT/scored.jsonl
       (every answer cached in OUT/feedback/cache.jsonl as it arrives)
    3. pairs (chosen, rejected) whose score gap exceeds --margin             -> OUT/pairs.jsonl
    4. reward model = SFT backbone + scalar head on the mean decoder state (--pooling), trained with
       loss = mean over pairs of -log sigmoid(r(x, y_chosen) - r(x, y_rejected))
    5. normalise: reward = gain * raw + bias, mean 0 / std 1 on the training responses

    python train_rm.py                                   # analyzer judge (offline), built-in data
    python train_rm.py --judge openai --judge-model gpt-3.5-turbo          # key from OPENAI_API_KEY
    python train_rm.py --judge openai --judge-base-url http://127.0.0.1:8000/v1 --judge-model my-llm
    python train_rm.py --resume                          # every stage picks up where it stopped
    torchrun --nproc_per_node 4 train_rm.py              # data parallel sampling and RM training (rank 0 judges)
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from minirlaif import distributed, flags
from minirlaif.batching import epoch_batch
from minirlaif.checkpoint import model_dir, resume_hint
from minirlaif.data.prompts import extract_program, format_prompt
from minirlaif.data.splits import load_dataset, with_code
from minirlaif.errors import InputError, RunStopped
from minirlaif.feedback import (FeedbackCache, Item, JudgeError, Pair, ScoredSample, build_judge, build_pairs, label,
                                parse_weights, score_stats, write_pairs, write_scored_samples)
from minirlaif.feedback.variants import api_variant_items, same_domain_alternatives, variant_items
from minirlaif.generation import generate_texts
from minirlaif.jsonl import read_jsonl
from minirlaif.losses import bradley_terry_accuracy, bradley_terry_loss, pointwise_bce_loss
from minirlaif.policy import autocast, load_policy
from minirlaif.progress import progress_bar
from minirlaif.reward_model import RewardModel, encode_texts, score_texts
from minirlaif.run import Run
from minirlaif.settings import DataSettings, JudgeSettings, RunSettings, SamplingSettings, TrainingSettings, default_for
from minirlaif.tokenizer import load_tokenizer
from minirlaif.utils import debug_kill_at, field, parse_config, set_seed


@dataclass
class Config(RunSettings, TrainingSettings, DataSettings, SamplingSettings, JudgeSettings):
    """train_rm.py's flags: the shared groups (minirlaif/settings.py) and these."""

    sft: str = field("runs/sft", "SFT run folder (or model folder): the sampler and the RM's initialisation")
    out: str = default_for(RunSettings, "out", "runs/rm")
    save_every: int = default_for(TrainingSettings, "save_every", 50)
    prompts: int = field(1000, "training instructions to sample for (0 = all)", type=flags.count)
    k: int = field(4, "programs sampled per instruction", type=flags.positive_int)
    margin: float = field(0.1, "minimum score gap for a preference pair", type=flags.nonnegative_float)
    pair_strategy: str = field("all", "best_worst (one pair per prompt) or all (every pair over the margin)",
                               choices=["best_worst", "all"])
    heldout_fraction: float = field(0.1, "prompts held out to measure pair accuracy and correlation",
                                    type=flags.fraction)
    rm_loss: str = field("bt", "bt (Bradley-Terry on pairs) or bce (pointwise: score >= --bce-threshold)",
                         choices=["bt", "bce"])
    bce_threshold: float = field(0.99, "score at or above which a program counts as acceptable (bce mode)",
                                 type=flags.finite_float)
    pooling: str = field("mean", "where the reward head reads the decoder: mean (over the response's tokens) or eos "
                         "(its last token); README: held-out pair accuracy 0.748 (mean) vs 0.629 (eos, lr 1e-3) on the default run",
                         choices=["eos", "mean"])
    epochs: int = field(6, "passes over the training pairs", type=flags.positive_int)
    batch_size: int = field(32, "pairs (or samples, bce mode) per step (per process under torchrun)",
                            type=flags.positive_int)
    lr: float = field(5e-4, "learning rate (AdamW, linear decay to 0)", type=flags.positive_float)
    arg_variants: int = field(0, "per training sample the judge found right on its arguments: this many copies "
                              "with one literal changed, judged, each paired against it (0 = none)", type=flags.count)
    api_variants: int = field(0, "per training sample the judge found calling a fitting API: up to this many copies "
                              "with that API swapped for another of its domain and module, judged, each paired "
                              "against it (0 = none)", type=flags.count)

    def check(self) -> str | None:
        """Flags that are fine alone but not together (argparse reports it in one line)."""
        if self.k < 2 and self.rm_loss == "bt":
            return f"--k {self.k} gives no preference pairs for --rm-loss bt: use --k 2 or more, or --rm-loss bce"
        tokens = self.k * max(self.prompts, 1) * (self.max_prompt_len + self.max_new_tokens)
        return flags.too_big(f"--k {self.k} x --prompts {self.prompts} (the samples' {tokens:,} tokens)",
                             tokens * flags.ROLLOUT_BYTES_PER_TOKEN)


# ---- stage 1: sampling ------------------------------------------------------------------------------
def sample_stage(cfg: Config, records, out: Path, device) -> list[dict]:
    """k samples per record, written chunk by chunk so a killed run keeps what it finished."""
    path = out / "samples.jsonl"
    done = [row for _, row in read_jsonl(path, drop_torn_tail=True)] if cfg.resume and path.exists() else []  # a torn tail is dropped
    counts = Counter(r["index"] for r in done)
    n_done = 0  # records 0..n_done-1 have all k samples on disk
    while counts.get(n_done, 0) == cfg.k:
        n_done += 1
    done = [r for r in done if r["index"] < n_done]
    distributed.barrier()  # every rank has read the file before rank 0 rewrites it
    if distributed.is_main():
        with open(path, "w", encoding="utf-8") as f:  # rewrite what is complete, drop a torn tail
            f.writelines(json.dumps(r) + "\n" for r in done)
    if n_done == len(records):
        print(f"sampled {len(done)} programs for {len(records)} instructions (all on disk already)")
        return done
    t0 = time.time()
    sft = model_dir(cfg.sft)
    policy = load_policy(sft).to(device).eval()
    tokenizer = load_tokenizer(sft)
    chunk = 64
    bar = progress_bar(total=len(records), initial=n_done, desc="sampling", unit="prompt",
                       disable=not distributed.is_main())
    rows = list(done)
    world = distributed.get_world_size()
    for first in range(n_done - n_done % chunk, len(records), chunk * world):  # under torchrun one chunk per rank
        start = first + distributed.get_rank() * chunk
        part = records[start : start + chunk]  # empty past the end
        # Seeded per chunk: a resumed run samples exactly what an uninterrupted one would.
        generator = torch.Generator(device=device).manual_seed(cfg.seed * 100003 + start)
        prompts = [format_prompt(r) for r in part for _ in range(cfg.k)]
        texts = generate_texts(policy, tokenizer, prompts, cfg.max_prompt_len, cfg.max_new_tokens,
                               cfg.temperature, batch_size=64, generator=generator)
        new = [{"index": start + i // cfg.k, "prompt": prompts[i], "response": t} for i, t in enumerate(texts)
               if start + i // cfg.k >= n_done]
        new = [r for part_rows in distributed.all_gather_object(new) for r in part_rows]  # every rank's, in order
        if distributed.is_main():
            with open(path, "a", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in new)
                f.flush()
        rows.extend(new)
        bar.update(min(first + chunk * world, len(records)) - max(first, n_done))
        debug_kill_at("sample", first // chunk + world)
    bar.close()
    print(f"sampled {len(rows)} programs for {len(records)} instructions ({time.time() - t0:.0f}s)")
    return rows


# ---- stage 2: judge ----------------------------------------------------------------------------------
def judge_stage(cfg: Config, data, records, rows: list[dict], weights: dict[str, float], out: Path,
                device, cache: FeedbackCache) -> tuple[list[ScoredSample], list, str]:
    """Every sample scored by the judge (answers cached one by one): (scored samples, variants
    (--arg-variants, --api-variants), judge name)."""
    try:
        judge = build_judge(cfg, data, device)
        items = [Item(records[r["index"]].instruction, records[r["index"]].api_data, extract_program(r["response"]),
                      records[r["index"]]) for r in rows]
        feedbacks = label(judge, items, weights=weights, cache=cache, workers=cfg.judge_workers)
        samples = [ScoredSample(r["prompt"], r["response"], fb.score, fb, {"index": r["index"]})
                   for r, fb in zip(rows, feedbacks)]
        variants = variant_stage(cfg, judge, data, records, samples, weights, cache)
    except JudgeError as e:
        raise RunStopped(f"{e}; the samples and every answer received so far are kept in {out}: fix the judge "
                         "and rerun with the same arguments plus --resume (cached answers are not asked again)") from None
    finally:
        cache.close()
    write_scored_samples(samples, out / "scored.jsonl")
    if variants:
        write_scored_samples([v for _, v in variants], out / "variants.jsonl")
    return samples, variants, judge.name


def variant_stage(cfg: Config, judge, data, records, samples: list[ScoredSample], weights: dict[str, float],
                  cache: FeedbackCache) -> list[tuple[ScoredSample, ScoredSample]]:
    """--arg-variants / --api-variants: (sample, its copy with one literal changed or its API swapped, judged)
    for each sample the judge found right on its arguments / calling a fitting API (feedback/variants.py)."""
    def judged_yes(s: ScoredSample, qid: str) -> bool:
        return any(a.question_id == qid and a.p_good >= 0.5 for a in s.feedback.answers)

    found = []  # (original sample, variant program)
    if cfg.arg_variants:
        right = [s for s in samples if judged_yes(s, "api_args")]
        found += [(right[i], v) for i, v in variant_items([s.response for s in right], cfg.arg_variants, cfg.seed)]
        print(f"{len(found)} argument variants of the {len(right)} samples with the right arguments")
    if cfg.api_variants:
        fits = [s for s in samples if judged_yes(s, "api_fits")]
        gold = [records[s.meta["index"]].api_data for s in fits]
        apis = [(g.get("api_name", ""), same_domain_alternatives(data.api_database, g)) for g in gold]
        api_found = api_variant_items([s.response for s in fits], apis, cfg.api_variants, cfg.seed)
        found += [(fits[i], v) for i, v in api_found]
        print(f"{len(api_found)} API variants of the {len(fits)} samples calling a fitting API")
    if not found:
        return []
    items = [Item(records[s.meta["index"]].instruction, records[s.meta["index"]].api_data, extract_program(v),
                  records[s.meta["index"]]) for s, v in found]
    feedbacks = label(judge, items, weights=weights, cache=cache, workers=cfg.judge_workers)
    return [(s, ScoredSample(s.prompt, v, fb.score, fb, {**s.meta, "variant": True}))
            for (s, v), fb in zip(found, feedbacks)]


# ---- stage 4: reward model --------------------------------------------------------------------------
def batch_loss(model, tokenizer, batch: list[tuple], cfg: Config, device) -> tuple[torch.Tensor, float]:
    """The reward model's loss and accuracy on a batch: Bradley-Terry on (prompt, chosen, rejected)
    triples, or pointwise BCE on (prompt, response, label) with --rm-loss bce. Raw rewards (no
    normalisation: it is fitted after training)."""
    if cfg.rm_loss == "bt":
        # chosen and rejected in one forward pass: rows [0, n) chosen, [n, 2n) rejected
        prompts_, responses_ = [b[0] for b in batch] * 2, [b[1] for b in batch] + [b[2] for b in batch]
    else:
        prompts_, responses_ = [b[0] for b in batch], [b[1] for b in batch]
    with autocast(device):
        r = model(*encode_texts(tokenizer, prompts_, responses_, cfg.max_prompt_len, cfg.max_new_tokens, device),
                  normalise=False).float()
    if cfg.rm_loss == "bt":
        chosen, rejected = r[: len(batch)], r[len(batch):]
        return bradley_terry_loss(chosen, rejected), float(bradley_terry_accuracy(chosen, rejected))
    labels = torch.tensor([b[2] for b in batch], device=device)
    return pointwise_bce_loss(r, labels), float(((r > 0).float() == labels).float().mean())


def rewards_of(model: RewardModel, tokenizer, prompts, responses, cfg, device, raw=False) -> torch.Tensor:
    return score_texts(model, tokenizer, prompts, responses, cfg.max_prompt_len, cfg.max_new_tokens, device, raw)


def pearson(x: list[float], y: list[float]) -> float:
    n = len(x)
    if n < 2:
        return float("nan")
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def split_and_pair(samples: list[ScoredSample], variants: list[tuple[ScoredSample, ScoredSample]], cfg: Config,
                   out: Path | None):
    """A seeded --heldout-fraction of the prompts is held out; pairs are built within each part (and written
    to `out`, on rank 0), plus (sample, variant) pairs whose score gap exceeds --margin: those of training
    prompts train, those of held-out prompts measure (pairs that differ only in an argument's value or the API).
    Returns (train samples, held-out samples, train pairs, held-out pairs, held-out variant pairs)."""
    prompts = sorted({s.prompt for s in samples})
    random.Random(cfg.seed + 1).shuffle(prompts)
    heldout = set(prompts[: max(1, int(len(prompts) * cfg.heldout_fraction))])
    train_samples = [s for s in samples if s.prompt not in heldout]
    test_samples = [s for s in samples if s.prompt in heldout]
    train_pairs = build_pairs(train_samples, cfg.margin, cfg.pair_strategy)
    variant_pairs = [Pair(s.prompt, s.response, v.response, s.score, v.score) for s, v in variants
                     if s.score - v.score > cfg.margin]
    train_pairs += [p for p in variant_pairs if p.prompt not in heldout]
    test_pairs = build_pairs(test_samples, cfg.margin, "all")
    test_variant_pairs = [p for p in variant_pairs if p.prompt in heldout]
    if out is not None:
        write_pairs(train_pairs, out / "pairs.jsonl")
        write_pairs(test_pairs, out / "heldout_pairs.jsonl")
        if variants:
            write_pairs(test_variant_pairs, out / "heldout_variant_pairs.jsonl")
    stats = score_stats(samples, cfg.margin)
    print(f"judge scores: {json.dumps({k: v for k, v in stats.items() if not isinstance(v, (list, dict))})}")
    print(f"{len(train_pairs)} training pairs, {len(test_pairs)} held-out pairs"
          + (f", {len(test_variant_pairs)} held-out variant pairs" if variants else ""))
    if cfg.rm_loss == "bt" and not train_pairs:
        raise InputError("no preference pairs: every sample scored alike; lower --margin, raise --k or --temperature")
    return train_samples, test_samples, train_pairs, test_pairs, test_variant_pairs


def pair_accuracy(model: RewardModel, tokenizer, pairs, cfg: Config, device) -> float:
    """The fraction of pairs whose chosen response the reward model scores higher (nan without pairs)."""
    if not pairs:
        return float("nan")
    rc = rewards_of(model, tokenizer, [p.prompt for p in pairs], [p.chosen for p in pairs], cfg, device)
    rr = rewards_of(model, tokenizer, [p.prompt for p in pairs], [p.rejected for p in pairs], cfg, device)
    return float(bradley_terry_accuracy(rc, rr))


def normalise_and_measure(model: RewardModel, tokenizer, train_samples, test_samples, test_pairs, cfg: Config,
                          device) -> tuple[float, float]:
    """Fit reward = gain * raw + bias to mean 0 / std 1 on the training responses; then the held-out pair
    accuracy and the Pearson correlation of the reward with the judge's score on held-out samples."""
    model.fit_normalisation(rewards_of(model, tokenizer, [s.prompt for s in train_samples],
                                       [s.response for s in train_samples], cfg, device, raw=True))
    heldout_acc = pair_accuracy(model, tokenizer, test_pairs, cfg, device)
    test_rewards = rewards_of(model, tokenizer, [s.prompt for s in test_samples], [s.response for s in test_samples],
                              cfg, device)
    return heldout_acc, pearson(test_rewards.tolist(), [s.score for s in test_samples])


def training_examples(train_pairs, train_samples, cfg: Config, world: int) -> tuple[list[tuple], int]:
    """(prompt, chosen, rejected) per pair, or (prompt, response, 0/1 label) per sample with --rm-loss bce;
    and the steps per epoch (under torchrun: full global batches of --batch-size x processes only)."""
    if cfg.rm_loss == "bt":
        examples = [(p.prompt, p.chosen, p.rejected) for p in train_pairs]
    else:
        examples = [(s.prompt, s.response, float(s.score >= cfg.bce_threshold)) for s in train_samples]
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size) if world == 1 else len(examples) // (cfg.batch_size * world)
    if steps_per_epoch == 0:
        raise InputError(f"{len(examples)} training examples, fewer than the global batch (--batch-size "
                         f"{cfg.batch_size} x {world} processes); lower --batch-size")
    return examples, steps_per_epoch


def main(cfg: Config) -> dict:
    weights = parse_weights(cfg.weights)  # a bad --weights or --sft fails before any work
    sft = model_dir(cfg.sft)
    run = Run("train_rm.py", cfg, timeout_minutes=24 * 60)  # the other ranks may wait hours for rank 0's judge
    device, world, out = run.device, run.world, run.out
    # opened (and locked) before any work: a second run on this folder stops here; rank 0 alone judges
    cache = FeedbackCache(out / "feedback" / "cache.jsonl") if run.main else None
    t0 = time.time()

    # ---- data: a seeded choice of --prompts training instructions ----
    data = load_dataset(cfg.data, cfg.eval_data or None, cfg.api_db or None, seed=cfg.seed)
    records = with_code(data.train, "reward-model sampling")
    random.Random(cfg.seed).shuffle(records)
    records = records[: cfg.prompts or None]

    # ---- 1. sample, 2. judge (every answer cached; under torchrun rank 0 asks, the others wait for its scores) ----
    rows = sample_stage(cfg, records, out, device)
    samples, variants, judge_name = distributed.broadcast_object(
        judge_stage(cfg, data, records, rows, weights, out, device, cache) if run.main else None)

    # ---- 3. pairs, split by prompt ----
    train_samples, test_samples, train_pairs, test_pairs, test_variant_pairs = split_and_pair(
        samples, variants, cfg, out if run.main else None)

    # ---- 4. train the reward model: Bradley-Terry on the pairs (or pointwise BCE) ----
    tokenizer = load_tokenizer(sft)
    checkpoint = run.checkpoint()
    set_seed(cfg.seed)  # the head's init and dropout must not depend on which stages this run did (resume skips some)
    model = RewardModel.from_pretrained(checkpoint[0] if checkpoint else sft, cfg.pooling).to(device).train()
    train_model = distributed.ddp(model, device, find_unused_parameters=True)  # an untied LM head gets no gradient
    examples, steps_per_epoch = training_examples(train_pairs, train_samples, cfg, world)
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / total_steps)
    start = run.restore(checkpoint[1], optimizer, scheduler, lambda s: 1.0 - s / total_steps) if checkpoint else 0
    if checkpoint is None and world > 1:
        set_seed(cfg.seed + run.rank * 100003)  # each rank its own dropout noise (the init above is the same everywhere)
    logger = run.logger(start)

    def save_model(directory: Path) -> None:
        model.save_pretrained(directory)
        tokenizer.save(directory)

    bar = run.progress(start, total_steps, f"reward model ({cfg.rm_loss})")
    for step in bar:
        batch = [examples[i] for i in distributed.shard(epoch_batch(step, steps_per_epoch, len(examples), cfg.batch_size * world, cfg.seed))]
        loss, acc = batch_loss(train_model, tokenizer, batch, cfg, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        loss_value, acc = distributed.all_reduce_mean([loss.item(), acc])  # over the global batch
        if not math.isfinite(loss_value):
            raise RunStopped(f"step {step}: reward-model loss is {loss_value}; {resume_hint(out)}")
        logger.log(step=step + 1, loss=loss_value, accuracy=acc, lr=scheduler.get_last_lr()[0])
        bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{acc:.2f}")
        run.end_step(step + 1, total_steps, save_model, {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
    bar.close()
    model.eval()
    if not run.main:  # rank 0 normalises, measures and saves
        run.finish()
        return {}

    # ---- 5. normalise on the training responses, 6. measure on held-out prompts ----
    heldout_acc, corr = normalise_and_measure(model, tokenizer, train_samples, test_samples, test_pairs, cfg, device)
    summary = {"heldout_pair_accuracy": heldout_acc, "heldout_pearson_reward_vs_judge": corr,
               "train_pairs": len(train_pairs), "heldout_pairs": len(test_pairs), "samples": len(samples),
               "judge": judge_name, "score_stats": score_stats(samples, cfg.margin), "rm_loss": cfg.rm_loss,
               "seconds": round(time.time() - t0, 1)}
    if variants:  # how well it ranks a right program above the same with one value (or the API) changed
        summary["heldout_variant_pair_accuracy"] = pair_accuracy(model, tokenizer, test_variant_pairs, cfg, device)
        summary["heldout_variant_pairs"] = len(test_variant_pairs)
    run.finish(save_model, summary)
    print(f"reward model: held-out pair accuracy {heldout_acc:.3f}, Pearson(reward, judge score) {corr:.3f} "
          f"on {len(test_samples)} held-out samples"
          + (f"; variant pairs {summary['heldout_variant_pair_accuracy']:.3f} "
             f"({len(test_variant_pairs)})" if variants else "") + f"; saved to {out / 'model'}")
    return summary


if __name__ == "__main__":
    from minirlaif.utils import run_main

    run_main(lambda: main(parse_config(Config, __doc__.split("\n")[0])))
