"""The judge as PPO's reward, with no reward model (d-RLAIF, Lee et al. 2023): each rollout is scored online.

    scorer = JudgeReward(judge, cache, weights, tokenizer)
    scorer.expect(records)                       # the records of this iteration's rollouts, in row order
    rollout(policy, ref, scorer, ...)            # called like a reward model, chunk by chunk, in row order

Each call decodes the chunk's responses, takes the program out of each, asks the judge the 8 questions
about it through the answer cache (a program asked about before costs nothing) and returns the weighted
score in [0, 1] of each (B,). The calls consume `records` in order, so `gen_batch_size` chunks line up.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from minirlaif.data.prompts import extract_program
from minirlaif.feedback.cache import FeedbackCache
from minirlaif.feedback.judges.base import Item, Judge
from minirlaif.feedback.label import label


class JudgeReward:
    def __init__(self, judge: Judge, cache: FeedbackCache | None, weights: Mapping[str, float], tokenizer,
                 workers: int | None = None):
        self.judge, self.cache, self.weights, self.tokenizer, self.workers = judge, cache, dict(weights), tokenizer, workers
        self._records: list = []

    def expect(self, records: Sequence) -> None:
        """The records (instruction, API documentation, gold call) of the next rollout's rows, in order."""
        if self._records:
            raise RuntimeError(f"{len(self._records)} records of the last rollout were never scored")
        self._records = list(records)

    @torch.no_grad()
    def __call__(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, tokens: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
        """Judge scores (B,) of responses `tokens` (B, T) (real tokens where `mask` is 1) to the next B records."""
        n = tokens.shape[0]
        if n > len(self._records):
            raise RuntimeError(f"{n} responses to score but only {len(self._records)} records expected")
        records, self._records = self._records[:n], self._records[n:]
        lengths = mask.sum(1).long().tolist()
        texts = [self.tokenizer.decode(tokens[b, : lengths[b]].tolist()) for b in range(n)]
        items = [Item(r.instruction, r.api_data, extract_program(t), r) for r, t in zip(records, texts)]
        feedbacks = label(self.judge, items, weights=self.weights, cache=self.cache, workers=self.workers,
                          progress=False)
        return torch.tensor([fb.score for fb in feedbacks], dtype=torch.float32, device=tokens.device)
