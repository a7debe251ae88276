"""One PPO iteration, minirlaif vs TRL 0.11.4's seq2seq PPOTrainer, on the same tiny T5 (same weights).

    .venv/bin/python bench/bench_ppo_vs_trl.py                 # creates bench/.venv-trl on first use
    .venv/bin/python bench/bench_ppo_vs_trl.py --repeats 5 --threads 2 --profile

What runs (each side in its own worker process, driven one command at a time, iterations interleaved
ours / TRL / ours / TRL ... so that drifting background load hits both alike):
  ours     minirlaif.ppo.rollout() (our sampler records log pi_old and V_old while sampling, then the
           reference forward pass and the reward model) + update(); project venv (transformers 5.x)
  ours@4.46 (--ours-on-trl-venv, default on) the same code in bench/.venv-trl, i.e. on transformers
           4.46.3 like TRL: separates "our code" from "transformers version"
  trl      PPOTrainer.generate(batch_size=B, do_sample, top_k=0, top_p=1, min=max new tokens) +
           PPOTrainer.step() (policy + reference forward passes, rewards, GAE, ppo_epochs of minibatch
           updates); AutoModelForSeq2SeqLMWithValueHead + create_reference_model; AdamW like ours
Both sides: the same T5 weights (built here from a seeded config, save_pretrained, loaded by each
side; parameter checksums compared), the same prompts (random token ids, right-padded, varied
lengths), B responses of exactly --new-tokens tokens (TRL: min_new_tokens = max_new_tokens; ours
stops only when every row hit EOS, which a random model essentially never does, so both decode
--new-tokens steps), the same fixed score per response (no reward model is timed on either side;
our RM forward is timed separately), ppo_epochs, minibatch size, max_grad_norm and torch threads.

Then a step-0 comparison: identical response tensors fed to both, one epoch, one minibatch = the
batch, lr 0, so the stats are the losses before any update (KL, policy loss, value loss, entropy).

Writes bench/results/ppo_vs_trl.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))
TRL_PINS = ["torch==2.13.0", "trl==0.11.4", "transformers==4.46.3", "rich"]
PAD_ID, EOS_ID = 0, 1


# --------------------------------------------------------------------------------------------------
# the TRL venv


def ensure_trl_venv(venv: Path) -> Path:
    """Create `venv` with TRL 0.11.4 pinned (once); return its python."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import trl, transformers, rich; assert trl.__version__ == '0.11.4', trl.__version__; "
             "assert transformers.__version__ == '4.46.3', transformers.__version__"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"creating {venv} with {' '.join(TRL_PINS)} (one time, a few minutes) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *TRL_PINS], check=True)
    subprocess.run(check, check=True)
    return python


# --------------------------------------------------------------------------------------------------
# worker processes: one JSON command per line in, one JSON answer per line out


class Worker:
    def __init__(self, argv: list[str], threads: int, name: str):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error",
                   HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
        self.name = name
        self.log = open(tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False).name, "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env=env, cwd=str(ROOT))

    def call(self, **msg) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} worker died; see {self.log.name}")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(f"{self.name} worker: {answer.get('error')}; see {self.log.name}")
        return answer

    def close(self, keep_log: bool = False) -> None:
        try:
            self.call(cmd="quit")
        except Exception:
            keep_log = True
        self.proc.wait(timeout=60)
        self.log.close()
        if not keep_log:
            os.unlink(self.log.name)


# --------------------------------------------------------------------------------------------------
# our side (runs inside a worker: `bench_ppo_vs_trl.py --worker`, in either venv)


class OursSide:
    def __init__(self, msg: dict):
        import torch

        import minirlaif.ppo as ppo
        from minirlaif.policy import Seq2SeqPolicy

        torch.set_num_threads(msg["threads"])
        self.msg, self.torch, self.ppo = msg, torch, ppo
        self.policy = Seq2SeqPolicy.from_pretrained(msg["model_dir"]).eval()  # value head starts at 0
        self.ref = self._frozen(Seq2SeqPolicy.from_pretrained(msg["model_dir"]))
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=msg["lr"], weight_decay=0.0)
        self.cfg = ppo.PPOConfig(max_new_tokens=msg["new_tokens"], missing_eos_penalty=float("nan"),
                                 ppo_epochs=msg["ppo_epochs"], minibatch_size=msg["minibatch"],
                                 max_grad_norm=msg["max_grad_norm"])
        self.generator = torch.Generator().manual_seed(msg["seed"])
        self.shuffle = torch.Generator().manual_seed(msg["seed"] + 1)
        self.timers: dict[str, float] = {}
        # time the parts of rollout() without copying it: wrap the names it calls
        if msg.get("what_if"):
            self._apply_what_if()
        self._orig_sample, self._orig_logprobs = ppo.sample, ppo.response_logprobs
        ppo.sample = self._timed("generate_s", ppo.sample)
        ppo.response_logprobs = self._timed("forward_s", ppo.response_logprobs)

    def _apply_what_if(self) -> None:
        """The changes suggested for generation.py / ppo.py, applied by patching names (not in the library).

        1. sample(): draw each token by inverse CDF (one uniform per row + cumsum + searchsorted) instead
           of torch.multinomial, whose CPU kernel draws one exponential per vocabulary entry.
        2. response_logprobs(): no `logits / temperature` copy when temperature == 1, and without grad
           (the rollout's reference pass) run in chunks of the minibatch size, which keeps the (B, T, V)
           temporaries cache-sized on CPU and bounds them on a GPU. Chunked calls return logits=None
           (rollout() discards them).
        3. update(): the entropy statistic on detached logits when ent_coef == 0 (no backward through
           a log_softmax/exp/mul over (B, T, V) that is multiplied by 0).
        """
        torch, ppo = self.torch, self.ppo
        from minirlaif import losses

        real_multinomial = torch.multinomial

        def multinomial(probs, num_samples, replacement=False, *, generator=None, out=None):
            if num_samples != 1 or probs.dim() != 2 or out is not None:
                return real_multinomial(probs, num_samples, replacement, generator=generator)
            cdf = probs.cumsum(-1)
            u = torch.rand(probs.shape[0], 1, generator=generator, dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]
            return torch.searchsorted(cdf, u, right=True).clamp_max(probs.shape[1] - 1)

        torch.multinomial = multinomial  # this worker process only
        chunk = self.msg["minibatch"]

        def response_logprobs(policy, input_ids, attention_mask, tokens, mask, temperature=1.0):
            if not torch.is_grad_enabled() and tokens.shape[0] > chunk:
                parts = [response_logprobs(policy, input_ids[s:s + chunk], attention_mask[s:s + chunk],
                                           tokens[s:s + chunk], mask[s:s + chunk], temperature)
                         for s in range(0, tokens.shape[0], chunk)]
                return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), None
            logits, values = policy(input_ids, attention_mask, tokens)
            if temperature != 1.0:
                logits = logits / temperature
            return losses.logprobs_from_logits(logits, tokens) * mask, values * mask, logits

        ppo.response_logprobs = response_logprobs
        if self.cfg.ent_coef == 0.0:
            ppo.entropy_from_logits = lambda logits: losses.entropy_from_logits(logits.detach())

    def _frozen(self, model):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def _timed(self, key, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            self.timers[key] = self.timers.get(key, 0.0) + time.perf_counter() - t
            return out
        return wrapper

    def checksum(self) -> float:
        return float(sum(v.double().sum().item() for v in self.policy.backbone.state_dict().values()))

    def _prompts(self, prompts):
        from minirlaif.batching import pad_right

        return pad_right(prompts, PAD_ID)

    def iteration(self, msg: dict) -> dict:
        torch = self.torch
        ids, mask = self._prompts(msg["prompts"])
        scores = torch.tensor(msg["scores"], dtype=torch.float32)
        rm = ConstantReward(scores)
        self.timers = {}
        t0 = time.perf_counter()
        batch = self.ppo.rollout(self.policy, self.ref, rm, ids, mask, self.msg["beta"], self.cfg, EOS_ID, PAD_ID,
                                 self.generator)
        t_rollout = time.perf_counter() - t0
        rollout_timers = dict(self.timers)  # update() below also calls response_logprobs: not "forward"
        t1 = time.perf_counter()
        stats = self.ppo.update(self.policy, self.optimizer, batch, self.cfg, self.shuffle)
        t_update = time.perf_counter() - t1
        lengths = batch.mask.sum(1)
        gen_s, fwd_s = rollout_timers["generate_s"], rollout_timers.get("forward_s", 0.0)
        return {"generate_s": gen_s, "forward_s": fwd_s, "rollout_other_s": t_rollout - gen_s - fwd_s,
                "update_s": t_update, "response_tokens": int(lengths.sum()), "min_len": int(lengths.min()),
                "max_len": int(lengths.max()), "decode_steps": int(batch.tokens.shape[1]),
                "kl": float(self.ppo.sequence_kl(batch.kl, batch.mask).mean()), "policy_loss": stats["policy_loss"]}

    def rm_forward(self, msg: dict) -> dict:
        """Our reward model's forward on a batch like the rollout's (timed; it is not in `iteration`)."""
        torch = self.torch
        from minirlaif.reward_model import RewardModel

        rm = self._frozen(RewardModel.from_pretrained(self.msg["model_dir"]))
        ids, mask = self._prompts(msg["prompts"])
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(3, self.msg["vocab_size"], (ids.shape[0], self.msg["new_tokens"]), generator=g)
        rmask = torch.ones_like(tokens, dtype=torch.float32)
        times = []
        with torch.no_grad():
            for _ in range(msg["repeats"] + 1):
                t = time.perf_counter()
                rm(ids, mask, tokens, rmask)
                times.append(time.perf_counter() - t)
        return {"rm_forward_s": statistics.median(times[1:])}

    def compare(self, msg: dict) -> dict:
        """Step-0 quantities on the given responses, three ways (see `main`)."""
        torch, ppo = self.torch, self.ppo
        from minirlaif.losses import (entropy_from_logits, gae, kl_penalized_rewards, masked_mean, masked_whiten,
                                      ppo_policy_loss, ppo_value_loss, sequence_kl)
        from minirlaif.policy import Seq2SeqPolicy

        response_logprobs = self._orig_logprobs  # untimed; update() below still goes through the timed name
        ids, pmask = self._prompts(msg["prompts"])
        tokens = torch.tensor(msg["responses"], dtype=torch.long)
        scores = torch.tensor(msg["scores"], dtype=torch.float32)
        mask = torch.ones(tokens.shape, dtype=torch.float32)
        beta, out = self.msg["beta"], {}

        def fresh(v_head):
            policy = Seq2SeqPolicy.from_pretrained(self.msg["model_dir"]).eval()
            if v_head is not None:
                with torch.no_grad():
                    policy.value_head.weight.copy_(torch.tensor(v_head[0])[None])
                    policy.value_head.bias.fill_(v_head[1])
            return policy

        with torch.no_grad():
            ref_logp, _, _ = response_logprobs(self.ref, ids, pmask, tokens, mask)

        # (a) ours, as the library runs it: update() with one epoch, one minibatch, lr 0
        policy = fresh(None)
        with torch.no_grad():
            logp, values, logits = response_logprobs(policy, ids, pmask, tokens, mask)
        rewards, kl = kl_penalized_rewards(scores, logp, ref_logp, mask, beta)
        adv, ret = gae(rewards, values, mask, 1.0, 0.95)
        adv = masked_whiten(adv, mask)
        batch = ppo.Rollout(ids, pmask, tokens, mask, logp, ref_logp, values, scores, scores, rewards, kl, adv, ret,
                            torch.ones(tokens.shape[0], dtype=torch.bool))
        cfg = ppo.PPOConfig(ppo_epochs=1, minibatch_size=tokens.shape[0], max_grad_norm=self.msg["max_grad_norm"])
        st = ppo.update(policy, torch.optim.AdamW(policy.parameters(), lr=0.0, weight_decay=0.0), batch, cfg)
        out["ours"] = {"kl": float(sequence_kl(kl, mask).mean()), "policy_loss": st["policy_loss"],
                       "value_loss": st["value_loss"], "entropy": st["entropy"], "approx_kl": st["approx_kl"],
                       "clip_frac": st["clip_frac"], "value_clip_frac": st["value_clip_frac"],
                       "returns_mean": float(masked_mean(ret, mask)), "tokens_in_loss": int(mask.sum())}
        out["ours_logprobs"] = logp.tolist()

        # (b) and (c): our losses.py on TRL's masking (position 0 dropped), zero or TRL's value head
        def dropped_first(v_head, key):
            policy = fresh(v_head)
            with torch.no_grad():
                lp, v, lg = response_logprobs(policy, ids, pmask, tokens, mask)
            lp, v, lg, rl, m = lp[:, 1:], v[:, 1:], lg[:, 1:], ref_logp[:, 1:], mask[:, 1:]
            r, k = kl_penalized_rewards(scores, lp, rl, m, beta)
            a, R = gae(r, v, m, 1.0, 0.95)
            a = masked_whiten(a, m)
            pg, _ = ppo_policy_loss(lp, lp, a, m, 0.2)
            vf, vs = ppo_value_loss(v, v, R, m, 0.2)
            out[key] = {"kl": float(sequence_kl(k, m).mean()), "policy_loss": float(pg), "value_loss": float(vf),
                        "entropy": float(masked_mean(entropy_from_logits(lg), m)), "approx_kl": 0.0,
                        "returns_mean": float(masked_mean(R, m)), "tokens_in_loss": int(m.sum()),
                        "value_clip_frac": float(vs["value_clip_frac"])}

        dropped_first(None, "ours_trl_mask")
        if msg.get("trl_v_head") is not None:
            dropped_first(msg["trl_v_head"], "ours_trl_mask_trl_vhead")
        return out


class ConstantReward:
    """Stands in for the reward model in the timed iteration: returns the fixed scores (both sides)."""

    def __init__(self, scores):
        self.scores = scores

    def __call__(self, prompt_ids, prompt_mask, tokens, mask):
        return self.scores.clone()


def worker_main() -> None:
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    import warnings

    warnings.filterwarnings("ignore")
    side = None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "setup":
                side = OursSide(msg)
                import torch
                import transformers

                ans = {"checksum": side.checksum(), "torch": torch.__version__,
                       "transformers": transformers.__version__, "threads": torch.get_num_threads()}
            elif msg["cmd"] == "iter":
                ans = side.iteration(msg)
            elif msg["cmd"] == "rm_forward":
                ans = side.rm_forward(msg)
            elif msg["cmd"] == "compare":
                ans = side.compare(msg)
            elif msg["cmd"] == "profile":
                ans = profile_ours(side, msg)
            elif msg["cmd"] == "quit":
                proto.write(json.dumps({"ok": True}) + "\n")
                return
            proto.write(json.dumps({"ok": True, **ans}) + "\n")
        except Exception as e:
            import traceback

            traceback.print_exc()
            proto.write(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}) + "\n")
        proto.flush()


def profile_ours(side: OursSide, msg: dict) -> dict:
    """torch.profiler over one of our iterations: where the time goes, by phase and by operator."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    ppo = side.ppo
    inner_sample, inner_lp = ppo.sample, ppo.response_logprobs

    def labelled(name, fn):
        def wrapper(*a, **k):
            with record_function(name):
                return fn(*a, **k)
        return wrapper

    inner_update = ppo.update
    ppo.sample = labelled("phase/generate (sample)", inner_sample)
    ppo.response_logprobs = labelled("phase/response_logprobs (ref pass + update forwards)", inner_lp)
    ppo.update = labelled("phase/update", inner_update)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("phase/iteration"):
            side.iteration(msg)
    ppo.sample, ppo.response_logprobs, ppo.update = inner_sample, inner_lp, inner_update
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ops = [e for e in events if not e.key.startswith("phase/")]
    top = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:20]
    phases = {e.key: e.cpu_time_total / 1e6 for e in events if e.key.startswith("phase/")}
    # self time of the phase labels = time spent in Python between aten ops (framework overhead)
    python_s = sum(e.self_cpu_time_total for e in events if e.key.startswith("phase/")) / 1e6
    return {"self_cpu_total_s": total / 1e6, "phases_s": phases, "python_between_ops_s": python_s,
            "top_ops": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count,
                         "share": e.self_cpu_time_total / total} for e in top],
            "table": events.table(sort_by="self_cpu_time_total", row_limit=25)}


# --------------------------------------------------------------------------------------------------
# the orchestrator


def make_prompts(n: int, lo: int, hi: int, vocab: int, seed: int) -> list[list[int]]:
    import random

    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(rng.randint(lo, hi - 1))] + [EOS_ID] for _ in range(n)]


def machine_info() -> dict:
    model = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "nproc": os.cpu_count(),
            "cpu": model, "python": platform.python_version(), "loadavg_start": os.getloadavg()}


def summarize(rows: list[dict], keys: list[str]) -> dict:
    return {k: {"median": statistics.median(r[k] for r in rows), "min": min(r[k] for r in rows)} for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--minibatch", type=int, default=16)
    ap.add_argument("--ppo-epochs", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, nargs=2, default=[12, 32], help="prompt lengths drawn from [lo, hi)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3, help="timed iterations per side (after one warm-up)")
    ap.add_argument("--lr", type=float, default=1.41e-5)
    ap.add_argument("--beta", type=float, default=0.05)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--venv", default=str(BENCH / ".venv-trl"))
    ap.add_argument("--ours-on-trl-venv", action=argparse.BooleanOptionalAction, default=True,
                    help="also run our code on the TRL venv's transformers 4.46.3")
    ap.add_argument("--what-if", action=argparse.BooleanOptionalAction, default=True,
                    help="also run 'ours+patch': our code with the suggested changes patched in (see _apply_what_if)")
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                    help="torch.profiler over one of our iterations")
    ap.add_argument("--out", default=str(BENCH / "results" / "ppo_vs_trl.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main()

    import torch

    from minirlaif.policy import Seq2SeqPolicy, count_parameters

    info = machine_info()
    trl_python = ensure_trl_venv(Path(args.venv))
    tmp = Path(tempfile.mkdtemp(prefix="bench-ppo-"))
    model_dir, tok_dir = tmp / "model", tmp / "tokenizer"
    torch.manual_seed(args.seed)
    model = Seq2SeqPolicy.from_preset(args.preset, args.vocab, PAD_ID, EOS_ID)
    model.backbone.save_pretrained(str(model_dir))
    n_params = count_parameters(model.backbone)
    del model

    setup = dict(cmd="setup", model_dir=str(model_dir), tok_dir=str(tok_dir), vocab_size=args.vocab, pad_id=PAD_ID,
                 eos_id=EOS_ID, threads=args.threads, batch=args.batch, minibatch=args.minibatch,
                 ppo_epochs=args.ppo_epochs, new_tokens=args.new_tokens, lr=args.lr, beta=args.beta,
                 max_grad_norm=args.max_grad_norm, seed=args.seed)
    me = [os.path.abspath(__file__), "--worker"]
    workers = {"ours": Worker([sys.executable, *me], args.threads, "ours"),
               "trl": Worker([str(trl_python), str(BENCH / "_trl_side.py")], args.threads, "trl")}
    if args.ours_on_trl_venv:
        workers["ours@tf4.46"] = Worker([str(trl_python), *me], args.threads, "ours-tf446")
    if args.what_if:
        workers["ours+patch"] = Worker([sys.executable, *me], args.threads, "ours-patch")
    try:
        versions = {name: w.call(**setup, what_if=(name == "ours+patch")) for name, w in workers.items()}
        sums = {name: v["checksum"] for name, v in versions.items()}
        if max(sums.values()) - min(sums.values()) > 1e-6 * max(1.0, abs(max(sums.values()))):
            raise RuntimeError(f"the sides loaded different weights: {sums}")
        for name, v in versions.items():
            print(f"{name:12s} torch {v['torch']}, transformers {v['transformers']}"
                  f"{', trl ' + v['trl'] if 'trl' in v else ''}, {v['threads']} threads, checksum {v['checksum']:.6f}")

        # ---- throughput: warm-up, then interleaved timed iterations ----
        rows: dict[str, list[dict]] = {name: [] for name in workers}
        for it in range(args.repeats + 1):
            prompts = make_prompts(args.batch, *args.prompt_len, args.vocab, args.seed * 1000 + it)
            scores = [((i * 37) % 11 - 5) / 5 for i in range(args.batch)]
            order = list(workers) if it % 2 == 0 else list(reversed(workers))
            for name in order:
                t = time.perf_counter()
                r = workers[name].call(cmd="iter", prompts=prompts, scores=scores, new_tokens=args.new_tokens,
                                       seed=args.seed + it)
                r["iteration_s"] = time.perf_counter() - t
                if it > 0:
                    rows[name].append(r)
                print(f"  {'warm-up' if it == 0 else f'rep {it}'} {name:12s} {r['iteration_s']:6.2f} s "
                      f"(generate {r['generate_s']:.2f}, forward {r['forward_s']:.2f}, update {r['update_s']:.2f})",
                      flush=True)
        prompts = make_prompts(args.batch, *args.prompt_len, args.vocab, args.seed * 1000 + 999)
        rm = workers["ours"].call(cmd="rm_forward", prompts=prompts, repeats=max(args.repeats, 3))

        # ---- step-0 comparison on identical responses ----
        g = torch.Generator().manual_seed(args.seed + 7)
        responses = torch.randint(3, args.vocab, (args.batch, args.new_tokens), generator=g).tolist()
        scores = torch.randn(args.batch, generator=g).tolist()
        trl_zero = workers["trl"].call(cmd="compare", prompts=prompts, responses=responses, scores=scores, v_head="zero")
        trl_default = workers["trl"].call(cmd="compare", prompts=prompts, responses=responses, scores=scores,
                                          v_head="default")
        ours = workers["ours"].call(cmd="compare", prompts=prompts, responses=responses, scores=scores,
                                    trl_v_head=[trl_default["v_head_weight"], trl_default["v_head_bias"]])
        lp_ours, lp_trl = torch.tensor(ours["ours_logprobs"]), torch.tensor(trl_zero["logprobs"])
        trl_mask = torch.tensor(trl_zero["masks"])
        logprob_diff = float((lp_ours[:, 1:] - lp_trl[:, 1:]).abs().max())

        prof = workers["ours"].call(cmd="profile", prompts=prompts, scores=[0.0] * args.batch,
                                    new_tokens=args.new_tokens, seed=args.seed) if args.profile else None
        failed = False
    except BaseException:
        failed = True
        raise
    finally:
        for w in workers.values():
            w.close(keep_log=failed)
        shutil.rmtree(tmp, ignore_errors=True)

    # ---- report ----
    keys = ["iteration_s", "generate_s", "forward_s", "update_s"]
    summary = {name: summarize(r, keys) for name, r in rows.items()}
    tokens = args.batch * args.new_tokens
    for name, s in summary.items():
        it_s = s["iteration_s"]["median"]
        s["samples_per_s"] = args.batch / it_s
        s["tokens_per_s"] = tokens / it_s
        s["response_tokens"] = rows[name][0]["response_tokens"]
    ratios = {}
    for name in summary:
        if name == "trl":
            continue
        r = {k: summary["trl"][k]["median"] / summary[name][k]["median"] for k in keys}
        r["throughput"] = summary[name]["tokens_per_s"] / summary["trl"]["tokens_per_s"]
        # robust to background load: best (least disturbed) runs, and the median of same-round pairs
        r["iteration_s_min"] = summary["trl"]["iteration_s"]["min"] / summary[name]["iteration_s"]["min"]
        r["iteration_s_paired"] = statistics.median(t["iteration_s"] / o["iteration_s"]
                                                    for t, o in zip(rows["trl"], rows[name]))
        ratios[f"{name}/trl"] = r

    print(f"\nPPO iteration: {args.preset} T5 ({n_params:,} params, vocab {args.vocab}), batch {args.batch}, "
          f"{args.new_tokens} new tokens, {args.ppo_epochs} epochs x minibatch {args.minibatch}, "
          f"{args.threads} threads; median of {args.repeats} (seconds)")
    hdr = (f"{'side':12s} {'generate':>9s} {'fwd(pol+ref)':>12s} {'update':>8s} {'iteration':>10s} "
           f"{'samples/s':>10s} {'tokens/s':>9s}")
    print(hdr)
    print("-" * len(hdr))
    for name, s in summary.items():
        print(f"{name:12s} {s['generate_s']['median']:9.2f} {s['forward_s']['median']:12.2f} "
              f"{s['update_s']['median']:8.2f} {s['iteration_s']['median']:10.2f} {s['samples_per_s']:10.1f} "
              f"{s['tokens_per_s']:9.0f}")
    for name, r in ratios.items():
        print(f"speed-up {name:16s} iteration {r['iteration_s']:.2f}x median, {r['iteration_s_min']:.2f}x best, "
              f"{r['iteration_s_paired']:.2f}x paired  (generate {r['generate_s']:.2f}x, fwd {r['forward_s']:.2f}x, "
              f"update {r['update_s']:.2f}x)")
    print(f"our RM forward on the same batch (not in the iteration above): {rm['rm_forward_s']:.3f} s")
    print("ours 'fwd' = reference pass only (log pi_old and V_old come from the sampler); "
          "TRL 'fwd' = policy + reference passes")

    comp = {"ours (all T tokens)": ours["ours"], "ours, TRL mask (pos 0 dropped)": ours["ours_trl_mask"],
            "TRL, v_head zeroed": _trl_stats(trl_zero),
            "ours, TRL mask + TRL's v_head": ours.get("ours_trl_mask_trl_vhead", {}),
            "TRL default (random v_head)": _trl_stats(trl_default)}
    print(f"\nstep 0 on identical responses (one minibatch = batch {args.batch}, lr 0); "
          f"max |log p ours - log p TRL| over TRL's unmasked positions = {logprob_diff:.2e}; "
          f"TRL mask row 0 = {trl_mask[0, :4].int().tolist()}...")
    print(f"{'':34s} {'KL/seq':>8s} {'policy':>10s} {'value':>9s} {'entropy':>8s} {'tokens':>7s}")
    for name, c in comp.items():
        if c:
            print(f"{name:34s} {c['kl']:8.4f} {c['policy_loss']:10.2e} {c['value_loss']:9.5f} "
                  f"{c['entropy']:8.4f} {c['tokens_in_loss']:7d}")
    if prof:
        print("\nprofile of one of our iterations (self CPU time, top ops):")
        print("  phases (inclusive): " + ", ".join(f"{k} {v:.2f}s" for k, v in prof["phases_s"].items()))
        print(f"  Python between aten ops: {prof['python_between_ops_s']:.2f}s of {prof['self_cpu_total_s']:.2f}s")
        for op in prof["top_ops"][:12]:
            print(f"  {op['op']:40s} {op['self_s']:7.3f} s {100 * op['share']:5.1f}%  {op['calls']:7d} calls")

    info["loadavg_end"] = os.getloadavg()
    result = {"machine": info, "args": vars(args), "parameters": n_params, "versions": versions,
              "rows": rows, "summary": summary, "ratios": ratios, "rm_forward_s": rm["rm_forward_s"],
              "step0": comp, "step0_max_logprob_diff": logprob_diff,
              "trl_v_head_dropout": trl_default["v_head_dropout"],
              "profile": prof}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


def _trl_stats(a: dict) -> dict:
    s = a["stats"]
    n = int(sum(sum(row) for row in a["masks"]))
    return {"kl": s["objective/kl"], "policy_loss": s["ppo/loss/policy"], "value_loss": s["ppo/loss/value"],
            "entropy": s["ppo/policy/entropy"], "approx_kl": s["ppo/policy/approxkl"],
            "returns_mean": s["ppo/returns/mean"], "value_clip_frac": s["ppo/val/clipfrac"], "tokens_in_loss": n}


if __name__ == "__main__":
    main()
