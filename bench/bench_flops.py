"""Achieved FLOP/s of an SFT training step and of a PPO update, as a fraction of this machine's matmul peak.

    .venv/bin/python bench/bench_flops.py                    # tiny preset, threads = nproc
    .venv/bin/python bench/bench_flops.py --preset small --threads 1

Steps measured (random token ids, vocabulary --vocab, the project's own functions):
  sft step     train_sft.batch_loss + backward + clip_grad_norm_ + AdamW.step, batch 32, prompts ~20
               and targets ~36 tokens (lengths drawn around those means, right-padded), policy.train()
  ppo update   minirlaif.ppo.update() on a rollout of --rollouts x --new-tokens (ppo_epochs x minibatches
               gradient steps, reported per gradient step), policy.eval() as in train_ppo.py
  generation   minirlaif.generation.sample() of that rollout (decode loop with KV cache), for contrast

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode (matmuls: mm/addmm/bmm and attention;
elementwise work, softmax, AdamW are not FLOPs here). PyTorch's CPU flash-attention kernel is not in
its registry, so its forward/backward are registered here with PyTorch's own sdpa formulas. An
analytical count is printed next to it as a check:

    forward = 2 * (B*S * P_enc + B*T * (P_dec + d_model*V)) + 4*d_attn*L_enc*B*S^2
              + 4*d_attn*L_dec*(B*T^2 + B*T*S)                     (padded S, T; d_attn = heads*d_kv)
    train   = 3 * forward                                           (backward = 2 x forward)

with P_enc, P_dec the matmul weights per stack (attention projections + FFN; embeddings are lookups,
the tied LM head is the d_model*V term). This is the usual "6 * params * tokens" with the encoder's
weights applied to prompt tokens and the decoder's (+ LM head) to target tokens, plus attention.

The peak is measured in the same run (interleaved with the steps, best of several trials) as fp32
torch.matmul of the step's own shapes -- (B*T, d_model) x (d_model, d_ff) and x (d_model, V) -- and
of a large square (2048^3) matmul, the machine's practical fp32 peak (a bf16 square matmul is printed
for information: this CPU has AVX512-BF16). Writes bench/results/flops.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count  # noqa: E402

from minirlaif.policy import PRESETS, Seq2SeqPolicy, count_parameters  # noqa: E402

PAD_ID, EOS_ID = 0, 1


def _cpu_flash_fwd(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q, k, v)


def _cpu_flash_bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, q, k, v)


def flop_counter() -> FlopCounterMode:
    aten = torch.ops.aten
    custom = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_fwd,
              aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_bwd}
    return FlopCounterMode(display=False, custom_mapping=custom)


def analytic_train_flops(cfg: dict, vocab: int, B: int, S: int, T: int) -> float:
    d, dff, da = cfg["d_model"], cfg["d_ff"], cfg["num_heads"] * cfg["d_kv"]
    le, ld = cfg["num_layers"], cfg["num_decoder_layers"]
    p_enc = le * (4 * d * da + 2 * d * dff)
    p_dec = ld * (8 * d * da + 2 * d * dff)
    fwd = 2 * (B * S * p_enc + B * T * (p_dec + d * vocab)) + 4 * da * le * B * S * S + 4 * da * ld * (B * T * T + B * T * S)
    return 3.0 * fwd


def random_pairs(n: int, prompt_mean: int, target_mean: int, vocab: int, g: torch.Generator):
    """(prompt ids, target ids + EOS) with lengths uniform in mean +- 30%."""
    def length(mean):
        lo, hi = max(1, int(mean * 0.7)), int(mean * 1.3) + 1
        return int(torch.randint(lo, hi, (1,), generator=g))

    pairs = []
    for _ in range(n):
        p = torch.randint(3, vocab, (length(prompt_mean),), generator=g).tolist()
        t = torch.randint(3, vocab, (length(target_mean) - 1,), generator=g).tolist() + [EOS_ID]
        pairs.append((p, t))
    return pairs


class ConstantReward:
    def __call__(self, prompt_ids, prompt_mask, tokens, mask):
        return torch.zeros(prompt_ids.shape[0])


def matmul_rate(m: int, k: int, n: int, min_time: float = 0.2, dtype=torch.float32) -> float:
    """Best-of-5 FLOP/s of an (m, k) x (k, n) torch.matmul (fp32 unless `dtype`)."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    torch.matmul(a, b)
    reps = max(1, int(min_time / max(1e-6, _time(lambda: torch.matmul(a, b)))))
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        best = max(best, 2.0 * m * k * n * reps / (time.perf_counter() - t))
    return best


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32, help="SFT batch")
    ap.add_argument("--prompt-len", type=int, default=20)
    ap.add_argument("--target-len", type=int, default=36)
    ap.add_argument("--rollouts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--minibatch", type=int, default=16)
    ap.add_argument("--ppo-epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "flops.json"))
    args = ap.parse_args()

    import minirlaif.ppo as ppo
    from minirlaif.batching import pad_right
    from minirlaif.generation import sample
    from minirlaif.utils import quiet_transformers
    from train_sft import batch_loss
    from bench_ppo_vs_trl import machine_info

    quiet_transformers()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    cfg = PRESETS[args.preset]
    policy = Seq2SeqPolicy.from_preset(args.preset, args.vocab, PAD_ID, EOS_ID)
    n_params = count_parameters(policy)

    # ---- SFT step ----
    pairs = random_pairs(args.batch, args.prompt_len, args.target_len, args.vocab, g)
    S_sft, T_sft = max(len(p) for p, _ in pairs), max(len(t) for _, t in pairs)
    sft_opt = torch.optim.AdamW(policy.parameters(), lr=1e-4, weight_decay=0.01)

    def sft_step():
        sft_opt.zero_grad(set_to_none=True)
        loss, _ = batch_loss(policy, pairs, PAD_ID, "cpu")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        sft_opt.step()

    policy.train()
    sft_step()
    with flop_counter() as fc:
        sft_step()
    sft_flops = fc.get_total_flops()
    sft_analytic = analytic_train_flops(cfg, args.vocab, args.batch, S_sft, T_sft)

    # ---- PPO: one rollout, then update() ----
    policy.eval()
    ref = Seq2SeqPolicy.from_preset(args.preset, args.vocab, PAD_ID, EOS_ID).eval()
    ref.load_state_dict(policy.state_dict())
    for p in ref.parameters():
        p.requires_grad_(False)
    prompts = [p for p, _ in random_pairs(args.rollouts, args.prompt_len, 2, args.vocab, g)]
    ids, mask = pad_right(prompts, PAD_ID)
    pcfg = ppo.PPOConfig(max_new_tokens=args.new_tokens, missing_eos_penalty=float("nan"), ppo_epochs=args.ppo_epochs,
                         minibatch_size=args.minibatch)
    gen = torch.Generator().manual_seed(args.seed)
    batch = ppo.rollout(policy, ref, ConstantReward(), ids, mask, 0.05, pcfg, EOS_ID, PAD_ID, gen)
    ppo_opt = torch.optim.AdamW(policy.parameters(), lr=1e-6, weight_decay=0.0)
    n_steps = args.ppo_epochs * -(-args.rollouts // args.minibatch)
    shuffle = torch.Generator().manual_seed(1)

    def ppo_update():
        ppo.update(policy, ppo_opt, batch, pcfg, shuffle)

    def generate():
        sample(policy, ids, mask, args.new_tokens, EOS_ID, PAD_ID, generator=gen)

    ppo_update()
    with flop_counter() as fc:
        ppo_update()
    ppo_flops = fc.get_total_flops()
    width = int(batch.mask.sum(1).max())
    ppo_analytic = n_steps * analytic_train_flops(cfg, args.vocab, args.minibatch, ids.shape[1], width)
    with flop_counter() as fc:
        generate()
    gen_flops = fc.get_total_flops()

    # ---- timings, interleaved with the peak measurements ----
    bt = args.batch * T_sft
    shapes = {"ffn (B*T, d_model) x (d_model, d_ff)": (bt, cfg["d_model"], cfg["d_ff"]),
              "lm head (B*T, d_model) x (d_model, V)": (bt, cfg["d_model"], args.vocab),
              "square 2048^3": (2048, 2048, 2048)}
    peaks = {k: 0.0 for k in shapes}
    times = {"sft": [], "ppo": [], "gen": []}
    for _ in range(args.repeats):
        for k, (m, kk, n) in shapes.items():
            peaks[k] = max(peaks[k], matmul_rate(m, kk, n))
        policy.train()
        times["sft"].append(_time(sft_step))
        policy.eval()
        times["ppo"].append(_time(ppo_update))
        times["gen"].append(_time(generate))
    peak = max(peaks.values())
    bf16_peak = matmul_rate(2048, 2048, 2048, dtype=torch.bfloat16)  # for information: the steps run in fp32
    comparable = peaks["ffn (B*T, d_model) x (d_model, d_ff)"]

    rows = {}
    for name, flops, analytic, key, per in [("sft step", sft_flops, sft_analytic, "sft", 1),
                                            ("ppo update (per gradient step)", ppo_flops, ppo_analytic, "ppo", n_steps),
                                            ("generation (whole rollout)", gen_flops, None, "gen", 1)]:
        t = statistics.median(times[key])
        rate = flops / t
        rows[name] = {"flops": flops / per, "analytic_flops": (analytic / per) if analytic else None,
                      "seconds": t / per, "seconds_min": min(times[key]) / per, "flop_per_s": rate,
                      "flop_per_s_best": flops / min(times[key]),
                      "fraction_of_comparable_matmul": rate / comparable, "fraction_of_peak": rate / peak,
                      "fraction_of_peak_best": flops / min(times[key]) / peak}

    print(f"{args.preset} T5, {n_params:,} params, vocab {args.vocab}, {args.threads} threads; "
          f"SFT batch {args.batch} (S {S_sft}, T {T_sft} padded); PPO {args.rollouts} x {args.new_tokens} tokens, "
          f"minibatch {args.minibatch}, {args.ppo_epochs} epochs ({n_steps} gradient steps)")
    print("matmul fp32 (best of trials): " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items())
          + f"; (bf16 square 2048^3: {bf16_peak / 1e9:.1f} GFLOP/s, for information)")
    hdr = (f"{'step':32s} {'GFLOP':>8s} {'analytic':>9s} {'ms':>8s} {'GFLOP/s':>8s} {'%cmp-mm':>8s} {'%peak':>6s}"
           f" {'best ms':>8s} {'%peak':>6s}")
    print(hdr)
    print("-" * len(hdr))
    for name, r in rows.items():
        an = f"{r['analytic_flops'] / 1e9:9.3f}" if r["analytic_flops"] else f"{'':9s}"
        print(f"{name:32s} {r['flops'] / 1e9:8.3f} {an} {1e3 * r['seconds']:8.1f} {r['flop_per_s'] / 1e9:8.1f} "
              f"{100 * r['fraction_of_comparable_matmul']:7.0f}% {100 * r['fraction_of_peak']:5.0f}% "
              f"{1e3 * r['seconds_min']:8.1f} {100 * r['fraction_of_peak_best']:5.0f}%")
    print("(median of --repeats; 'best' = fastest repeat, the least disturbed by other load; "
          "%cmp-mm = vs the step's own FFN-shaped matmul, %peak = vs the best matmul measured)")
    result = {"machine": machine_info(), "args": vars(args), "parameters": n_params, "flop_counter": "FlopCounterMode",
              "matmul_peaks_flop_per_s": peaks, "bf16_square_matmul_flop_per_s": bf16_peak, "rows": rows, "times_s": times}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
