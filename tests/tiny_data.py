"""A tiny APIBench-format dataset written by tests (4 APIs, deterministic), for fast end-to-end runs."""

from __future__ import annotations

import random
from pathlib import Path

from minirlaif.data.apibench import write_api_database, write_apibench
from minirlaif.data.records import APIRecord

APIS = [
    ("math.gcd", "math", "Number theory", "Compute the greatest common divisor of {a} and {b}.", "math.gcd(a, b)"),
    ("math.lcm", "math", "Number theory", "Find the least common multiple of {a} and {b}.", "math.lcm(a, b)"),
    ("math.hypot", "math", "Geometry", "Get the length of the hypotenuse with legs {a} and {b}.", "math.hypot(a, b)"),
    ("operator.mul", "operator", "Arithmetic", "Multiply {a} by {b}.", "operator.mul(a, b)"),
]


def api_entry(name: str, module: str, domain: str, call: str) -> dict:
    return {"domain": domain, "framework": "Python Standard Library", "functionality": name.split(".")[1],
            "api_name": name, "api_call": call, "api_arguments": ["a", "b"],
            "python_environment_requirements": [module], "example_code": "N/A",
            "performance": {"dataset": "N/A", "accuracy": "N/A"}, "description": f"{name} of two numbers"}


def tiny_records(n: int, seed: int = 0) -> list[APIRecord]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        name, module, domain, template, call = APIS[i % len(APIS)]
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        code = f"import {module}\n\na = {a}\nb = {b}\nresult = {call}\nprint(result)\n"
        records.append(APIRecord(instruction=template.format(a=a, b=b), api_call=call, domain=domain,
                                 provider="Python Standard Library", code=code,
                                 api_data=api_entry(name, module, domain, call), source="tiny", line=i + 1,
                                 explanation=f"Use {name}.", api_name=name))
    return records


def write_tiny(folder: Path, n_train: int = 64, n_eval: int = 16) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"train": folder / "tiny_train.json", "eval": folder / "tiny_eval.json", "api": folder / "tiny_api.jsonl"}
    write_apibench(tiny_records(n_train, seed=0), paths["train"])
    write_apibench(tiny_records(n_eval, seed=1), paths["eval"])
    write_api_database([api_entry(n, m, d, c) for n, m, d, _, c in APIS], paths["api"])
    return paths


def data_args(paths: dict[str, Path]) -> list[str]:
    """The --data / --eval-data / --api-db flags for a `write_tiny` folder."""
    return ["--data", str(paths["train"]), "--eval-data", str(paths["eval"]), "--api-db", str(paths["api"])]


def train_tiny_sft(out: Path, paths: dict[str, Path], *extra: str) -> Path:
    """A tiny SFT run on `write_tiny` data, in process (tiny preset, 300-token vocabulary, CPU)."""
    import train_sft

    args = [*data_args(paths), "--out", str(out), "--batch-size", "8", "--vocab-size", "300", "--samples", "0",
            "--device", "cpu", *extra]
    train_sft.main(train_sft.parse_config(train_sft.Config, "", args))
    return out


def tiny_models(seed: int = 0, vocab_size: int = 200, preset: str = "tiny"):
    """A random tiny policy (T5 `tiny` or decoder-only `gpt2-tiny`), a frozen copy as reference, and a reward
    model on another copy."""
    import copy

    import torch

    from minirlaif.policy import new_policy
    from minirlaif.reward_model import RewardModel

    torch.manual_seed(seed)
    policy = new_policy(preset, vocab_size, 0, 1).eval()
    ref = copy.deepcopy(policy).requires_grad_(False)
    rm = RewardModel(copy.deepcopy(policy.backbone)).eval().requires_grad_(False)
    return policy, ref, rm
