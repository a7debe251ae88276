"""Peak memory (RSS high-water mark) of each training stage on CPU, plus a GPU estimate for codet5-large.

    .venv/bin/python bench/bench_memory.py                       # presets tiny and small
    .venv/bin/python bench/bench_memory.py --presets tiny --new-tokens 64

Each stage runs in a fresh process (the kernel's VmHWM in /proc/self/status only ever grows, so one
process per stage is what isolates them); the stage does two full steps so AdamW's moments exist:
  sft   policy + train_sft.batch_loss + backward + clip + AdamW, batch 32, prompts ~20 / targets ~36
  rm    RewardModel.raw_reward on 32 chosen + 32 rejected rows + Bradley-Terry loss + backward + AdamW
  ppo   policy (+ value head) + reference policy + reward model loaded at once; ppo.rollout() of
        --rollouts x --new-tokens (real RM forward) + ppo.update() (ppo_epochs x minibatches)
Reported: RSS after `import torch, transformers, minirlaif` (baseline), peak RSS (VmHWM), their
difference, and the parameter bytes of the models the stage holds. Random token ids, vocab --vocab.
Then the GPU estimate (formula in bench/README_ppo.md) is printed and saved with the measurements.
Writes bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
PAD_ID, EOS_ID = 0, 1
MiB = 2**20
GB, GiB = 1e9, 2**30


def proc_status(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def run_stage(stage: str, preset: str, args) -> dict:
    import torch

    from minirlaif.policy import Seq2SeqPolicy, count_parameters
    from minirlaif.reward_model import RewardModel
    from minirlaif.utils import quiet_transformers

    quiet_transformers()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    from bench_flops import random_pairs

    from transformers import T5ForConditionalGeneration  # noqa: F401  (imported before the baseline)

    baseline = proc_status("VmRSS")
    extra: dict = {}
    pairs = random_pairs(32, 20, 36, args.vocab, g)
    t0 = time.time()
    if stage == "sft":
        from train_sft import batch_loss

        policy = Seq2SeqPolicy.from_preset(preset, args.vocab, PAD_ID, EOS_ID).train()
        models = [policy]
        opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
        for _ in range(2):
            opt.zero_grad(set_to_none=True)
            loss, _ = batch_loss(policy, pairs, PAD_ID, "cpu")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
    elif stage == "rm":
        from minirlaif.batching import pad_right
        from minirlaif.losses import bradley_terry_loss

        rm = RewardModel(Seq2SeqPolicy.from_preset(preset, args.vocab, PAD_ID, EOS_ID).backbone).train()
        models = [rm]
        opt = torch.optim.AdamW(rm.parameters(), lr=1e-4)
        rejected = random_pairs(32, 20, 36, args.vocab, g)
        src, src_mask = pad_right([p for p, _ in pairs] * 2, PAD_ID)
        tgt, tgt_mask = pad_right([t for _, t in pairs] + [t for _, t in rejected], PAD_ID)
        for _ in range(2):
            r = rm.raw_reward(src, src_mask, tgt, tgt_mask)
            loss = bradley_terry_loss(r[:32], r[32:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
            opt.step()
    elif stage == "ppo":
        import minirlaif.ppo as ppo
        from minirlaif.batching import pad_right

        policy = Seq2SeqPolicy.from_preset(preset, args.vocab, PAD_ID, EOS_ID).eval()
        ref = Seq2SeqPolicy.from_preset(preset, args.vocab, PAD_ID, EOS_ID).eval()
        rm = RewardModel(Seq2SeqPolicy.from_preset(preset, args.vocab, PAD_ID, EOS_ID).backbone).eval()
        for m in (ref, rm):
            for p in m.parameters():
                p.requires_grad_(False)
        models = [policy, ref, rm]
        opt = torch.optim.AdamW(policy.parameters(), lr=1e-6, weight_decay=0.0)
        cfg = ppo.PPOConfig(max_new_tokens=args.new_tokens, ppo_epochs=args.ppo_epochs, minibatch_size=args.minibatch)
        prompts = [p for p, _ in random_pairs(args.rollouts, 20, 2, args.vocab, g)]
        ids, mask = pad_right(prompts, PAD_ID)
        gen = torch.Generator().manual_seed(0)
        batch = ppo.rollout(policy, ref, rm, ids, mask, 0.05, cfg, EOS_ID, PAD_ID, gen)
        extra["peak_rss_after_first_rollout"] = proc_status("VmHWM")  # rollout only: sampling, ref pass, RM
        ppo.update(policy, opt, batch, cfg, gen)
        batch = ppo.rollout(policy, ref, rm, ids, mask, 0.05, cfg, EOS_ID, PAD_ID, gen)
        ppo.update(policy, opt, batch, cfg, gen)
        extra["response_tokens"] = int(batch.mask.sum())
    else:
        raise ValueError(stage)
    param_bytes = sum(p.numel() * p.element_size() for m in models for p in m.parameters())
    return {"stage": stage, "preset": preset, "baseline_rss": baseline, "peak_rss": proc_status("VmHWM"),
            "peak_minus_baseline": proc_status("VmHWM") - baseline, "param_bytes": param_bytes,
            "parameters": sum(count_parameters(m) for m in models), "seconds": time.time() - t0, **extra}


def gpu_estimate(params: float = 770e6, d: int = 1024, d_ff: int = 4096, heads: int = 16, layers: int = 24,
                 vocab: int = 32100, minibatch: int = 16, rollouts: int = 64, prompt: int = 64, response: int = 128
                 ) -> dict:
    """codet5-large PPO on one GPU, bf16 compute with fp32 AdamW state; policy + ref + RM. Bytes.

    Static, per parameter: trained policy 2 (bf16 weights) + 2 (bf16 grads) + 4 (fp32 master) + 4 + 4
    (AdamW m, v) = 16 B; frozen reference 2 B; frozen reward model 2 B  ->  20 B/param.
    Activations of one training minibatch (no recomputation), per layer (Korthikanti et al. 2022,
    bf16, b batch, s length, h d_model, a heads): self-attention + MLP block s*b*h*(34 + 5*a*s/h);
    the decoder's cross-attention adds about 9*s*b*h + 4*s_e*b*h + 5*a*s*s_e*b.
    Logits: b*T*V elements; our update keeps about 6 fp32 (B, T, V) tensors alive at the peak
    (bf16 logits, .float(), /temperature, logsumexp and log_softmax/exp/product of the entropy).
    Rollout (no grad, not at the same time as the update): KV cache for `rollouts` sequences
    (2 * layers * B * (T + S) * h * 2 bytes) and the reference pass's (B, T, V) fp32 logits (~3 copies).
    """
    b, s_e, s = minibatch, prompt, response
    static_policy = params * (2 + 2 + 4 + 4 + 4)
    static = static_policy + params * 2 + params * 2
    enc = layers * (s_e * b * d * 34 + 5 * heads * s_e * s_e * b)
    dec = layers * (s * b * d * 34 + 5 * heads * s * s * b + 9 * s * b * d + 4 * s_e * b * d + 5 * heads * s * s_e * b)
    logits = 6 * b * s * vocab * 4
    train_act = enc + dec + logits
    kv = 2 * layers * rollouts * (s + s_e) * d * 2
    ref_logits = 3 * rollouts * s * vocab * 4
    rollout_act = kv + ref_logits
    ours_as_written = params * (4 + 4 + 4 + 4) + params * 4 + params * 4  # fp32 weights everywhere (no autocast in PPO)
    return {"params": params, "static_bytes": static, "static_policy_bytes": static_policy,
            "train_activation_bytes": train_act, "encoder_act": enc, "decoder_act": dec, "logits_bytes": logits,
            "rollout_bytes": rollout_act, "kv_cache_bytes": kv, "ref_logits_bytes": ref_logits,
            "peak_bytes": static + max(train_act, rollout_act),
            "ours_as_written_static_bytes": ours_as_written,
            "ours_as_written_peak_bytes": ours_as_written + max(2 * (enc + dec) + logits, 2 * kv + ref_logits)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--stages", nargs="+", default=["sft", "rm", "ppo"])
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--rollouts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128, help="PPO response limit (train_ppo.py's default)")
    ap.add_argument("--minibatch", type=int, default=16)
    ap.add_argument("--ppo-epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "memory.json"))
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--preset", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.preset, args)))
        return

    from bench_ppo_vs_trl import machine_info

    rows = []
    passthrough = ["--vocab", str(args.vocab), "--rollouts", str(args.rollouts), "--new-tokens", str(args.new_tokens),
                   "--minibatch", str(args.minibatch), "--ppo-epochs", str(args.ppo_epochs), "--threads", str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TRANSFORMERS_VERBOSITY="error")
    print(f"{'preset':6s} {'stage':5s} {'params':>11s} {'param MiB':>9s} {'base MiB':>8s} {'peak MiB':>8s} "
          f"{'peak-base':>9s} {'s':>6s}")
    for preset in args.presets:
        for stage in args.stages:
            out = subprocess.run([sys.executable, __file__, "--stage", stage, "--preset", preset, *passthrough],
                                 capture_output=True, text=True, env=env, cwd=str(ROOT))
            if out.returncode != 0:
                raise RuntimeError(f"{preset}/{stage} failed:\n{out.stderr[-3000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            note = ""
            if stage == "ppo":
                rollout_only = (r["peak_rss_after_first_rollout"] - r["baseline_rss"]) / MiB
                note = f"   (rollout alone: peak-base {rollout_only:.0f} MiB; {r['response_tokens']} response tokens)"
            print(f"{preset:6s} {stage:5s} {r['parameters']:11,d} {r['param_bytes'] / MiB:9.1f} "
                  f"{r['baseline_rss'] / MiB:8.0f} {r['peak_rss'] / MiB:8.0f} {r['peak_minus_baseline'] / MiB:9.0f} "
                  f"{r['seconds']:6.1f}{note}", flush=True)

    est = gpu_estimate()
    print(f"\ncodet5-large (770M) PPO on one GPU, bf16 + fp32 AdamW, policy + ref + RM "
          f"(minibatch 16, prompt 64, response 128, 64 rollouts):")
    print(f"  static {est['static_bytes'] / GB:.1f} GB (policy {est['static_policy_bytes'] / GB:.1f} GB at 16 B/param,"
          f" ref + RM {4 * est['params'] / GB:.1f} GB at 2 B/param)")
    print(f"  update activations {est['train_activation_bytes'] / GB:.1f} GB (encoder {est['encoder_act'] / GB:.2f}, "
          f"decoder {est['decoder_act'] / GB:.2f}, logits {est['logits_bytes'] / GB:.2f}); rollout "
          f"{est['rollout_bytes'] / GB:.1f} GB (KV {est['kv_cache_bytes'] / GB:.2f}, ref logits "
          f"{est['ref_logits_bytes'] / GB:.2f})")
    print(f"  peak ~ {est['peak_bytes'] / GB:.1f} GB ({est['peak_bytes'] / GiB:.1f} GiB); our code as written "
          f"(fp32 everywhere in PPO): ~ {est['ours_as_written_peak_bytes'] / GB:.1f} GB")
    result = {"machine": machine_info(), "args": vars(args),
              "measure": "VmHWM from /proc/self/status, one process per stage",
              "rows": rows, "gpu_estimate_codet5_large": est}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
