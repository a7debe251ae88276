"""Data parallel training with torch DDP, for scripts launched by torchrun. A no-op otherwise.

    torchrun --nproc_per_node 4 train_sft.py ...     # 4 processes: one per GPU (nccl), or CPU processes (gloo)

torchrun starts N copies of a script and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT.
`setup()` joins them into one process group. Without those variables (a plain `python script.py`) it
starts nothing, and every helper below returns its input unchanged: single-process runs compute
exactly what they computed before this module existed.

What the scripts do with it (docs/scaling.md has the commands):
  SFT, reward model   each rank takes its contiguous slice of every global batch; DDP averages the
                      gradients during backward, the loss is weighted so the average equals the
                      gradient of the whole global batch in one process
  PPO                 each rank samples its slice of the prompts with its own seed; advantages are
                      whitened over the global batch; the rollouts are gathered and every rank draws
                      the same minibatches, computing the gradient of its share of each
  sampling, eval      each rank generates its slice; the results are gathered on rank 0
Only rank 0 writes files, logs and progress bars; the other ranks' stdout goes to /dev/null.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import sys
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from minirlaif import losses
from minirlaif.utils import pick_device

_device = torch.device("cpu")  # where collectives put their tensors: the GPU under nccl, the CPU under gloo


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def launched_rank() -> int:
    """The rank torchrun gave this process (0 without torchrun), readable before any process group exists."""
    return int(os.environ.get("RANK", 0))


def launched_world_size() -> int:
    """How many processes torchrun started (1 without torchrun), readable before any process group exists."""
    return int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    """True on rank 0 (and in a single-process run): the process that logs, prints and writes files."""
    return get_rank() == 0


def setup(device: str = "auto", timeout_minutes: float = 30) -> tuple[int, int, int, torch.device]:
    """(rank, world size, local rank, device). Under torchrun: join the process group (nccl on CUDA,
    gloo on CPU), one GPU per process (cuda:LOCAL_RANK, whatever --device names), stdout silenced on
    every rank but 0. Otherwise (0, 1, 0, pick_device(device)) and nothing else happens.

    `timeout_minutes` bounds how long a collective waits for the slowest rank (train_rm.py raises it:
    its ranks wait while rank 0 asks the judge)."""
    global _device
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, 0, pick_device(device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not is_distributed():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    _device = dev if dev.type == "cuda" else torch.device("cpu")
    if rank != 0:
        sys.stdout = open(os.devnull, "w")  # one copy of every message; errors (stderr) still show per rank
    return rank, world, local_rank, dev


def cleanup() -> None:
    """End of a successful run: wait for every rank, then leave the process group. Every rank calls it,
    rank 0 last of all after its own extra work (scoring, saving): a rank that destroyed the group while
    another still held it was seen to abort (gloo, SIGABRT, "terminate called without an active exception").
    Not on an error path: the other ranks would wait here until the timeout; torchrun stops them instead."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard(items: Sequence, rank: int | None = None, world: int | None = None) -> Sequence:
    """This rank's contiguous slice of `items` (sizes differ by at most one); all of `items` in one process.
    Slices are in rank order, so concatenating every rank's slice gives `items` back."""
    rank = get_rank() if rank is None else rank
    world = get_world_size() if world is None else world
    n = len(items)
    return items[rank * n // world : (rank + 1) * n // world]


# ---- collectives: the input unchanged in one process ----------------------------------------------------------
def all_reduce_sum(x: Any) -> Any:
    """The sum over ranks of a tensor (a new tensor), a number, or a list of numbers (floats back)."""
    if not is_distributed():
        return x
    if torch.is_tensor(x):
        out = x.detach().clone()
        dist.all_reduce(out)
        return out
    t = torch.tensor(x, dtype=torch.float64, device=_device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_mean(x: Any) -> Any:
    """The mean over ranks (see all_reduce_sum)."""
    if not is_distributed():
        return x
    total, world = all_reduce_sum(x), get_world_size()
    return total / world if not isinstance(total, list) else [v / world for v in total]


def all_gather(x: Tensor, pad_value: float = 0) -> Tensor:
    """Every rank's `x` (B, ...) concatenated along dim 0 in rank order; dim 1 (if any) is right-padded
    with `pad_value` to the longest rank's. Every rank must pass the same B."""
    if not is_distributed():
        return x
    dtype = x.dtype
    x = x.to(torch.uint8) if dtype == torch.bool else x
    if x.dim() >= 2:
        width = torch.tensor(x.shape[1], device=_device)
        dist.all_reduce(width, op=dist.ReduceOp.MAX)
        x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, int(width) - x.shape[1]), value=pad_value)
    parts = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts).to(dtype)


def all_gather_object(obj: Any) -> list:
    """[obj of rank 0, obj of rank 1, ...] (any picklable object); [obj] in one process."""
    if not is_distributed():
        return [obj]
    out: list = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (the others may pass None); `obj` in one process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_fields(batch: Any, pad_values: dict[str, float] | None = None) -> Any:
    """A dataclass of (B, ...) tensors (e.g. ppo.Rollout) holding every rank's rows in rank order, dim 1
    right-padded to the longest rank's (with pad_values[field], default 0). `batch` itself in one process."""
    if not is_distributed():
        return batch
    pad_values = pad_values or {}
    return type(batch)(**{f.name: all_gather(getattr(batch, f.name), pad_values.get(f.name, 0))
                          for f in dataclasses.fields(batch)})


def minibatches(order: Tensor, size: int, mask: Tensor) -> list[tuple[Tensor, float]]:
    """One PPO epoch's minibatches for this rank, as (row indices, loss weight): consecutive `size`-slices of
    `order`, whole and with weight 1 in one process. Under torchrun every rank draws the same `order` and
    takes rows rank, rank + world, ... of each slice, weighted by (its real tokens / the slice's, from
    `mask` (N, T)) x world: DDP's mean over ranks is then the gradient of the whole slice's token mean."""
    rank, world = get_rank(), get_world_size()
    out = []
    for start in range(0, len(order), size):
        idx = order[start : start + size].to(mask.device)
        if world == 1:
            out.append((idx, 1.0))
            continue
        share = float(mask[idx[rank::world]].sum() / mask[idx].sum())
        out.append((idx[rank::world], share * world))
    return out


# ---- global-batch statistics --------------------------------------------------------------------------------
def _moments(x: Tensor, mask: Tensor, unbiased: bool) -> tuple[Tensor, Tensor]:
    """Mean and variance of x over the real tokens of every rank: all-reduced sums and counts, two passes."""
    m = mask.bool()
    count_and_sum = all_reduce_sum(torch.stack([m.sum().to(x.dtype), torch.where(m, x, 0).sum()]))
    n = int(count_and_sum[0])
    if n < (2 if unbiased else 1):
        raise ValueError(f"{n} real token(s) over all ranks: too few for the {'un' if unbiased else ''}biased variance")
    mu = count_and_sum[1] / n
    var = all_reduce_sum(torch.where(m, x - mu, 0).pow(2).sum()) / (n - 1 if unbiased else n)
    return mu, var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, unbiased: bool = True) -> Tensor:
    """losses.masked_whiten over the GLOBAL batch: the mean and variance of the real tokens of every rank.
    Exactly losses.masked_whiten in one process."""
    if not is_distributed():
        return losses.masked_whiten(x, mask, shift_mean=shift_mean, unbiased=unbiased)
    mu, var = _moments(x, mask, unbiased)
    return losses.whiten(x, mask, mu, var, shift_mean)


def mean_std(x: Tensor) -> tuple[Tensor, Tensor]:
    """(x.mean(), x.std()) over every rank's x (unbiased std); exactly those two calls in one process."""
    if not is_distributed():
        return x.mean(), x.std()
    mu, var = _moments(x, torch.ones_like(x, dtype=torch.bool), unbiased=True)
    return mu, var.sqrt()


# ---- models ---------------------------------------------------------------------------------------------------
def ddp(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """`model` wrapped in DistributedDataParallel (gradients averaged over ranks during backward); `model`
    itself in one process. Call the wrapper for the training forward pass, `unwrap(wrapper)` for anything else."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel and/or torch.compile wrapper (or `model` itself)."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule


def no_sync(model: nn.Module, skip: bool) -> contextlib.AbstractContextManager:
    """For gradient accumulation: with skip=True, DDP does not all-reduce in this backward (the gradients
    accumulate locally); the micro-batch with skip=False all-reduces the sum. A no-op without DDP."""
    from torch.nn.parallel import DistributedDataParallel

    if skip and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


# ---- per-rank state in checkpoints ----------------------------------------------------------------------------
def with_rank_states(state: dict, local: dict) -> dict:
    """`state` plus `local` (this rank's RNG / generator states). Under torchrun, `local` of every rank is
    stored as state["ranks"] so --resume under the same world size restores each rank's streams. A
    collective: every rank calls it, rank 0 saves the result."""
    state = {**state, **local}
    if is_distributed():
        state["ranks"] = all_gather_object(local)
    return state


def own_rank_state(state: dict) -> dict:
    """The loaded checkpoint `state` with this rank's entries of state["ranks"] on top (when it was saved
    by as many ranks as are running now; otherwise rank 0's, and a note)."""
    ranks = state.get("ranks")
    if not is_distributed():
        return state
    if ranks is not None and len(ranks) == get_world_size():
        return {**state, **ranks[get_rank()]}
    print(f"note: the checkpoint was written by {len(ranks) if ranks else 1} process(es), this run has "
          f"{get_world_size()}: every rank resumes rank 0's random streams")
    return state
