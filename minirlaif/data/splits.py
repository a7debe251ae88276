"""Choose the data a script trains and evaluates on: the built-in benchmark or Gorilla's files.

    --data builtin                    the embedded benchmark (generated on first use), hub "builtin"
    --data ../shared/gorilla          a Gorilla folder: apibench/{hub}_train.json when present, else the
                                      eval file split by seed (the train file is not shipped here);
                                      api/{hub}_api.jsonl is the API database
    --data FILE.json [--eval-data F]  any APIBench-format file(s)
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path

from minirlaif.data.apibench import load_api_database, load_apibench
from minirlaif.data.records import APIRecord
from minirlaif.errors import InputError

HUBS = ("huggingface", "torchhub", "tensorflowhub")


@dataclass
class Dataset:
    train: list[APIRecord]
    eval: list[APIRecord]
    api_database: list[dict]
    hub: str  # "builtin", "huggingface", "torchhub" or "tensorflowhub": how AST matching reads the DB
    name: str


def _hub_of(path: Path) -> str:
    for hub in HUBS:
        if path.name.startswith(hub):
            return hub
    return "huggingface"


def _split(records: list[APIRecord], eval_fraction: float, seed: int) -> tuple[list, list]:
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(round(len(records) * eval_fraction)))
    eval_ids = set(order[:n_eval])
    return ([r for i, r in enumerate(records) if i not in eval_ids],
            [r for i, r in enumerate(records) if i in eval_ids])


def load_dataset(data: str = "builtin", eval_data: str | None = None, api_db: str | None = None,
                 eval_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Resolve `--data` / `--eval-data` / `--api-db` into train and eval records and an API database."""
    if data == "builtin":
        from minirlaif.data.builtin import ensure_builtin

        folder = ensure_builtin()
        return Dataset(load_apibench(folder / "builtin_train.json"), load_apibench(folder / "builtin_eval.json"),
                       load_api_database(folder / "builtin_api.jsonl"), "builtin", "builtin")
    path = Path(data)
    if not path.exists():
        raise InputError(f"--data {data}: no such file or folder (use 'builtin' or a Gorilla APIBench path)")
    if (path / "apibench").is_dir():  # a Gorilla root folder
        evals = sorted((path / "apibench").glob("*_eval.json"))
        if not evals:
            raise InputError(f"{path / 'apibench'}: no *_eval.json file found")
        hub = _hub_of(evals[0])
        trains = sorted((path / "apibench").glob(f"{hub}_train.json"))
        api_db = api_db or str(path / "api" / f"{hub}_api.jsonl")
        eval_records = load_apibench(evals[0])
        if trains:
            train_records = load_apibench(trains[0])
        else:
            train_records, eval_records = _split(eval_records, eval_fraction, seed)
        return Dataset(train_records, eval_records, load_api_database(api_db), hub, path.name)
    records = load_apibench(path)
    if eval_data:
        train_records, eval_records = records, load_apibench(eval_data)
    else:
        train_records, eval_records = _split(records, eval_fraction, seed)
    if api_db is None:
        raise InputError(f"--data {data}: pass --api-db with the API database (api/*_api.jsonl) for this data")
    return Dataset(train_records, eval_records, load_api_database(api_db), _hub_of(path), path.stem)


def with_code(records: list[APIRecord], what: str = "training") -> list[APIRecord]:
    """Records that have a reference program; the rest are counted in one warning."""
    kept = [r for r in records if r.code.strip()]
    if len(kept) < len(records):
        warnings.warn(f"{len(records) - len(kept)} of {len(records)} records have no reference code "
                      f"and are skipped for {what}", stacklevel=2)
    return kept
