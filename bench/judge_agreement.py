"""How far does a real small LLM judge agree with the analyzer? SmolLM2-135M-Instruct on 200 built-in programs.

    python train_sft.py && python train_rm.py          # README command 1 writes runs/rm/samples.jsonl
    python bench/judge_agreement.py                    # -> bench/results/judge_agreement.json

The programs are the first 200 distinct ones that the default SFT model sampled for the reward model
(runs/rm/samples.jsonl, seed 0: the same file on every machine, the chain is bit-reproducible). Each is
judged three ways, every answer cached under bench/runs/judge_agreement/ (a rerun resumes):

  analyzer   the offline program analysis, the reference here (it is what the default chain trains on)
  server     SmolLM2 served by llama.cpp (xllamacpp, 1 thread), through the OpenAI-compatible judge
  hf         the same weights through transformers (--judge hf), on the first --hf-programs programs only
             (a forward pass per question is slower): how far the two runtimes differ

Per question: how often the analyzer says Yes, the server judge's accuracy against the analyzer's answer
(its P(yes) >= 0.5), the AUC of its P(yes) for the analyzer's answer, its mean P(yes), and seconds per
question (wall time of the questions actually asked, 1 thread).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minirlaif.data.prompts import extract_program, format_prompt  # noqa: E402
from minirlaif.data.splits import load_dataset, with_code  # noqa: E402
from minirlaif.errors import InputError  # noqa: E402
from minirlaif.feedback import QUESTIONS, FeedbackCache, Item, OpenAIJudge, label, make_judge  # noqa: E402
from minirlaif.feedback.scoring import yes_or_no  # noqa: E402
from minirlaif.offline_models import export, start_server  # noqa: E402
from minirlaif.utils import run_main, write_json_atomic  # noqa: E402


def auc(scores: list[float], positive: list[bool]) -> float:
    """P(score of a random positive > score of a random negative), ties counting 1/2 (Mann-Whitney)."""
    pos = [s for s, y in zip(scores, positive) if y]
    neg = [s for s, y in zip(scores, positive) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def load_items(samples: Path, n: int, seed: int) -> tuple[list[Item], object]:
    """The first n distinct (instruction, program) samples, with their records (train_rm.py's choice)."""
    if not samples.exists():
        raise InputError(f"{samples}: no such file; run README command 1 (or train_sft.py && train_rm.py) first")
    data = load_dataset("builtin", seed=seed)
    records = with_code(data.train, "reward-model sampling")
    random.Random(seed).shuffle(records)  # train_rm.py's order: a sample's "index" points into it
    items, seen = [], set()
    for line_no, line in enumerate(samples.read_text().splitlines(), 1):
        row = json.loads(line)
        record = records[row["index"]]
        if format_prompt(record) != row["prompt"]:
            raise InputError(f"{samples}:{line_no}: field 'prompt' is not built-in record {row['index']}'s; "
                             f"this file was not written by train_rm.py --seed {seed} on the built-in data")
        program = extract_program(row["response"])
        if (row["prompt"], program) not in seen:
            seen.add((row["prompt"], program))
            items.append(Item(record.instruction, record.api_data, program, record))
        if len(items) == n:
            return items, data
    raise InputError(f"{samples}: only {len(items)} distinct programs, fewer than --n {n}")


def judged(judge, items, cache_path: Path, timings: dict, name: str) -> list:
    """Every answer of `judge` about `items` (cached); records seconds per question actually asked."""
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    with FeedbackCache(cache_path) as cache:
        before = len(cache)
        t0 = time.time()
        feedbacks = label(judge, items, cache=cache, workers=1)
        asked = len(cache) - before
    if asked:
        timings[name] = {"questions": asked, "seconds": round(time.time() - t0, 1)}
    return feedbacks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", default="runs/rm/samples.jsonl", help="train_rm.py's samples (seed --seed)")
    parser.add_argument("--seed", type=int, default=0, help="the --seed of the train_rm.py run that wrote --samples")
    parser.add_argument("--n", type=int, default=200, help="programs to judge")
    parser.add_argument("--hf-programs", type=int, default=25, help="programs also judged through transformers")
    parser.add_argument("--work", default="bench/runs/judge_agreement", help="caches and the exported model")
    parser.add_argument("--out", default="bench/results/judge_agreement.json")
    args = parser.parse_args()
    work = Path(args.work)
    items, data = load_items(Path(args.samples), args.n, args.seed)
    timings_path = work / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}

    analyzer = judged(make_judge("analyzer", api_database=data.api_database, hub=data.hub), items,
                      work / "analyzer.jsonl", timings, "analyzer")
    server, url = start_server("smollm2-135m", port=0, threads=1)
    try:
        remote = judged(OpenAIJudge(model="smollm2-135m", base_url=url, max_workers=1), items,
                        work / "server.jsonl", timings, "server")
    finally:
        del server
    folder = work / "smollm2-135m"
    if not folder.exists():
        export("smollm2-135m", folder)
    from minirlaif.feedback.judges import HFJudge

    local = judged(HFJudge(str(folder)), items[: args.hf_programs], work / "hf.jsonl", timings, "hf")
    write_json_atomic(timings, timings_path)

    per_question = {}
    for j, q in enumerate(QUESTIONS):
        truth = [fb.answers[j].answer == "Yes" for fb in analyzer]
        p = [fb.answers[j].p_yes for fb in remote]
        per_question[q.id] = {
            "analyzer_yes_rate": sum(truth) / len(truth),
            "accuracy": sum((pi >= 0.5) == t for pi, t in zip(p, truth)) / len(truth),
            "auc": auc(p, truth),
            "mean_p_yes": sum(p) / len(p),
            "said_yes_rate": sum(pi >= 0.5 for pi in p) / len(p),
        }
    methods = {}
    for fb in remote:
        for a in fb.answers:
            methods[a.detail.get("method", a.source)] = methods.get(a.detail.get("method", a.source), 0) + 1
    # How often the free answer began with another word, and how much of the first token's mass Yes/No held.
    answers = [a for fb in remote for a in fb.answers]
    other_word = sum(yes_or_no(a.detail.get("sampled", "")) is None for a in answers)
    mass = [sum(math.exp(lp) for tok, lp in a.detail.get("top_logprobs", []) if yes_or_no(tok)) for a in answers]
    diffs = [abs(a.p_yes - b.p_yes) for fa, fb in zip(remote, local) for a, b in zip(fa.answers, fb.answers)]
    same = [(a.p_yes >= 0.5) == (b.p_yes >= 0.5) for fa, fb in zip(remote, local) for a, b in zip(fa.answers, fb.answers)]
    result = {
        "programs": len(items), "samples": args.samples, "per_question": per_question, "server_methods": methods,
        "began_with_another_word": other_word,
        "yes_no_mass_of_first_token": {"min": min(mass), "mean": sum(mass) / len(mass), "max": max(mass)},
        "runtimes": {"questions": len(diffs), "mean_abs_diff": sum(diffs) / len(diffs), "max_abs_diff": max(diffs),
                     "same_answer": sum(same) / len(same)},
        "seconds_per_question": {k: v["seconds"] / v["questions"] for k, v in timings.items()},
        "timings": timings,
    }
    write_json_atomic(result, args.out)

    print(f"\nSmolLM2-135M-Instruct (llama.cpp, Q4_1) vs the analyzer on {len(items)} programs "
          f"({len(items) * len(QUESTIONS)} questions); how P(yes) was read: {methods}")
    print("| question | analyzer says Yes | SmolLM2 says Yes | accuracy | AUC of P(yes) | mean P(yes) |")
    print("|---|---:|---:|---:|---:|---:|")
    for qid, r in per_question.items():
        print(f"| {qid} | {r['analyzer_yes_rate']:.2f} | {r['said_yes_rate']:.2f} | {r['accuracy']:.2f} | "
              f"{r['auc']:.2f} | {r['mean_p_yes']:.3f} |")
    m = result["yes_no_mass_of_first_token"]
    print(f"{other_word} of {len(answers)} answers began with another word than Yes/No; Yes/No held "
          f"{m['min']:.0%}-{m['max']:.0%} of the first token's mass ({m['mean']:.0%} on average)")
    rt = result["runtimes"]
    print(f"llama.cpp vs transformers on the same weights, {rt['questions']} questions: mean |P(yes) difference| "
          f"{rt['mean_abs_diff']:.3f}, max {rt['max_abs_diff']:.3f}, same answer {rt['same_answer']:.1%}")
    print("seconds per question (1 thread): " + ", ".join(f"{k} {v:.3f}" for k, v in result["seconds_per_question"].items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_main(main)
