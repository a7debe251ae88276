"""Time per PPO iteration and peak memory with a decoder-only model (e.g. SmolLM2-135M) as policy + reference +
reward model, on the built-in instructions.

    .venv/bin/python -m minirlaif.offline_models export smollm2-135m models/smollm2-135m   # once
    .venv/bin/python bench/bench_decoder_only.py --model models/smollm2-135m                 # CPU, batch 8
    .venv/bin/python bench/bench_decoder_only.py --model models/smollm2-135m --device cuda   # bf16 autocast

One process holds the three models (the reward model is the same backbone with a fresh head: its numbers
do not matter for the timing) and runs `--iterations` PPO iterations of `--rollouts` built-in instructions:
ppo.rollout() (sampling with the KV cache, the reference pass, the reward model) and ppo.update()
(`--ppo-epochs` x minibatches, AdamW). Every response runs to `--new-tokens` (EOS is masked out while
sampling is not touched: the timing is of full-length responses). Reports seconds per rollout and per
update (the first iteration apart: it includes warm-up), the response tokens, and the peak memory: the
process's RSS high-water mark (VmHWM) on CPU, torch.cuda.max_memory_allocated on a GPU.
Writes bench/results/decoder_only_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def vm_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a decoder-only model folder (policy, reference and RM)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rollouts", type=int, default=8, help="prompts per iteration (the batch)")
    parser.add_argument("--minibatch", type=int, default=8)
    parser.add_argument("--ppo-epochs", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    import minirlaif.ppo as ppo
    from minirlaif.batching import pad_right
    from minirlaif.data.builtin import builtin_records
    from minirlaif.data.prompts import format_prompt
    from minirlaif.policy import count_parameters, load_policy
    from minirlaif.reward_model import RewardModel
    from minirlaif.tokenizer import load_tokenizer
    from minirlaif.utils import quiet_transformers

    quiet_transformers()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    tokenizer = load_tokenizer(args.model)
    policy = load_policy(args.model).to(device).eval()
    ref = load_policy(args.model).to(device).eval().requires_grad_(False)
    rm = RewardModel(load_policy(args.model).backbone, "mean").to(device).eval().requires_grad_(False)
    records = builtin_records("train")[: args.rollouts]
    ids, mask = pad_right([tokenizer(format_prompt(r), 64) for r in records], tokenizer.pad_id, device)
    cfg = ppo.PPOConfig(max_new_tokens=args.new_tokens, ppo_epochs=args.ppo_epochs, minibatch_size=args.minibatch)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6, weight_decay=0.0)
    generator = torch.Generator(device=device).manual_seed(0)
    never = -1  # an id no token has: no response stops early
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for it in range(args.iterations):
        sync()
        t0 = time.perf_counter()
        batch = ppo.rollout(policy, ref, rm, ids, mask, 0.05, cfg, never, tokenizer.pad_id, generator)
        sync()
        t1 = time.perf_counter()
        ppo.update(policy, optimizer, batch, cfg, generator)
        sync()
        t2 = time.perf_counter()
        rows.append({"iteration": it, "rollout_s": t1 - t0, "update_s": t2 - t1,
                     "response_tokens": int(batch.mask.sum())})
        print(f"iteration {it}: rollout {t1 - t0:.1f} s, update {t2 - t1:.1f} s, {rows[-1]['response_tokens']} tokens",
              flush=True)
    later = rows[1:] or rows
    result = {
        "model": str(args.model), "device": args.device, "threads": args.threads,
        "parameters_per_model": count_parameters(policy.backbone),
        "rollouts": args.rollouts, "minibatch": args.minibatch, "ppo_epochs": args.ppo_epochs,
        "new_tokens": args.new_tokens, "prompt_width": int(ids.shape[1]),
        "seconds_per_iteration": sum(r["rollout_s"] + r["update_s"] for r in later) / len(later),
        "rollout_seconds": sum(r["rollout_s"] for r in later) / len(later),
        "update_seconds": sum(r["update_s"] for r in later) / len(later),
        "peak_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else vm_hwm(),
        "peak_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "RSS high-water mark (VmHWM)",
        "iterations": rows,
    }
    print(f"{result['seconds_per_iteration']:.1f} s per iteration (rollout {result['rollout_seconds']:.1f} s, "
          f"update {result['update_seconds']:.1f} s), peak {result['peak_bytes'] / 2**30:.2f} GiB ({result['peak_kind']})")
    out = ROOT / "bench" / "results" / f"decoder_only_{device.type}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
