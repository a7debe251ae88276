"""Held-out pair accuracy of a trained reward model, broken down by what the two programs differ in.

    .venv/bin/python bench/rm_pair_kinds.py runs/rm            # a train_rm.py output folder
    .venv/bin/python bench/rm_pair_kinds.py runs/rm --variants-of runs/rm_variants   # another run's variant pairs

Each held-out pair (OUT/heldout_pairs.jsonl) is labelled by the first judge question, in this order, on
which its chosen and rejected programs disagree (answers from OUT/scored.jsonl): syntax, api_fits,
api_args, complete ("it runs"), else "other". Accuracy = the fraction of pairs where the reward model
scores the chosen program higher. The row "api_fits, both run" (a subset of api_fits, not counted twice in
"all") keeps the pairs where both programs run: only the API tells them apart, which is what PPO can
exploit when it swaps the asked-for API for another one that runs. A run made with --arg-variants / --api-variants adds rows "variants: KIND": its
held-out pairs of a program against the same program with one literal changed or its API swapped
(OUT/heldout_variant_pairs.jsonl), the cleanest pairs that differ only in an argument's value or in the API.
Prints a table and writes it as JSON to RUN/pair_kinds.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minirlaif.feedback.pairs import read_pairs, read_scored_samples  # noqa: E402
from minirlaif.reward_model import RewardModel  # noqa: E402
from minirlaif.tokenizer import load_tokenizer  # noqa: E402
from train_rm import Config, pair_accuracy, rewards_of  # noqa: E402

ORDER = ("syntax", "api_fits", "api_args", "complete")


def kind(chosen: dict[str, float], rejected: dict[str, float]) -> str:
    return next((q for q in ORDER if chosen[q] != rejected[q]), "other")


def rows_of(chosen: dict[str, float], rejected: dict[str, float]) -> list[str]:
    """The table rows a pair counts in: its kind, and "api_fits, both run" when only the API fit tells apart two
    programs that both run (the judge's P(good) for `complete` >= 0.5 for both; the swap PPO can exploit)."""
    k = kind(chosen, rejected)
    both_run = chosen["complete"] >= 0.5 and rejected["complete"] >= 0.5
    return [k, "api_fits, both run"] if k == "api_fits" and both_run else [k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a train_rm.py output folder (scored.jsonl, heldout_pairs.jsonl, model/)")
    parser.add_argument("--out", default="", help="where the table goes as JSON (default: RUN/pair_kinds.json, so that "
                        "scoring another run never replaces a stored result; e.g. bench/results/NAME.json)")
    parser.add_argument("--variants-of", default="", help="score the held-out variant pairs of this other train_rm.py "
                        "folder (made with --arg-variants / --api-variants; the same samples and held-out split), "
                        "e.g. to see how an RM trained without variants ranks them")
    args = parser.parse_args()
    run = Path(args.run)
    variants_run = Path(args.variants_of) if args.variants_of else run
    scored = read_scored_samples(run / "scored.jsonl")
    for folder in dict.fromkeys([run, variants_run]):  # the judged variants: rejected in variant pairs
        if (folder / "variants.jsonl").exists():
            scored += read_scored_samples(folder / "variants.jsonl")
    answers = {(s.prompt, s.response): {a.question_id: a.p_good for a in s.feedback.answers} for s in scored}
    pairs = read_pairs(run / "heldout_pairs.jsonl")
    model = RewardModel.from_pretrained(run / "model").eval()
    tokenizer = load_tokenizer(run / "model")
    cfg = Config()  # the default prompt / response lengths, as train_rm.py measures
    prompts = [p.prompt for p in pairs]
    chosen = rewards_of(model, tokenizer, prompts, [p.chosen for p in pairs], cfg, "cpu")
    rejected = rewards_of(model, tokenizer, prompts, [p.rejected for p in pairs], cfg, "cpu")
    hits: dict[str, list[bool]] = defaultdict(list)
    for p, c, r in zip(pairs, chosen.tolist(), rejected.tolist()):
        for row in ["all", *rows_of(answers[(p.prompt, p.chosen)], answers[(p.prompt, p.rejected)])]:
            hits[row].append(c > r)
    table = {k: {"pairs": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(hits.items()) if k != "all"}
    table["all"] = {"pairs": len(pairs), "accuracy": sum(hits["all"]) / max(1, len(pairs))}
    if (variants_run / "heldout_variant_pairs.jsonl").exists():
        variant_pairs = read_pairs(variants_run / "heldout_variant_pairs.jsonl")
        for k in ORDER:
            of_kind = [p for p in variant_pairs if kind(answers[(p.prompt, p.chosen)], answers[(p.prompt, p.rejected)]) == k]
            if of_kind:
                table[f"variants: {k}"] = {"pairs": len(of_kind),
                                           "accuracy": pair_accuracy(model, tokenizer, of_kind, cfg, "cpu")}
    print(f"{run}  pooling={model.pooling}")
    for k, v in table.items():
        print(f"  {k:18s} {v['pairs']:5d} pairs  accuracy {v['accuracy']:.3f}")
    train_kinds = Counter(kind(answers[(p.prompt, p.chosen)], answers[(p.prompt, p.rejected)])
                          for p in read_pairs(run / "pairs.jsonl"))
    out = Path(args.out) if args.out else run / "pair_kinds.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run": str(run), "variants_of": str(variants_run), "pooling": model.pooling,
                               "heldout": table, "train_pair_kinds": dict(train_kinds)}, indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
