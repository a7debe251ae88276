"""The reward model: the policy's backbone (initialised from SFT) plus a scalar head.

    seq2seq: encoder(instruction), decoder([start] + y) -> h_t (B, T+1, H); decoder-only: [x, y] -> h_t
    (Policy.response_states; column t has read the instruction and y_<t)
    raw r(x, y) = w . h + b, where h is   (pooling="eos")  h at the response's last real token, its EOS
                                          (pooling="mean") the mean of h_t over the response's real tokens
    reward      = gain * raw + bias      (gain, bias fitted after training: mean 0, std 1 on the
                                          training responses; N-implementation-details #9)

The head starts at N(0, 1/sqrt(d_model + 1)) with bias 0 (N+ details #10). Reading at EOS is the
usual choice for large backbones; mean pooling lets every token's state vote, which a shallow decoder
that must gather a whole program into one position may need. The language-model
head of the backbone is kept (so `from_pretrained` of an SFT folder just works) but never used.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from minirlaif.errors import InputError
from minirlaif.policy import policy_class, policy_kind

HEAD_FILE = "reward_head.safetensors"
NORM_FILE = "reward_norm.json"  # gain, bias and pooling
POOLINGS = ("eos", "mean")


class RewardModel(nn.Module):
    def __init__(self, backbone: nn.Module, pooling: str = "eos"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.backbone = backbone
        self.pooling = pooling
        self.kind = policy_kind(backbone.config)  # Seq2SeqPolicy or CausalPolicy: where the states come from
        d_model = backbone.config.hidden_size
        self.head = nn.Linear(d_model, 1)
        nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(d_model + 1))
        nn.init.zeros_(self.head.bias)
        # Not parameters: fitted once after training, saved with the model.
        self.register_buffer("gain", torch.tensor(1.0))
        self.register_buffer("bias", torch.tensor(0.0))

    def raw_reward(
        self,
        input_ids: torch.Tensor,  # (B, S)
        attention_mask: torch.Tensor,  # (B, S)
        responses: torch.Tensor,  # (B, T) right-padded response ids (EOS included when present)
        response_mask: torch.Tensor,  # (B, T) 1 = real response token
    ) -> torch.Tensor:
        """Unnormalised scalar reward (B,) from each response's EOS state or its mean state (see `pooling`)."""
        hidden = self.kind.response_states(self.backbone, input_ids, attention_mask, responses)  # (B, T+1, H)
        if self.pooling == "mean":
            mask = response_mask[:, :, None].to(hidden.dtype)  # (B, T, 1): hidden[:, t+1] has read y_t
            pooled = (hidden[:, 1:] * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)  # (B, H)
        else:
            last = response_mask.long().sum(dim=1)  # (B,) the column that has read the last real token
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)
        return self.head(pooled).squeeze(-1).float()  # (B,)

    def forward(self, input_ids, attention_mask, responses, response_mask, normalise: bool = True) -> torch.Tensor:
        """Normalised reward (B,) = gain * raw + bias; the raw reward with normalise=False (training, e.g. via DDP)."""
        raw = self.raw_reward(input_ids, attention_mask, responses, response_mask)
        return self.gain * raw + self.bias if normalise else raw

    @torch.no_grad()
    def fit_normalisation(self, raw_rewards: torch.Tensor) -> None:
        """Set gain, bias so that gain * raw + bias has mean 0 and std 1 on `raw_rewards` (N,)."""
        std = raw_rewards.float().std().clamp_min(1e-6)
        self.gain.fill_(1.0 / float(std))
        self.bias.fill_(-float(raw_rewards.float().mean()) / float(std))

    # ---- saving and loading ----------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        self.backbone.save_pretrained(str(directory))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  str(directory / HEAD_FILE))
        (directory / NORM_FILE).write_text(json.dumps({"gain": float(self.gain), "bias": float(self.bias),
                                                          "pooling": self.pooling}) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, pooling: str = "eos") -> "RewardModel":
        """Load a reward model folder (its saved pooling wins), or start a new head with `pooling` on any
        seq2seq or decoder-only folder (e.g. runs/sft/model)."""
        model = cls(policy_class(path).load_backbone(path), pooling)
        path = Path(path)
        if (path / HEAD_FILE).exists():
            from safetensors.torch import load_file

            model.head.load_state_dict(load_file(str(path / HEAD_FILE)))
            try:
                norm = json.loads((path / NORM_FILE).read_text())
                gain, bias = float(norm["gain"]), float(norm["bias"])
                model.pooling = norm.get("pooling", "eos")  # folders written before pooling existed: EOS
                if model.pooling not in POOLINGS:
                    raise ValueError(f"pooling {model.pooling!r} is not one of {POOLINGS}")
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise InputError(f"{path / NORM_FILE}: missing or unreadable ({type(e).__name__}: {e}); "
                                 "train_rm.py writes it next to the head: copy the whole model folder") from None
            if not (math.isfinite(gain) and math.isfinite(bias)):
                raise InputError(f"{path / NORM_FILE}: gain {gain} / bias {bias} are not finite numbers "
                                 "(retrain the reward model)")
            model.gain.fill_(gain)
            model.bias.fill_(bias)
        return model


# ---- scoring texts ------------------------------------------------------------------------------------
def encode_texts(tokenizer, prompts: list[str], responses: list[str], max_prompt_len: int, max_new_tokens: int,
                 device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prompt ids (B, S), mask, response ids (B, T), mask), right-padded. A response is encoded with its
    EOS, as the policy emits it."""
    from minirlaif.batching import pad_right

    src, src_mask = pad_right([tokenizer(p, max_prompt_len) for p in prompts], tokenizer.pad_id, device)
    tgt, tgt_mask = pad_right([tokenizer(r, max_new_tokens) for r in responses], tokenizer.pad_id, device)
    return src, src_mask, tgt, tgt_mask


@torch.no_grad()
def score_texts(model: RewardModel, tokenizer, prompts: list[str], responses: list[str], max_prompt_len: int,
                max_new_tokens: int, device, raw: bool = False, batch: int = 64) -> torch.Tensor:
    """The reward (B,) of each (prompt, response) text pair (the raw reward with raw=True), `batch` at a time."""
    from minirlaif.policy import autocast

    out = []
    for s in range(0, len(prompts), batch):
        args = encode_texts(tokenizer, prompts[s : s + batch], responses[s : s + batch], max_prompt_len,
                            max_new_tokens, device)
        with autocast(device):
            out.append((model.raw_reward(*args) if raw else model(*args)).float())
    return torch.cat(out) if out else torch.zeros(0)
