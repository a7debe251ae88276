"""Benchmark: minirlaif.metrics.codebleu vs the `codebleu` 0.7.0 package, same corpus, same process.

    .venv/bin/python bench/bench_codebleu.py [--pairs 3000] [--repeats 3] [--seed-spread]

Two corpora of deterministic (references, hypothesis) pairs from tests/test_codebleu.make_pairs:
  generated     as generated: ~20 base programs, so references repeat (like several samples per prompt)
  all-distinct  the same pairs with a unique last line added to every text, so nothing can be shared
Each is scored by both implementations, alternating, `--repeats` times; we report the fastest CPU time
(process_time, as other jobs share the machine) and wall time of each, and the largest absolute
difference over the four components and the combined score.

The script re-runs itself under PYTHONHASHSEED=0: the package's dataflow score depends on the hash seed,
and seed 0 is the order ours reproduces, so the comparison is exact. `--seed-spread` also runs the package
under seeds 0..7 (subprocesses) to show how much its dataflow score moves. Results: bench/results/codebleu.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if os.environ.get("PYTHONHASHSEED") != "0":  # see the docstring
    os.execve(sys.executable, [sys.executable, *sys.argv], dict(os.environ, PYTHONHASHSEED="0"))

from codebleu import calc_codebleu  # noqa: E402

from minirlaif.metrics.codebleu import _strip_once, codebleu  # noqa: E402
from tests.test_codebleu import make_pairs  # noqa: E402

KEYS = {  # ours -> package
    "ngram_match": "ngram_match_score",
    "weighted_ngram_match": "weighted_ngram_match_score",
    "syntax_match": "syntax_match_score",
    "dataflow_match": "dataflow_match_score",
    "codebleu": "codebleu",
}


def corpora(n_pairs: int) -> dict[str, tuple[list[list[str]], list[str]]]:
    pairs = make_pairs(n_pairs, seed=0)
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    distinct_refs = [[f"{r}\nrun_{i}_{j} = {i}" for j, r in enumerate(rs)] for i, rs in enumerate(refs)]
    distinct_hyps = [f"{h}\nrun_{i} = {i}" for i, h in enumerate(hyps)]
    return {"generated": (refs, hyps), "all-distinct": (distinct_refs, distinct_hyps)}


def timed(fn, *args) -> tuple[dict, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - cpu, time.perf_counter() - wall


def package_dataflow_by_seed(refs: list[list[str]], hyps: list[str], seeds: range) -> list[float]:
    script = (
        "import json, logging, sys; logging.disable(logging.WARNING)\n"
        "from codebleu import calc_codebleu\n"
        "refs, hyps = json.load(sys.stdin)\n"
        "print(calc_codebleu(refs, hyps, lang='python')['dataflow_match_score'])"
    )
    out = []
    for seed in seeds:
        env = dict(os.environ, PYTHONHASHSEED=str(seed))
        stdin = json.dumps([refs, hyps])
        proc = subprocess.run([sys.executable, "-c", script], input=stdin, env=env, capture_output=True, text=True, check=True)
        out.append(float(proc.stdout))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed-spread", action="store_true")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # the package warns when a corpus has no reference dataflow

    results = {"pairs": args.pairs, "repeats": args.repeats, "python_hash_seed": 0, "corpora": {}}
    header = ("corpus", "pairs", "texts", "ours cpu", "pkg cpu", "ratio", "ours wall", "pkg wall", "max |diff|")
    print("{:<13} {:>6} {:>6} {:>9} {:>9} {:>6} {:>10} {:>9} {:>11}".format(*header))
    for name, (refs, hyps) in corpora(args.pairs).items():
        ours_cpu = ours_wall = pkg_cpu = pkg_wall = float("inf")
        for _ in range(args.repeats):
            _strip_once.cache_clear()  # no help from an earlier run
            ours, cpu, wall = timed(codebleu, refs, hyps)
            ours_cpu, ours_wall = min(ours_cpu, cpu), min(ours_wall, wall)
            pkg, cpu, wall = timed(lambda r, h: calc_codebleu(r, h, lang="python"), refs, hyps)
            pkg_cpu, pkg_wall = min(pkg_cpu, cpu), min(pkg_wall, wall)
        diffs = {k: abs(ours[k] - pkg[p]) for k, p in KEYS.items()}
        n_texts = len(set(hyps) | {r for rs in refs for r in rs})
        entry = {
            "texts_distinct": n_texts,
            "ours_cpu_s": round(ours_cpu, 3),
            "package_cpu_s": round(pkg_cpu, 3),
            "speedup_cpu": round(pkg_cpu / ours_cpu, 2),
            "ours_wall_s": round(ours_wall, 3),
            "package_wall_s": round(pkg_wall, 3),
            "speedup_wall": round(pkg_wall / ours_wall, 2),
            "max_abs_diff": max(diffs.values()),
            "bit_identical": all(ours[k] == pkg[p] for k, p in KEYS.items()),
            "ours": ours,
            "package": pkg,
        }
        if args.seed_spread:
            by_seed = package_dataflow_by_seed(refs, hyps, range(8))
            entry["package_dataflow_by_seed_0_to_7"] = by_seed
            entry["package_dataflow_seed_range"] = max(by_seed) - min(by_seed)
        results["corpora"][name] = entry
        print(
            f"{name:<13} {len(hyps):>6} {n_texts:>6} {ours_cpu:>8.2f}s {pkg_cpu:>8.2f}s {pkg_cpu / ours_cpu:>5.2f}x"
            f" {ours_wall:>9.2f}s {pkg_wall:>8.2f}s {entry['max_abs_diff']:>11.1e}"
        )
        if args.seed_spread:
            spread = f"{min(by_seed):.6f} .. {max(by_seed):.6f}"
            print(f"{'':<13} package dataflow over PYTHONHASHSEED 0..7: {spread}; ours {ours['dataflow_match']:.6f}")

    out = ROOT / "bench" / "results" / "codebleu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
