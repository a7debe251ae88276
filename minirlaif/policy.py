"""The policy: a seq2seq (T5-family) backbone plus a value head, and where it is saved.

    encoder(instruction) -> decoder([start] + y_<t) -> logits over y_t      (the policy pi)
                                                   -> Linear -> V(s_t)       (the value head)

The value head reads the decoder's last hidden state, one value per response position, and starts
at zero (weights and bias), so PPO begins with V = 0 rather than noise (N-implementation-details #11).
A checkpoint folder holds the backbone via `save_pretrained` (safetensors, so
`AutoModelForSeq2SeqLM.from_pretrained(folder)` loads it), `value_head.safetensors`, the tokenizer,
and `policy.json` (preset and vocabulary facts).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from torch import nn

from minirlaif.errors import InputError

# Presets for models built from scratch. `tiny` is sized so the default SFT runs in minutes on 2 CPU cores.
PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=128, d_ff=512, d_kv=32, num_heads=4, num_layers=2, num_decoder_layers=2,
                 dropout_rate=0.1, relative_attention_num_buckets=32, relative_attention_max_distance=128),
    "small": dict(d_model=256, d_ff=1024, d_kv=64, num_heads=4, num_layers=4, num_decoder_layers=4,
                  dropout_rate=0.1, relative_attention_num_buckets=32, relative_attention_max_distance=128),
    "base": dict(d_model=512, d_ff=2048, d_kv=64, num_heads=8, num_layers=6, num_decoder_layers=6,
                 dropout_rate=0.1),
}

VALUE_HEAD_FILE = "value_head.safetensors"
POLICY_JSON = "policy.json"


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing on CPU (fp32 keeps CPU runs exact and reproducible)."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Seq2SeqPolicy(nn.Module):
    """A transformers seq2seq LM (`backbone`) plus `value_head`: Linear(d_model, 1), zero-initialised."""

    def __init__(self, backbone: nn.Module, init_value_head: bool = True):
        super().__init__()
        self.backbone = backbone
        self.value_head = nn.Linear(backbone.config.d_model, 1)
        if init_value_head:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)

    @property
    def config(self):
        return self.backbone.config

    @property
    def decoder_start_id(self) -> int:
        return int(self.backbone.config.decoder_start_token_id)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, S) encoder ids, right-padded
        attention_mask: torch.Tensor,  # (B, S)
        responses: torch.Tensor,  # (B, T) response ids y; the decoder reads [start] + y_<T
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced pass: logits (B, T, V) for y_t, and values V(s_t) (B, T) in fp32."""
        out = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=self.decoder_inputs(responses),
            output_hidden_states=True, use_cache=False, return_dict=True,
        )
        hidden = out.decoder_hidden_states[-1]  # (B, T, H), after the final layer norm
        values = self.value_head(hidden).squeeze(-1).float()  # (B, T)
        return out.logits.float(), values

    def gradient_checkpointing_enable(self) -> None:
        """Keep only each transformer layer's input in the forward pass and recompute the layer in backward:
        activation memory of about one layer instead of all of them, for about one more forward pass."""
        kwargs = {"use_reentrant": False}  # the variant that works under DDP and torch.compile
        if hasattr(self.backbone, "activation_checkpointing_enable"):  # the name since transformers 5
            self.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    @contextlib.contextmanager
    def checkpointing_in_eval_mode(self):
        """transformers recomputes a layer in backward only while the layer is in training mode, and PPO keeps
        the policy in eval mode (no dropout). Inside this context the checkpointed layers alone are flagged as
        training: their dropout and attention submodules stay in eval mode, so no number changes. Sampling
        happens outside it. A no-op when gradient checkpointing is off."""
        try:
            from transformers.modeling_layers import GradientCheckpointingLayer
        except ImportError:  # older transformers checkpoint whole stacks
            GradientCheckpointingLayer = ()
        layers = [m for m in self.backbone.modules()
                  if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing and not m.training]
        if not layers and not self.training and any(getattr(m, "gradient_checkpointing", False) is True
                                                    for m in self.backbone.modules()):
            raise InputError("gradient checkpointing of a policy in eval mode needs a transformers release with "
                             "modeling_layers.GradientCheckpointingLayer; upgrade it or drop --grad-checkpointing")
        for m in layers:
            m.training = True
        try:
            yield
        finally:
            for m in layers:
                m.training = False

    def decoder_inputs(self, responses: torch.Tensor) -> torch.Tensor:
        """[start] + y_<T (B, T): the teacher-forcing input for response ids (B, T)."""
        start = torch.full_like(responses[:, :1], self.decoder_start_id)
        return torch.cat([start, responses[:, :-1]], dim=1)

    # ---- building and saving -------------------------------------------------------------------
    @classmethod
    def from_preset(cls, preset: str, vocab_size: int, pad_id: int, eos_id: int) -> "Seq2SeqPolicy":
        from transformers import T5Config, T5ForConditionalGeneration

        if preset not in PRESETS:
            raise InputError(f"--preset {preset!r}: unknown preset (choose from {sorted(PRESETS)})")
        config = T5Config(vocab_size=vocab_size, pad_token_id=pad_id, eos_token_id=eos_id,
                          decoder_start_token_id=pad_id, **PRESETS[preset])
        return cls(T5ForConditionalGeneration(config))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Seq2SeqPolicy":
        """Load a checkpoint folder of ours, or any seq2seq model id / folder (value head then zero)."""
        from transformers import AutoModelForSeq2SeqLM

        try:
            backbone = AutoModelForSeq2SeqLM.from_pretrained(str(path))
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot load a seq2seq model ({e}); pass a checkpoint folder "
                             "(e.g. runs/sft/model) or a T5-family model id") from e
        policy = cls(backbone)
        head_file = Path(path) / VALUE_HEAD_FILE
        if head_file.exists():
            from safetensors.torch import load_file

            state = load_file(str(head_file))
            if state["weight"].shape != policy.value_head.weight.shape:
                raise InputError(f"{head_file}: value head shape {tuple(state['weight'].shape)} does not "
                                 f"match the backbone (d_model {backbone.config.d_model})")
            policy.value_head.load_state_dict(state)
        return policy

    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        self.backbone.save_pretrained(str(directory))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
                  str(directory / VALUE_HEAD_FILE))
        info = {"d_model": self.config.d_model, "vocab_size": self.config.vocab_size, **(extra or {})}
        (directory / POLICY_JSON).write_text(json.dumps(info, indent=2) + "\n")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
