"""The built-in benchmark: Gorilla-format APIBench files generated from the catalogue.

Gorilla's programs download hub models, so they cannot run offline. This module writes a small
offline benchmark in the same format from `catalogue.CATALOGUE` (standard library and NumPy):

    builtin_train.json   APIBench records (JSON Lines, HuggingFace layout), n_train of them
    builtin_eval.json    APIBench records, n_eval of them
    builtin_api.jsonl    the API database: one 10-key entry per catalogue API, in catalogue order
    manifest.json        seed, sizes, catalogue hash and file checksums; written last

Generation is deterministic given the seed. Each split draws every API equally often (so every
API is in both splits when n >= the catalogue size). Train records use train slot values and
train phrasings only; eval records use held-out slot values, and HELDOUT_FRACTION of them a
held-out phrasing too, so no eval instruction is ever a train instruction.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

from minirlaif.data.apibench import write_api_database, write_apibench
from minirlaif.data.catalogue import CATALOGUE, API
from minirlaif.data.records import REPO_ROOT, APIRecord

FORMAT_VERSION = 1  # bump when the generator's output changes for the same catalogue
HELDOUT_FRACTION = 0.3  # share of eval records phrased with a held-out template
SPLITS = ("train", "eval")
FILES = {"train": "builtin_train.json", "eval": "builtin_eval.json", "api": "builtin_api.jsonl"}
MANIFEST = "manifest.json"
DEFAULT_DIR = REPO_ROOT / "data" / "builtin"
_MAX_TRIES = 30  # redraws to avoid repeating an instruction within a split


# ---------------------------------------------------------------------------------------------
# Rendering: values, programs, instructions, API database entries


def py_literal(value: Any) -> str:
    """`value` as Python source, used both in programs and in instructions.

    Strings get double quotes (like JSON) unless they contain one; containers are written
    element by element, so `[1, "a"]` stays `[1, "a"]` and `(3,)` stays a tuple.
    """
    if isinstance(value, str):
        return json.dumps(value) if '"' not in value else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(py_literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(py_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def import_line(module: str) -> str:
    """The single import style of a module: `import numpy as np`, else `import <module>`."""
    return "import numpy as np" if module == "numpy" else f"import {module}"


def render_program(api: API, values: dict[str, Any]) -> str:
    """The reference program: import, blank line, one assignment per slot, then the API's lines."""
    assignments = [f"{name} = {py_literal(values[name])}" for name in api.slot_names]
    body = api.program.replace("{call}", api.call)
    return "\n".join([import_line(api.module), ""] + assignments + [body])


def render_instruction(template: str, values: dict[str, Any]) -> str:
    """Fill a template's `{slot}` fields with the values written as Python literals."""
    return template.format(**{name: py_literal(v) for name, v in values.items()})


def _type_name(value: Any) -> str:
    if isinstance(value, (list, tuple)) and value:
        return f"{type(value).__name__}[{_type_name(value[0])}]"
    return type(value).__name__


def api_entry(api: API) -> dict:
    """The API's 10-key Gorilla documentation record (its API-database line and `api_data`)."""
    example = {name: value for key, (train, _) in api.slots.items() for name, value in _split_key(key, train[0])}
    return {
        "domain": api.domain,
        "framework": api.provider,
        "functionality": api.functionality,
        "api_name": api.api_name,
        "api_call": api.call,
        "api_arguments": {name: _type_name(value) for name, value in example.items()},
        "python_environment_requirements": ["python>=3.10"] + (["numpy"] if api.module == "numpy" else []),
        "example_code": render_program(api, example),
        "performance": {"dataset": "N/A", "accuracy": "N/A"},
        "description": api.description,
    }


def api_database() -> list[dict]:
    """Every catalogue API's documentation record, in catalogue order."""
    return [api_entry(api) for api in CATALOGUE]


def _split_key(key: str | tuple[str, ...], value: Any) -> list[tuple[str, Any]]:
    """Pairs (name, value) of one slot key; a tuple key spreads a tuple value over its names."""
    return list(zip(key, value)) if isinstance(key, tuple) else [(key, value)]


def catalogue_hash() -> str:
    """A short hash of the catalogue (every field and value) and FORMAT_VERSION."""
    data = [
        {
            "module": api.module, "call": api.call, "domain": api.domain,
            "functionality": api.functionality, "description": api.description,
            "slots": [[list(key) if isinstance(key, tuple) else key,
                       [[py_literal(v) for v in pool] for pool in pools]] for key, pools in api.slots.items()],
            "templates": list(api.templates), "heldout": list(api.heldout), "program": api.program,
        }
        for api in CATALOGUE
    ]
    text = json.dumps({"format_version": FORMAT_VERSION, "catalogue": data}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Sampling records


def _record(api: API, entry: dict, values: dict[str, Any], template: str, split: str, line: int) -> APIRecord:
    return APIRecord(
        instruction=render_instruction(template, values),
        api_call=api.call,
        domain=api.domain,
        provider=api.provider,
        code=render_program(api, values),
        api_data=entry,
        source=FILES[split],
        line=line,
        explanation=f"The program calls {api.api_name} ({api.functionality.lower()}) on the given "
                    "values and prints the result.",
        api_name=api.api_name,
        extra={"values": values, "template": template, "heldout_template": template in api.heldout},
    )


def _sample_split(split: str, n: int, seed: int) -> list[APIRecord]:
    """n records of one split, each API used n // len(CATALOGUE) or one more times."""
    if n < len(CATALOGUE):
        raise ValueError(f"{split} split of {n} records cannot hold all {len(CATALOGUE)} APIs")
    rng = random.Random(f"minirlaif-builtin/{seed}/{split}")  # str seeds are stable across runs
    entries = api_database()
    order = [i % len(CATALOGUE) for i in range(n)]
    rng.shuffle(order)
    pool_index = SPLITS.index(split)  # 0: train values, 1: eval values
    n_heldout = round(HELDOUT_FRACTION * n) if split == "eval" else 0
    heldout_positions = set(rng.sample(range(n), n_heldout))
    seen: set[str] = set()
    records = []
    for position, api_index in enumerate(order):
        api = CATALOGUE[api_index]
        templates = api.heldout if position in heldout_positions else api.templates
        for _ in range(_MAX_TRIES):  # redraw on a repeated instruction, give up after a few tries
            values = {}
            for key, pools in api.slots.items():
                values.update(_split_key(key, copy.deepcopy(rng.choice(pools[pool_index]))))
            record = _record(api, entries[api_index], values, rng.choice(templates), split, position + 1)
            if record.instruction not in seen:
                break
        seen.add(record.instruction)
        records.append(record)
    return records


def builtin_records(split: str, seed: int = 0, n_train: int = 4000, n_eval: int = 400) -> list[APIRecord]:
    """The records of one split ("train" or "eval"), exactly as `build_builtin` writes them."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return _sample_split(split, n_train if split == "train" else n_eval, seed)


# ---------------------------------------------------------------------------------------------
# Files


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _expected_manifest(seed: int, n_train: int, n_eval: int) -> dict:
    return {"format_version": FORMAT_VERSION, "catalogue_hash": catalogue_hash(), "seed": seed,
            "n_train": n_train, "n_eval": n_eval, "n_apis": len(CATALOGUE)}


def build_builtin(out_dir: str | Path, seed: int = 0, n_train: int = 4000, n_eval: int = 400) -> dict[str, Path]:
    """Generate the built-in benchmark into out_dir; returns {"train", "eval", "api", "manifest"} paths.

    The manifest is removed first and written last, so an interrupted build never looks complete.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    paths = {name: out / filename for name, filename in FILES.items()}
    write_apibench(builtin_records("train", seed, n_train, n_eval), paths["train"])
    write_apibench(builtin_records("eval", seed, n_train, n_eval), paths["eval"])
    write_api_database(api_database(), paths["api"])
    manifest = _expected_manifest(seed, n_train, n_eval)
    manifest["files"] = {FILES[name]: _sha256(path) for name, path in paths.items()}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST)
    paths["manifest"] = out / MANIFEST
    return paths


def _is_complete(out: Path, seed: int, n_train: int, n_eval: int) -> bool:
    """True when out holds a finished build with these settings and untouched files."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        files = manifest.pop("files")
        if manifest != _expected_manifest(seed, n_train, n_eval) or set(files) != set(FILES.values()):
            return False
        return all(_sha256(out / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return False


def ensure_builtin(out_dir: str | Path | None = None, seed: int = 0, n_train: int = 4000,
                   n_eval: int = 400) -> Path:
    """The folder of the built-in benchmark (default data/builtin), generated unless already complete."""
    out = Path(out_dir) if out_dir is not None else DEFAULT_DIR
    if not _is_complete(out, seed, n_train, n_eval):
        build_builtin(out, seed, n_train, n_eval)
    return out


__all__ = [
    "FILES", "MANIFEST", "api_database", "api_entry", "build_builtin", "builtin_records",
    "catalogue_hash", "ensure_builtin", "py_literal", "render_instruction", "render_program",
]
