"""What each command-line flag may hold: argparse types that refuse bad values before any work.

    lr: float = field(2e-3, "peak learning rate", type=positive_float)

A value outside its range stops the script in argparse's one-line error, exit code 2:
`train_sft.py: error: argument --batch-size: '0' must be an integer >= 1`.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from typing import Callable

import torch

SEED_LIMIT = 2**32  # numpy's seed range; torch and random take it too
# A floor on what one sequence token costs while it is sampled and trained on (int64 id, masks, float32
# log-probs under the policy and the reference, value, reward, advantage, return, and the sampler's
# cache): used to refuse sizes no machine here could hold, before anything is allocated.
ROLLOUT_BYTES_PER_TOKEN = 64


def _number(text: str, kind: type) -> float | int:
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer in [low, high] (high None: no upper bound)."""
    def parse(text: str) -> int:
        value = _number(text, int)
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"{text!r} must be an integer {bound}")
        return value
    parse.__name__ = f"int>={low}"
    return parse


positive_int = int_at_least(1)
count = int_at_least(0)  # 0 means "all" or "off" where the help says so
seed = int_at_least(0, SEED_LIMIT - 1)


def float_in(low: float, high: float, *, low_open: bool = False, high_open: bool = False,
             allow_nan: bool = False) -> Callable[[str], float]:
    """A finite number in the interval (inf is never allowed; nan only with allow_nan, meaning "off")."""
    def parse(text: str) -> float:
        value = _number(text, float)
        if math.isnan(value) and allow_nan:
            return value
        ok = (math.isfinite(value) and (value > low if low_open else value >= low)
              and (value < high if high_open else value <= high))
        if not ok:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            if low == 0 and low_open and high == math.inf:
                raise argparse.ArgumentTypeError(f"{text!r} must be a finite number greater than 0")
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number in {interval}")
        return value
    parse.__name__ = "float"
    return parse


positive_float = float_in(0, math.inf, low_open=True, high_open=True)
nonnegative_float = float_in(0, math.inf, high_open=True)
finite_float = float_in(-math.inf, math.inf, low_open=True, high_open=True)
unit_interval = float_in(0, 1)            # gamma, lambda
fraction = float_in(0, 1, high_open=True)  # a held-out share


def device(text: str) -> str:
    """auto, cpu, cuda, cuda:N, or mps where this torch has it. Whether the device exists is checked later
    (utils.pick_device), with the fix in the message."""
    names = ["auto", "cpu", "cuda", "cuda:N"] + (["mps"] if torch.backends.mps.is_built() else [])
    if text in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d{1,3}", text) or (text == "mps" and "mps" in names):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a device; use one of {', '.join(names)}")


def physical_memory_bytes() -> int:
    """RAM of this machine (what an allocation can get at most)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def too_big(what: str, need_bytes: float) -> str | None:
    """A message when `what` would need more memory than the machine has (checked before allocating)."""
    have = physical_memory_bytes()
    if need_bytes <= have:
        return None
    return f"{what} would need at least {need_bytes / 2**30:,.0f} GiB of memory; this machine has {have / 2**30:,.0f} GiB"
