"""Token ids -> right-padded tensors with explicit masks (shared by every script)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (B, L) right-padded with `pad_id`, and mask (B, L) with 1 at real tokens (L = longest)."""
    length = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def cat_padded(tensors: Sequence[torch.Tensor], value: float = 0) -> torch.Tensor:
    """(B_i, L_i, ...) tensors concatenated along dim 0, dim 1 right-padded with `value` to the longest L_i."""
    width = max(t.shape[1] for t in tensors)
    return torch.cat([F.pad(t, (0, 0) * (t.dim() - 2) + (0, width - t.shape[1]), value=value) for t in tensors])


def chunks(items: Sequence, size: int):
    """Consecutive slices of `items` of length `size` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def epoch_batch(step: int, steps_per_epoch: int, n: int, global_batch: int, seed: int) -> list[int]:
    """The example indices of optimizer step `step`: consecutive `global_batch`-slices of a fresh seeded
    permutation of range(n) every epoch (so a resumed run sees exactly the batches an uninterrupted one would)."""
    epoch, pos = divmod(step, steps_per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 31 + epoch)).tolist()
    return perm[pos * global_batch : (pos + 1) * global_batch]
