"""Evaluate: AST accuracy, exact API match, hallucination, ROUGE-L, CodeBLEU, executability, side by side.

    python evaluate.py                          # runs/sft and runs/ppo (those that exist), built-in eval split
    python evaluate.py --models runs/sft,runs/ppo --runs 3 --temperature 0.7
    python evaluate.py --greedy --limit 100
    python evaluate.py --best-of 4,16           # also: the best of 4 / 16 samples by the reward model runs/rm
    torchrun --nproc_per_node 4 evaluate.py     # each process generates a quarter; rank 0 scores and writes
    python evaluate.py --responses ../shared/gorilla/eval-data/responses/huggingface/response_huggingface_Gorilla_FT_0_shot.jsonl \\
                       --data ../shared/gorilla   # score existing generations, no model needed

Writes OUT/summary.json (every number, with the executability mode) and OUT/<name>.examples.jsonl
(instruction, reference, response, each metric, sandbox status and error) so failures can be read.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from minirlaif import distributed, flags
from minirlaif.checkpoint import claim_run_folder, model_dir
from minirlaif.data import clean_response_text, load_api_database, load_apibench, load_responses
from minirlaif.data.prompts import extract_program, format_prompt
from minirlaif.data.splits import load_dataset
from minirlaif.errors import InputError
from minirlaif.generation import generate_texts
from minirlaif.jsonl import write_jsonl_atomic
from minirlaif.metrics.report import ROWS, score_responses
from minirlaif.policy import load_policy
from minirlaif.reward_model import RewardModel, score_texts
from minirlaif.settings import DataSettings, RunSettings, SamplingSettings, default_for
from minirlaif.tokenizer import load_tokenizer
from minirlaif.utils import (field, parse_config, quiet_transformers, set_seed,
                             write_json_atomic)

DEFAULT_MODELS = ("runs/sft", "runs/ppo")


@dataclass
class Config(RunSettings, DataSettings, SamplingSettings):
    """evaluate.py's flags: the shared groups (minirlaif/settings.py) and these."""

    models: str = field("", "comma-separated run or model folders (default: runs/sft, runs/ppo that exist)")
    responses: str = field("", "score a file of existing generations (JSONL with question_id, text) instead")
    out: str = default_for(RunSettings, "out", "runs/eval")
    temperature: float = default_for(SamplingSettings, "temperature", 0.7)
    limit: int = field(0, "evaluate only the first N eval examples (0 = all)", type=flags.count)
    runs: int = field(3, "sampled generations per example; mean and spread are reported", type=flags.positive_int)
    greedy: bool = field(False, "greedy decoding (one run) instead of sampling")
    batch_size: int = field(64, "prompts per generation batch", type=flags.positive_int)
    exec_mode: str = field("auto", "executability: run (sandbox), static, or auto (run for builtin data)",
                           choices=["auto", "run", "static"])
    hub: str = field("auto", "how AST matching reads the API database: auto (from --data), builtin, huggingface, "
                     "torchhub, tensorflowhub", choices=["auto", "builtin", "huggingface", "torchhub", "tensorflowhub"])
    workers: int = field(0, "sandbox worker processes (0 = one per CPU core)", type=flags.count)
    timeout: float = field(5.0, "seconds per program in the sandbox", type=flags.float_in(0, 3600, low_open=True))
    best_of: str = field("", "also evaluate best-of-n: N samples per instruction, the one the reward model --rm "
                         "scores highest is the answer; comma-separated N's, e.g. 4,16 (one set of max N samples)")
    rm: str = field("runs/rm", "reward-model run (or model folder) that picks the best of --best-of samples")

    @property
    def best_of_ns(self) -> list[int]:
        """--best-of as sorted sample counts ([] when not given; `check` has vetted it)."""
        return sorted({int(n) for n in self.best_of.split(",") if n.strip()})

    def check(self) -> str | None:
        """Flags that are fine alone but not together (argparse reports it in one line)."""
        try:
            if any(n < 2 for n in self.best_of_ns):
                raise ValueError
        except ValueError:
            return f"--best-of {self.best_of!r}: give sample counts of 2 or more, comma-separated (e.g. 4,16)"
        tokens = self.batch_size * (self.max_prompt_len + self.max_new_tokens)
        return flags.too_big(f"--batch-size {self.batch_size} (the {tokens:,} tokens of one generation batch)",
                             tokens * flags.ROLLOUT_BYTES_PER_TOKEN)


def gorilla_response_records(cfg: Config) -> tuple[list[str], list, list[dict], str]:
    """Responses joined to their gold records by question_id - 1 (Gorilla's rule)."""
    folder = Path(cfg.data)
    eval_file = Path(cfg.eval_data) if cfg.eval_data else next(iter(sorted((folder / "apibench").glob("*_eval.json"))), None)
    if eval_file is None or not eval_file.exists():
        raise InputError("--responses needs the eval file: pass --eval-data or a Gorilla folder as --data")
    hub = next((h for h in ("huggingface", "torchhub", "tensorflowhub") if eval_file.name.startswith(h)), "huggingface")
    api_db = Path(cfg.api_db) if cfg.api_db else folder / "api" / f"{hub}_api.jsonl"
    records = load_apibench(eval_file)
    texts, joined = [], []
    for i, row in enumerate(load_responses(cfg.responses)):
        qid = row.get("question_id")
        if not isinstance(qid, int) or not 1 <= qid <= len(records):
            raise InputError(f"{cfg.responses}:{i + 1}: field 'question_id': {qid!r} is not a line of {eval_file} "
                             f"(1..{len(records)}); is this the response file for that eval set?")
        texts.append(row.get("text") or "")
        joined.append(records[qid - 1])
    return texts, joined, load_api_database(api_db), hub


def fmt(values: list[float]) -> str:
    if any(v != v for v in values):  # nan
        return "n/a"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.pstdev(values):.1f}"


def print_table(results: dict[str, list[dict]], exec_mode: str) -> str:
    names = list(results)
    width = max(32, *(len(label) + 2 for _, label in ROWS))
    cols = [max(14, len(n) + 2) for n in names]
    lines = ["metric (%)".ljust(width) + "".join(n.rjust(c) for n, c in zip(names, cols))]
    for key, label in ROWS:
        label = f"{label} [{exec_mode}]" if key == "executability" else label
        lines.append(label.ljust(width) + "".join(fmt([r[key] for r in results[n]]).rjust(c)
                                                  for n, c in zip(names, cols)))
    table = "\n".join(lines)
    print(table)
    return table


def best_of_n(policy, tokenizer, reward_model, prompts: list[str], ns: list[int], cfg: Config, generator,
              progress: str | None) -> dict[int, list[str]]:
    """For each n in `ns`, the response to each prompt that the reward model scores highest among the first n
    of max(ns) samples (one set of samples serves every n)."""
    n_max = max(ns)
    repeated = [p for p in prompts for _ in range(n_max)]  # prompt i's samples are rows i * n_max ...
    texts = generate_texts(policy, tokenizer, repeated, cfg.max_prompt_len, cfg.max_new_tokens, cfg.temperature,
                           False, cfg.batch_size, generator, progress=progress)
    scores = score_texts(reward_model, tokenizer, repeated, texts, cfg.max_prompt_len, cfg.max_new_tokens,
                         next(policy.parameters()).device).view(len(prompts), n_max)  # (P, n_max)
    return {n: [texts[i * n_max + int(scores[i, :n].argmax())] for i in range(len(prompts))] for n in ns}


def main(cfg: Config) -> dict:
    out = Path(cfg.out)
    if cfg.responses and distributed.launched_rank() != 0:
        return {}  # scoring a file of responses is rank 0's job alone: no process group, nothing to wait for
    rank, _, _, device = ((0, 1, 0, torch.device("cpu")) if cfg.responses else
                          distributed.setup(cfg.device, timeout_minutes=24 * 60))  # the others wait while rank 0 scores
    if distributed.is_main():
        claim_run_folder(out, "evaluate.py", {f.name for f in fields(Config)}, cfg.overwrite)
    quiet_transformers()
    results: dict[str, list[dict]] = {}
    if cfg.responses:
        texts, records, api_db, hub = gorilla_response_records(cfg)
        exec_mode = "static" if cfg.exec_mode == "auto" else cfg.exec_mode
        if cfg.limit:
            texts, records = texts[: cfg.limit], records[: cfg.limit]
        programs = [extract_program(clean_response_text(t)) for t in texts]
        summary, rows = score_responses(texts, programs, records, api_db, hub, exec_mode,
                                        cfg.workers or None, cfg.timeout)
        name = Path(cfg.responses).stem
        results[name] = [summary]
        write_jsonl_atomic(rows, out / f"{name}.examples.jsonl")
    else:
        data = load_dataset(cfg.data, cfg.eval_data or None, cfg.api_db or None, seed=cfg.seed)
        if cfg.hub != "auto":
            data.hub = cfg.hub
        records = data.eval[: cfg.limit] if cfg.limit else data.eval
        exec_mode = ("run" if data.hub == "builtin" else "static") if cfg.exec_mode == "auto" else cfg.exec_mode
        models = [m for m in cfg.models.split(",") if m] or [m for m in DEFAULT_MODELS if Path(m, "model").exists()]
        if not models:
            raise InputError("no model to evaluate: train one (python train_sft.py) or pass --models / --responses")
        runs = 1 if cfg.greedy else cfg.runs
        ns = cfg.best_of_ns
        reward_model = RewardModel.from_pretrained(model_dir(cfg.rm)).to(device).eval() if ns else None
        for m in models:
            path = model_dir(m)
            name = Path(m).name if Path(m).name != "model" else Path(m).parent.name
            policy = load_policy(path).to(device).eval()
            tokenizer = load_tokenizer(path)
            results[name] = []
            for run in range(runs):
                set_seed(cfg.seed + run)
                generator = torch.Generator(device=device).manual_seed(cfg.seed + run + rank * 100003)
                texts = generate_texts(policy, tokenizer, [format_prompt(r) for r in distributed.shard(records)],
                                       cfg.max_prompt_len, cfg.max_new_tokens, cfg.temperature, cfg.greedy,
                                       cfg.batch_size, generator,
                                       progress=f"{name} run {run + 1}/{runs}" if distributed.is_main() else None)
                texts = [t for part in distributed.all_gather_object(texts) for t in part]  # every rank's, in order
                if not distributed.is_main():
                    continue  # rank 0 scores and writes
                programs = [extract_program(t) for t in texts]
                summary, rows = score_responses(texts, programs, records, data.api_database, data.hub, exec_mode,
                                                cfg.workers or None, cfg.timeout, ours=True)
                results[name].append(summary)
                if run == 0:
                    write_jsonl_atomic(rows, out / f"{name}.examples.jsonl")
            if ns and reward_model.backbone.config.vocab_size != policy.config.vocab_size:
                raise InputError(f"{cfg.rm}: reward model vocabulary ({reward_model.backbone.config.vocab_size}) "
                                 f"differs from {m}'s ({policy.config.vocab_size}); use an RM trained from its SFT run")
            for run in range(runs if ns else 0):  # best-of-n: its own samples, so the plain columns stay as they were
                generator = torch.Generator(device=device).manual_seed(cfg.seed + run + rank * 100003 + 500009)
                best = best_of_n(policy, tokenizer, reward_model, [format_prompt(r) for r in distributed.shard(records)],
                                 ns, cfg, generator, f"{name} best-of-{max(ns)} run {run + 1}/{runs}"
                                 if distributed.is_main() else None)
                for n in ns:
                    texts = [t for part in distributed.all_gather_object(best[n]) for t in part]
                    if not distributed.is_main():
                        continue
                    summary, rows = score_responses(texts, [extract_program(t) for t in texts], records,
                                                    data.api_database, data.hub, exec_mode, cfg.workers or None,
                                                    cfg.timeout, ours=True)
                    results.setdefault(f"{name} best-of-{n}", []).append(summary)
                    if run == 0:
                        write_jsonl_atomic(rows, out / f"{name}.best-of-{n}.examples.jsonl")
    if not distributed.is_main():
        distributed.cleanup()
        return {}
    table = print_table(results, exec_mode)
    report = {"config": asdict(cfg), "exec_mode": exec_mode, "results": results, "table": table}
    write_json_atomic(report, out / "summary.json")
    distributed.cleanup()
    return report


if __name__ == "__main__":
    from minirlaif.utils import run_main

    run_main(lambda: main(parse_config(Config, __doc__.split("\n")[0])))
