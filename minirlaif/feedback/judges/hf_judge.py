"""The LLM judge as a local transformers causal LM: P(yes) from the next-token logits.

The prompt is the chat messages through the tokenizer's chat template (with the generation prompt)
when it has one, else the plain text of the messages followed by "Answer:". One forward pass gives
the next-token distribution; P(yes) is its mass on the Yes tokens over the mass on Yes and No tokens.
Every single-token spelling of the words counts ("Yes", " Yes", "yes", ...), as with API log-probs.
"""

from __future__ import annotations

import threading
import warnings

import torch

from minirlaif.feedback.judges.base import Judge, JudgeError, Query, RawAnswer
from minirlaif.feedback.prompts import plain_prompt
from minirlaif.feedback.scoring import yes_or_no

_SPELLINGS = ("Yes", " Yes", "yes", " yes", "YES", " YES", "No", " No", "no", " no", "NO", " NO")


def yes_no_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """Ids of the single tokens that spell Yes and No (unknown-token ids excluded)."""
    yes: list[int] = []
    no: list[int] = []
    for spelling in _SPELLINGS:
        ids = tokenizer.encode(spelling, add_special_tokens=False)
        if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
            continue
        # Trust the decoded token, not the spelling we asked for (a tokenizer may normalise case).
        kind = yes_or_no(tokenizer.decode(ids))
        bucket = yes if kind == "yes" else no if kind == "no" else None
        if bucket is not None and ids[0] not in bucket:
            bucket.append(ids[0])
    if not yes or not no:
        raise JudgeError(f"the tokenizer has no single token for Yes ({yes}) or No ({no}); it cannot judge")
    return yes, no


class HFJudge(Judge):
    """Judge with any local transformers causal LM. `name` is "hf:<path>"."""

    def __init__(self, path: str, device: str = "cpu", dtype: torch.dtype = torch.float32, max_workers: int = 1):
        from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: only when this judge is used

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        self.device = device
        self.name = f"hf:{path}"
        self.max_workers = max_workers
        self.yes_ids, self.no_ids = yes_no_token_ids(self.tokenizer)
        self.max_length = getattr(self.model.config, "max_position_embeddings", None)
        self._lock = threading.Lock()  # one forward pass at a time: the model is shared

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of the prompt, ending where the answer's first token goes."""
        if getattr(self.tokenizer, "chat_template", None):
            try:
                text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception:  # some templates refuse a system turn: fold it into the user turn
                merged = [{"role": "user", "content": plain_prompt(messages).removesuffix("\nAnswer:")}]
                text = self.tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
            # The template already wrote any special tokens (BOS...): do not add them twice.
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(plain_prompt(messages))

    @torch.inference_mode()
    def ask(self, query: Query) -> RawAnswer:
        ids = self.prompt_ids(query.messages)
        if self.max_length and len(ids) > self.max_length:
            # Keep the end: the question and the answer slot matter most; the instruction's start goes.
            warnings.warn(f"{self.name}: prompt of {len(ids)} tokens cut to the last {self.max_length}")
            ids = ids[-self.max_length :]
        with self._lock:
            logits = self.model(torch.tensor([ids], device=self.device)).logits[0, -1].float()
        logp = torch.log_softmax(logits, dim=-1)
        lse_yes = torch.logsumexp(logp[self.yes_ids], dim=0)
        lse_no = torch.logsumexp(logp[self.no_ids], dim=0)
        p_yes = torch.sigmoid(lse_yes - lse_no).item()  # = y / (y + n)
        mass = (lse_yes.exp() + lse_no.exp()).item()  # how much the model wants to answer Yes/No at all
        return RawAnswer("Yes" if p_yes >= 0.5 else "No", p_yes, "logits", 0, {"yes_no_mass": mass})
