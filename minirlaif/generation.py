"""Sampling responses from a policy (seq2seq or decoder-only): our own short loop with the KV cache.

Why not `model.generate`: RL needs the log-probability of exactly the distribution it sampled from.
Here the logits are divided by `temperature`, there is no top-k/top-p/min-length or other logits
processor, and the same temperature is used when log-probs are recomputed by a teacher-forced pass
(N-implementation-details #10), so rollout log-probs equal the forward pass and KL at step 0 is 0.

Responses are right-padded with `pad_id`; the mask marks real tokens, EOS included. The decoder
start token is not a response token. T5's pad id equals its decoder start id, so masks are built
from the EOS position, never from `tokens != pad`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minirlaif.policy import Policy


@dataclass
class Samples:
    tokens: torch.Tensor  # (B, T) response ids, pad after EOS
    mask: torch.Tensor  # (B, T) float, 1 = real response token (EOS included)
    logprobs: torch.Tensor  # (B, T) log pi(y_t | x, y_<t) at the sampling temperature, 0 at padding
    values: torch.Tensor  # (B, T) V(s_t) from the value head, 0 at padding
    finished: torch.Tensor  # (B,) bool: the response ended with EOS within the length limit


def sample_from(logp: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from log-probs (B, V) by inverse CDF: the first index whose CDF exceeds u * total.

    Exact sampling, like torch.multinomial, but about 10x cheaper on CPU for one draw per row.
    """
    cdf = logp.exp().cumsum(dim=-1)  # (B, V)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp_(max=cdf.shape[1] - 1)


@torch.no_grad()
def sample(
    policy: Policy,
    input_ids: torch.Tensor,  # (B, S)
    attention_mask: torch.Tensor,  # (B, S)
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> Samples:
    """Sample (or greedily decode) one response per prompt, recording log-probs and values."""
    B, device = input_ids.shape[0], input_ids.device
    done = torch.zeros(B, dtype=torch.bool, device=device)
    tokens, logprobs, values, masks = [], [], [], []
    logits, hidden, cache = policy.start_decoding(input_ids, attention_mask)  # (B, V), (B, H): for y_0
    for step in range(max_new_tokens):
        logp = F.log_softmax(logits.float() / temperature, dim=-1)  # (B, V)
        if greedy:
            token = logp.argmax(dim=-1)  # (B,)
        else:
            token = sample_from(logp, generator)  # (B,)
        alive = ~done
        token = torch.where(alive, token, torch.full_like(token, pad_id))
        value = policy.value_head(hidden).squeeze(-1).float()  # (B,)
        tokens.append(token)
        masks.append(alive.float())
        logprobs.append(torch.where(alive, logp.gather(1, token[:, None]).squeeze(1), torch.zeros_like(value)))
        values.append(torch.where(alive, value, torch.zeros_like(value)))
        done = done | (token == eos_id)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        logits, hidden, cache = policy.decode_step(token, cache)  # for y_{step+1}
    return Samples(tokens=torch.stack(tokens, 1), mask=torch.stack(masks, 1),
                   logprobs=torch.stack(logprobs, 1), values=torch.stack(values, 1), finished=done)


@torch.no_grad()
def generate_texts(
    policy: Policy,
    tokenizer,
    prompts: list[str],
    max_prompt_len: int = 64,
    max_new_tokens: int = 128,
    temperature: float = 1.0,
    greedy: bool = False,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    progress: str | None = None,
) -> list[str]:
    """Decode one response text per prompt (batched; prompts sorted by length to waste less padding)."""
    from minirlaif.progress import progress_bar

    from minirlaif.batching import pad_right

    device = next(policy.parameters()).device
    encoded = [tokenizer(p, max_prompt_len) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    texts: list[str] = [""] * len(prompts)
    was_training = policy.training
    policy.eval()
    starts = range(0, len(order), batch_size)
    for start in progress_bar(starts, desc=progress, disable=progress is None, leave=False):
        idx = order[start : start + batch_size]
        ids, mask = pad_right([encoded[i] for i in idx], tokenizer.pad_id, device)
        s = sample(policy, ids, mask, max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
                   temperature=temperature, greedy=greedy, generator=generator)
        for row, i in enumerate(idx):
            texts[i] = tokenizer.decode(s.tokens[row, : int(s.mask[row].sum())].tolist())
    policy.train(was_training)
    return texts
