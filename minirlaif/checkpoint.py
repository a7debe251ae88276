"""Checkpoints written atomically, and the run-folder layout every script shares.

    runs/<stage>/model/          the final model (policy or reward model + tokenizer): what the next
                                 stage reads
    runs/<stage>/checkpoint/     the latest resumable state: model/ + state.pt (optimizer, scheduler,
                                 step, RNG, anything else the loop needs)
    runs/<stage>/metrics.jsonl   one line per logged step
    runs/<stage>/.minirlaif-run.json   which script owns the folder (see claim_run_folder)

Atomic folder replace: write `X.tmp/`, move the old `X/` to `X.old/`, rename `X.tmp/` to `X/`, delete
`X.old/`. A kill at any moment leaves either `X/` or `X.old/` complete; `resolve()` picks it up.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import torch

from minirlaif.errors import InputError
from minirlaif.utils import write_json_atomic

MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"
OWNER_FILE = ".minirlaif-run.json"


def claim_run_folder(out: str | Path, script: str, config_keys: set[str], overwrite: bool = False) -> None:
    """Make `out` the run folder of `script`, or refuse before any work if it holds anything else.

    A script replaces what it writes (args.json, metrics.jsonl, model/, ...), so it may only write
    into an empty or new folder, or one an earlier run of the same script made (its owner file says
    so; folders from before owner files are recognised by an args.json with exactly this script's
    settings). `overwrite` lets it write into any folder: its outputs there are replaced, other files
    stay.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a folder; pick another --out")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    owner = _owner(out, config_keys, script)
    if entries and owner != script and not overwrite:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        what = f"the run of {owner}" if owner else f"files that {script} did not write ({shown})"
        raise InputError(f"--out {out}: holds {what}; pick another --out, or pass --overwrite to let {script} "
                         "replace its outputs there (other files stay)")
    if owner == script and (out / OWNER_FILE).exists():
        return
    try:
        write_json_atomic({"script": script}, out / OWNER_FILE)
    except OSError as e:
        raise InputError(f"{out}: output folder is not writable ({e.strerror}); pick another --out") from e


def _owner(out: Path, config_keys: set[str], script: str) -> str | None:
    """The script that made run folder `out`, or None if it is not a run folder we recognise."""
    try:
        owner = json.loads((out / OWNER_FILE).read_text()).get("script")
        return owner if isinstance(owner, str) else None
    except (OSError, ValueError, AttributeError):
        pass
    try:
        legacy = json.loads((out / "args.json").read_text())
    except (OSError, ValueError):
        return None
    same = isinstance(legacy, dict) and set(legacy) | {"overwrite"} == config_keys | {"overwrite"}
    return script if same else None


def write_dir_atomic(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_dir)` to fill a fresh folder, then swap it into `target` atomically."""
    target = Path(target)
    tmp, old = target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    for f in tmp.rglob("*"):  # data on disk before the rename makes it visible
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def resolve(target: str | Path) -> Path | None:
    """The complete folder at `target`, or its `.old` twin after a kill mid-swap, or None."""
    target = Path(target)
    if target.exists():
        return target
    old = target.with_name(target.name + ".old")
    return old if old.exists() else None


def model_dir(run_or_model: str | Path) -> Path:
    """`runs/sft` -> `runs/sft/model`; a folder that already is a model is returned as is."""
    path = Path(run_or_model)
    found = resolve(path / MODEL_DIR)
    if found is not None:
        return found
    if (path / "config.json").exists():
        return path
    if found is None:
        raise InputError(f"{path}: no model found (expected {path / MODEL_DIR}/config.json); "
                         "run the previous stage first or pass the right folder")
    return found


def resume_hint(run_dir: str | Path, fix: str = "lower --lr") -> str:
    """What a run that stopped (e.g. on a non-finite loss) tells the user: its last checkpoint, or none yet."""
    found = resolve(Path(run_dir) / CHECKPOINT_DIR)
    if found is None:
        return f"no checkpoint was written to {run_dir} yet ({fix} and rerun)"
    return f"the last good checkpoint is in {found} ({fix} and rerun with --resume)"


def save_checkpoint(run_dir: str | Path, save_model: Callable[[Path], None], state: dict) -> None:
    """Write run_dir/checkpoint/{model/, state.pt} atomically."""

    def write(tmp: Path) -> None:
        save_model(tmp / MODEL_DIR)
        torch.save(state, tmp / STATE_FILE)

    write_dir_atomic(Path(run_dir) / CHECKPOINT_DIR, write)


def load_checkpoint(run_dir: str | Path) -> tuple[Path, dict] | None:
    """(model folder, state dict) of the latest checkpoint, or None when there is none."""
    found = resolve(Path(run_dir) / CHECKPOINT_DIR)
    if found is None or not (found / STATE_FILE).exists():
        return None
    try:
        state = torch.load(found / STATE_FILE, weights_only=False)
    except Exception as e:  # a truncated or foreign file: pickle, zip and torch all raise their own errors
        raise InputError(f"{found / STATE_FILE}: not a readable checkpoint ({type(e).__name__}); remove "
                         f"{found} to start over, or pick another --out") from None
    return found / MODEL_DIR, state
