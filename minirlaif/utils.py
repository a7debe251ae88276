"""Small plumbing shared by the scripts: config parsing, seeds, devices, JSONL logs, atomic writes."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from minirlaif.errors import InputError, RunStopped
from minirlaif.jsonl import read_jsonl

C = TypeVar("C")


def parse_config(cls: type[C], description: str, argv: list[str] | None = None) -> C:
    """Build an argparse parser from a config dataclass (one `--flag` per field, help from metadata).

    A field's `type` (minirlaif.flags) checks its value; the dataclass's optional `check()` returns a
    message about flags that do not fit together. Either way argparse stops with one line, exit 2.

    Settings files come first, nanoGPT-style: `python train_rm.py config/rm_eos.py --seed 1` takes the
    `name = value` lines of config/rm_eos.py, then the flags (a flag wins over the file).
    """
    parser = argparse.ArgumentParser(description=description, epilog="settings files: SCRIPT FILE.py [FILE.py ...] "
                                     "[--flags]; each line of a file is `name = value` (see config/)",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    argv = list(sys.argv[1:] if argv is None else argv)
    files = []
    while argv and not argv[0].startswith("-"):
        files.append(argv.pop(0))
    argv = [token for path in files for token in _settings_file_flags(path, cls, parser)] + argv
    own = vars(cls).get("__annotations__", {})  # the script's own flags first in --help, then the shared groups
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "").replace("%", "%%")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            kind = f.metadata.get("type") or {"int": int, "float": float}.get(getattr(f.type, "__name__", f.type), str)
            parser.add_argument(flag, type=kind, default=default, help=help_text,
                                choices=f.metadata.get("choices"))
    cfg = cls(**vars(parser.parse_args(argv)))
    problem = cfg.check() if hasattr(cfg, "check") else None
    if problem:
        parser.error(problem)
    return cfg


def _settings_file_flags(path: str, cls: type, parser: argparse.ArgumentParser) -> list[str]:
    """The flags a settings file stands for. Each statement is `name = literal` (a docstring and comments are
    fine); a name that is not a setting, or a value its flag refuses, stops with the file and line."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=path)
    except OSError as e:
        parser.error(f"{path}: cannot read this settings file ({e.strerror}); settings files come before the flags")
    except (SyntaxError, ValueError) as e:
        parser.error(f"{path} line {getattr(e, 'lineno', '?')}: not a settings file ({e}); write `name = value` lines")
    flags = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # the file's docstring
        where = f"{path} line {node.lineno}"
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            parser.error(f"{where}: only `name = value` lines are allowed")
        name = node.targets[0].id
        if name not in fields:
            parser.error(f"{where}: '{name}' is not a setting of this script (see --help for the names)")
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            parser.error(f"{where}: {name} must be a plain value (a number, a string, True or False)")
        flag, f = "--" + name.replace("_", "-"), fields[name]
        if f.type in (bool, "bool"):
            if not isinstance(value, bool):
                parser.error(f"{where}: {name} must be True or False, not {value!r}")
            flags.append(flag if value else "--no-" + name.replace("_", "-"))
            continue
        kind = f.metadata.get("type") or {"int": int, "float": float}.get(getattr(f.type, "__name__", f.type), str)
        try:
            checked = kind(str(value))
        except (argparse.ArgumentTypeError, ValueError) as e:
            parser.error(f"{where}: {name} = {value!r}: {e}")
        if f.metadata.get("choices") and checked not in f.metadata["choices"]:
            parser.error(f"{where}: {name} = {value!r}: choose from {', '.join(f.metadata['choices'])}")
        flags.append(f"{flag}={value}")
    return flags


def field(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help string for `--help` (and e.g. `type=`, `choices=` for its flag)."""
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def quiet_transformers() -> None:
    """Silence transformers' per-save progress bars and advisory warnings (our own tqdm bars report)."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG a training step touches, so a resumed run draws the same numbers."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def pick_device(name: str = "auto") -> torch.device:
    """`auto` -> CUDA when present, else CPU. An explicit `cuda` without a GPU is an input error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def write_json_atomic(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


class JsonlLogger:
    """Appends one JSON object per line (flushed), e.g. runs/sft/metrics.jsonl.

    A run that starts at `start` (its checkpoint's step or iteration under `key`; 0 for a fresh run)
    first drops the rows it is about to redo (a fresh run: all of them), so the log has each step once.
    """

    def __init__(self, path: str | Path, start: int = 0, key: str = "step"):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if path.is_file() and start > 0:  # a torn last line (a kill mid-write) or a bad line is not kept
            kept = [json.dumps(row, default=float) + "\n"
                    for _, row in read_jsonl(path, skip=lambda *_: None, drop_torn_tail=True) if row.get(key, 0) <= start]
        if path.is_file():
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, path)
        self.f = open(path, "a", encoding="utf-8")

    def log(self, **row: Any) -> None:
        row.setdefault("time", round(time.time(), 3))
        self.f.write(json.dumps(row, default=float) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def run_main(main: Callable[[], None]) -> None:
    """Run a script's main: bad input becomes one line on stderr and exit code 2; a run that stopped on
    purpose (RunStopped: non-finite loss, judge gave up) one line and exit code 1."""
    try:
        main()
    except InputError as e:
        print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)
        sys.exit(2)
    except RunStopped as e:
        print("stopped: " + " ".join(str(e).splitlines()), file=sys.stderr)
        sys.exit(1)


def debug_kill_point(step: int) -> None:
    """Test hook: SIGKILL ourselves after `step` when MINIRLAIF_KILL_AT_STEP says so (kill/resume tests)."""
    at = os.environ.get("MINIRLAIF_KILL_AT_STEP")
    if at is not None and int(at) == step:
        os.kill(os.getpid(), 9)


def debug_kill_at(stage: str, count: int) -> None:
    """Test hook: SIGKILL ourselves when MINIRLAIF_KILL_AT equals "stage:count", e.g. "sample:1" after the
    first chunk of samples is on disk (kill/resume tests of stages that have no optimizer steps)."""
    if os.environ.get("MINIRLAIF_KILL_AT") == f"{stage}:{count}":
        os.kill(os.getpid(), 9)
