"""Decoder-only policies (the paper's GPT-2 family; Llama, SmolLM, Qwen, ...): prompt and response are one sequence.

    columns   0 ......... S-1 | S ....... S+T-1
    tokens    [pad] p_0 . p_k | y_0 ..... y_{T-1}      each prompt moved right, so every prompt ends at S-1
    column S-1+t has read the prompt and y_<t: its logits predict y_t, its last hidden state gives V(s_t)

Batches arrive right-padded (the encoder's way). `left_pad` moves each prompt row to the right; the
attention mask hides the padding and the position ids count real tokens only, so every row computes
what it would alone and unpadded (tests/test_causal_policy.py checks this against plain forwards).
The prompt keeps the EOS the tokenizer appends: it separates instruction and program. Only response
tokens are predicted, so SFT's cross-entropy never includes the prompt.
"""

from __future__ import annotations

import torch
from torch import nn

from minirlaif.errors import InputError
from minirlaif.policy import Policy, cache_kwarg, forward_arguments

# GPT-2 presets built from scratch, sized like the T5 presets of the same name (tiny T5: 1.18M parameters
# with a 2,000-token vocabulary; gpt2-tiny: 1.08M). n_positions covers prompt (64) + response (128) tokens.
PRESETS: dict[str, dict] = {
    "gpt2-tiny": dict(n_embd=128, n_layer=4, n_head=4, n_inner=512, n_positions=256),
    "gpt2-small": dict(n_embd=256, n_layer=8, n_head=4, n_inner=1024, n_positions=256),
}


def left_pad(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded prompts (B, S) -> the same prompts left-padded (B, S): each row rolled right by its padding."""
    S = input_ids.shape[1]
    shift = S - attention_mask.long().sum(dim=1, keepdim=True)  # (B, 1) padding per row
    columns = torch.arange(S, device=input_ids.device)[None]  # (1, S)
    source = (columns - shift) % S  # (B, S): the right-padded column each left-padded column comes from
    return input_ids.gather(1, source), (columns >= shift).to(attention_mask.dtype)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions (B, L) that count real tokens only: 0 at each row's first real token (0 on the padding before it)."""
    return (mask.long().cumsum(dim=1) - 1).clamp_min(0)


class CausalPolicy(Policy):
    """A transformers causal LM (`backbone`) plus `value_head` on its last hidden state."""

    auto_class = "AutoModelForCausalLM"

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, S) prompt ids, right-padded
        attention_mask: torch.Tensor,  # (B, S)
        responses: torch.Tensor,  # (B, T) response ids y, right-padded
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced pass: logits (B, T, V) for y_t, and values V(s_t) (B, T) in fp32."""
        S, T = input_ids.shape[1], responses.shape[1]
        sequence, mask, positions = joined_sequence(self.config, input_ids, attention_mask, responses)
        keep = {"logits_to_keep": T + 1} if accepts(self.backbone, "logits_to_keep") else {}
        out = self.backbone(input_ids=sequence, attention_mask=mask, position_ids=positions,
                            output_hidden_states=True, use_cache=False, return_dict=True, **keep)
        logits = out.logits[:, -(T + 1) : -1]  # (B, T, V): columns S-1 .. S+T-2 predict y_0 .. y_{T-1}
        hidden = out.hidden_states[-1][:, S - 1 : S + T - 1]  # (B, T, H), after the final layer norm
        values = self.value_head(hidden).squeeze(-1).float()  # (B, T)
        return logits.float(), values

    def start_decoding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Read the prompts (left-padded) into the KV cache: logits (B, V) and state (B, H) for y_0."""
        check_length(self.config, input_ids.shape[1] + 1)
        prompt, mask = left_pad(input_ids, attention_mask)
        return self._decode(prompt, (mask, None))

    def decode_step(self, tokens: torch.Tensor, cache):
        """Feed y_t (B,): logits (B, V) and state (B, H) for y_{t+1}."""
        mask, kv = cache
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # (B, L+1)
        check_length(self.config, mask.shape[1])
        return self._decode(tokens[:, None], (mask, kv))

    def _decode(self, new_tokens: torch.Tensor, cache):
        mask, kv = cache
        positions = position_ids(mask)[:, -new_tokens.shape[1] :]  # (B, new)
        name = cache_kwarg(self.backbone)
        keep = {"logits_to_keep": 1} if accepts(self.backbone, "logits_to_keep") else {}
        out = self.backbone(input_ids=new_tokens, attention_mask=mask, position_ids=positions, use_cache=True,
                            output_hidden_states=True, return_dict=True, **{name: kv}, **keep)
        return out.logits[:, -1], out.hidden_states[-1][:, -1], (mask, getattr(out, name))

    @staticmethod
    def response_states(backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        responses: torch.Tensor) -> torch.Tensor:
        """Last hidden states (B, T+1, H) at columns S-1 .. S+T-1: column t has read the prompt and y_<t."""
        S = input_ids.shape[1]
        sequence, mask, positions = joined_sequence(backbone.config, input_ids, attention_mask, responses)
        hidden = backbone.base_model(input_ids=sequence, attention_mask=mask, position_ids=positions,
                                     use_cache=False, return_dict=True).last_hidden_state  # (B, S+T, H)
        return hidden[:, S - 1 :]

    @classmethod
    def from_preset(cls, preset: str, vocab_size: int, pad_id: int, eos_id: int) -> "CausalPolicy":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(vocab_size=vocab_size, pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=eos_id,
                            **PRESETS[preset])
        return cls(GPT2LMHeadModel(config))


def joined_sequence(config, input_ids, attention_mask, responses):
    """[left-padded prompt, response] (B, S+T), its attention mask and position ids. Response padding after EOS
    stays visible: no real response token attends to a later column."""
    check_length(config, input_ids.shape[1] + responses.shape[1])
    prompt, prompt_mask = left_pad(input_ids, attention_mask)
    mask = torch.cat([prompt_mask, torch.ones_like(responses, dtype=prompt_mask.dtype)], dim=1)  # (B, S+T)
    return torch.cat([prompt, responses], dim=1), mask, position_ids(mask)


def check_length(config, length: int) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and length > limit:
        raise InputError(f"prompt + response need {length} positions, more than the model's {limit} "
                         "(max_position_embeddings); lower --max-prompt-len or --max-new-tokens")


def accepts(backbone: nn.Module, argument: str) -> bool:
    return argument in forward_arguments(type(backbone))
