"""The whole default chain for several seeds, and what RL changed on each: is the gain reliable?

    python bench/seeds.py                                  # seeds 0, 1, 2 -> bench/runs/seeds/, bench/results/seeds.json
    python bench/seeds.py --seeds 3 --out bench/runs/s3    # another seed
    python bench/seeds.py --sft-args "--preset small" --name small   # a lever: extra flags for one stage

For each seed s: train_sft.py --seed s, train_rm.py --seed s, train_ppo.py --seed s (the seed changes the
SFT initialisation and data order, the RM's samples and PPO), then evaluate.py on the SFT and PPO models
(3 sampled runs, the evaluation's own seed fixed, the eval split the same for every seed). A stage whose
summary.json exists is skipped; a stage that was killed is continued with --resume. Prints how long each
stage took, then per seed the SFT and PPO means of every metric and the deltas, and over seeds the mean and
sample standard deviation of each delta; per seed also the SFT eval loss, the RM's held-out pair accuracy and
how many of the SFT model's greedy programs for the first 10 eval instructions call the right API with the
right arguments. Writes all of it to bench/results/<name>.json.

With --methods (issue 17) it also trains, on each seed's SFT model and with the same AI feedback, the other
ways to use it, evaluates them the same way, and prints one table of the mean over seeds of every method:

    python bench/seeds.py --methods all --name methods
    ppo_judge   train_ppo.py --reward judge --whiten-scores   the analyzer's score of each rollout, no RM
    dpo         train_dpo.py                                  the RM run's pairs, offline, no sampling
    grpo, rloo  train_ppo.py --algo grpo / rloo               4 samples per prompt, no critic
    best_of     evaluate.py --best-of 4,16                    the RM picks among samples, no training
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("ast_accuracy", "exact_api", "args_match", "hallucination", "rouge_l", "codebleu", "executability")
# method -> (script, extra flags, what the evaluation calls its column); the RM-based ones read run/rm
METHODS = {
    "ppo_judge": ("train_ppo.py", ["--reward", "judge", "--whiten-scores"]),
    "dpo": ("train_dpo.py", []),
    "grpo": ("train_ppo.py", ["--algo", "grpo"]),
    "rloo": ("train_ppo.py", ["--algo", "rloo"]),
}


def stage(script: str, out: Path, args: list[str], log: Path) -> float:
    """Run one script into `out` (skipped when finished, --resume when started); seconds it took."""
    times = out.parent / "times.json"  # seconds of every stage this script ran, kept for later tables
    if (out / "summary.json").exists():
        seconds = json.loads(times.read_text()).get(out.name, 0.0) if times.exists() else 0.0
        print(f"  {script:13s} done before ({out})")
        return seconds or recorded_seconds(out)
    resume = ["--resume"] if out.exists() and script != "evaluate.py" else []  # evaluate.py starts over
    cmd = [sys.executable, str(ROOT / script), *args, "--out", str(out), *resume]
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.time() - t0
    if r.returncode != 0:
        sys.exit(f"{script} failed (exit {r.returncode}); see {log}; rerun this command to continue")
    times.write_text(json.dumps({**(json.loads(times.read_text()) if times.exists() else {}), out.name: seconds}))
    print(f"  {script:13s} {seconds:6.0f} s")
    return seconds


def recorded_seconds(out: Path) -> float:
    """For a stage run before times.json existed: what its own files say (train_rm.py's summary, the sum of
    PPO's iteration times), else 0."""
    summary = json.loads((out / "summary.json").read_text())
    if "seconds" in summary:
        return float(summary["seconds"])
    metrics = out / "metrics.jsonl"
    if metrics.exists():
        return sum(json.loads(line).get("seconds", 0.0) for line in metrics.read_text().splitlines())
    return 0.0


def means(runs: list[dict]) -> dict[str, float]:
    return {k: 100 * statistics.mean(r[k] for r in runs) for k in METRICS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--out", default="bench/runs/seeds", help="where the runs go (one folder per seed)")
    p.add_argument("--name", default="seeds", help="results file: bench/results/NAME.json")
    p.add_argument("--runs", type=int, default=3, help="sampled evaluation runs per model")
    for s in ("sft", "rm", "ppo"):
        p.add_argument(f"--{s}-args", default="", help=f"extra flags for train_{s}.py (one string)")
    p.add_argument("--methods", default="", help="also: all, or some of " + ",".join([*METHODS, "best_of"]))
    a = p.parse_args()
    methods = [*METHODS, "best_of"] if a.methods == "all" else [m for m in a.methods.split(",") if m]
    unknown = set(methods) - {*METHODS, "best_of"}
    if unknown:
        p.error(f"--methods: unknown {sorted(unknown)}; known: {[*METHODS, 'best_of']}")
    out = ROOT / a.out
    results: dict = {"seeds": {}, "command": " ".join(sys.argv)}
    for seed in [int(s) for s in a.seeds.split(",")]:
        run = out / f"seed{seed}"
        run.mkdir(parents=True, exist_ok=True)
        log = run / "log.txt"
        print(f"seed {seed}:")
        t = {
            "sft": stage("train_sft.py", run / "sft", ["--seed", str(seed), "--samples", "10",
                                                        *shlex.split(a.sft_args)], log),
            "rm": stage("train_rm.py", run / "rm", ["--seed", str(seed), "--sft", str(run / "sft"),
                                                    *shlex.split(a.rm_args)], log),
            "ppo": stage("train_ppo.py", run / "ppo", ["--seed", str(seed), "--sft", str(run / "sft"),
                                                       "--rm", str(run / "rm"), *shlex.split(a.ppo_args)], log),
            "eval": stage("evaluate.py", run / "eval", ["--models", f"{run / 'sft'},{run / 'ppo'}",
                                                        "--runs", str(a.runs)], log),
            # what a new user sees first: the SFT model's greedy programs for the first 10 eval instructions
            "greedy10": stage("evaluate.py", run / "greedy10", ["--models", str(run / "sft"), "--greedy",
                                                                "--limit", "10"], log),
        }
        trained = [m for m in methods if m in METHODS]
        for m in trained:
            script, flags = METHODS[m]
            t[m] = stage(script, run / m, ["--seed", str(seed), "--sft", str(run / "sft"), "--rm", str(run / "rm"),
                                           *flags], log)
        if trained:
            t["eval_methods"] = stage("evaluate.py", run / "eval_methods",
                                      ["--models", ",".join(str(run / m) for m in trained), "--runs", str(a.runs)], log)
        if "best_of" in methods:
            t["best_of"] = stage("evaluate.py", run / "eval_best_of", ["--models", str(run / "sft"), "--rm",
                                                                       str(run / "rm"), "--best-of", "4,16",
                                                                       "--runs", str(a.runs)], log)
        greedy = json.loads((run / "greedy10" / "summary.json").read_text())["results"]["sft"][0]
        report = json.loads((run / "eval" / "summary.json").read_text())["results"]
        sft, ppo = means(report["sft"]), means(report["ppo"])
        results["seeds"][seed] = {"sft": sft, "ppo": ppo, "delta": {k: ppo[k] - sft[k] for k in METRICS},
                                  "seconds": t,
                                  "rm_heldout_pair_accuracy": json.loads((run / "rm" / "summary.json").read_text())[
                                      "heldout_pair_accuracy"],
                                  "sft_eval_loss": json.loads((run / "sft" / "summary.json").read_text())["eval_loss"],
                                  "sft_greedy_right_of_10": round(10 * greedy["args_match"])}
        if methods:
            more = {}
            if trained:
                more.update(json.loads((run / "eval_methods" / "summary.json").read_text())["results"])
            if "best_of" in methods:
                best = json.loads((run / "eval_best_of" / "summary.json").read_text())["results"]
                more.update({k: v for k, v in best.items() if "best-of" in k})
            results["seeds"][seed]["methods"] = {name: means(runs) for name, runs in more.items()}
    deltas = [r["delta"] for r in results["seeds"].values()]
    results["over_seeds"] = {k: {"mean": statistics.mean(d[k] for d in deltas),
                                 "std": statistics.stdev(d[k] for d in deltas) if len(deltas) > 1 else 0.0}
                             for k in METRICS}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    path = ROOT / "bench" / "results" / f"{a.name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")

    print("\n| seed | " + " | ".join(f"{k} SFT -> PPO (delta)" for k in METRICS) + " |")
    print("|---|" + "---:|" * len(METRICS))
    for seed, r in results["seeds"].items():
        print(f"| {seed} | " + " | ".join(f"{r['sft'][k]:.1f} -> {r['ppo'][k]:.1f} ({r['delta'][k]:+.1f})"
                                       for k in METRICS) + " |")
    print("| mean ± std of the delta | " + " | ".join(
        f"{results['over_seeds'][k]['mean']:+.1f} ± {results['over_seeds'][k]['std']:.1f}" for k in METRICS) + " |")
    print("\n| seed | SFT eval loss | RM held-out pair accuracy | SFT greedy programs right (API + arguments), of 10 |")
    print("|---|---:|---:|---:|")
    for seed, r in results["seeds"].items():
        print(f"| {seed} | {r['sft_eval_loss']:.4f} | {r['rm_heldout_pair_accuracy']:.3f} | {r['sft_greedy_right_of_10']} |")
    if methods:
        print_methods(results, methods)
    print(f"\nwritten to {path.relative_to(ROOT)}")


def print_methods(results: dict, methods: list[str]) -> None:
    """One row per method: mean ± std over seeds of each metric, and the mean wall time of the reward model
    it needs (train_rm.py: sampling, judging, training) and of its own stage (training; best-of: its evaluation)."""
    seeds = list(results["seeds"].values())
    rows = [("SFT", lambda r: r["sft"], False, None), ("PPO + RM", lambda r: r["ppo"], True, "ppo")]
    names = {"ppo_judge": "PPO + judge (no RM)", "dpo": "DPO (RM run's pairs)", "grpo": "GRPO + RM", "rloo": "RLOO + RM"}
    for m in methods:
        if m == "best_of":  # one evaluation makes both: its time is shared
            rows += [(f"best-of-{n} by the RM", lambda r, n=n: r["methods"][f"sft best-of-{n}"], True, "best_of")
                     for n in (4, 16)]
        else:
            rows.append((names[m], lambda r, m=m: r["methods"][m], m != "ppo_judge", m))
    shown = ("executability", "exact_api", "args_match", "ast_accuracy", "hallucination", "codebleu")
    print("\n| method (mean ± std over seeds " + ",".join(map(str, results["seeds"])) + ") | "
          + " | ".join(shown) + " | reward model (min) | own stage (min) |")
    print("|---|" + "---:|" * (len(shown) + 2))
    for label, get, uses_rm, stage_name in rows:
        cells = []
        for k in shown:
            values = [get(r)[k] for r in seeds]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.1f} ± {sd:.1f}")
        rm = statistics.mean(r["seconds"]["rm"] for r in seeds) / 60 if uses_rm else 0.0
        own = statistics.mean(r["seconds"][stage_name] for r in seeds) / 60 if stage_name else 0.0
        print(f"| {label} | " + " | ".join(cells) + f" | {rm:.1f} | {own:.1f} |")


if __name__ == "__main__":
    main()
