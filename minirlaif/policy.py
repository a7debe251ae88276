"""The policy: a language-model backbone plus a value head, and where it is saved.

Two kinds of backbone behind one interface, which the scripts and ppo.py use without asking which:

    seq2seq (T5 family, the default):  encoder(x) -> decoder([start] + y_<t) -> logits over y_t
    decoder-only (GPT-2, Llama, SmolLM, ...; causal_policy.py):  [x, y_<t] -> logits over y_t
    either:  the last hidden state h_t that predicts y_t -> Linear -> V(s_t)       (the value head)

    policy(input_ids, attention_mask, responses)     -> logits (B, T, V), values (B, T)   teacher-forced
    policy.start_decoding(input_ids, attention_mask) -> logits (B, V), h (B, H), cache   } sampling with
    policy.decode_step(tokens, cache)                -> logits (B, V), h (B, H), cache   } the KV cache
    Kind.response_states(backbone, input_ids, attention_mask, responses) -> h (B, T+1, H) (the reward model)

Prompts always arrive right-padded (B, S) with their mask; responses right-padded (B, T).
The value head starts at zero (weights and bias), so PPO begins with V = 0 rather than noise
(N-implementation-details #11). A checkpoint folder holds the backbone via `save_pretrained`
(safetensors, so `AutoModelForSeq2SeqLM` / `AutoModelForCausalLM.from_pretrained(folder)` loads it),
`value_head.safetensors`, the tokenizer, and `policy.json` (preset and vocabulary facts).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
from pathlib import Path

import torch
from torch import nn

from minirlaif.errors import InputError

# Presets for seq2seq models built from scratch (decoder-only ones: causal_policy.PRESETS). `tiny` is
# sized so the default SFT runs in minutes on 2 CPU cores.
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


@functools.lru_cache(maxsize=None)
def forward_arguments(model_class: type) -> frozenset[str]:
    """The argument names of a transformers model class's forward (looked up once per class)."""
    return frozenset(inspect.signature(model_class.forward).parameters)


def cache_kwarg(backbone: nn.Module) -> str:
    """transformers >= 5.2x names the KV cache argument `cache`; older releases `past_key_values`."""
    return "cache" if "cache" in forward_arguments(type(backbone)) else "past_key_values"


class Policy(nn.Module):
    """What both kinds share: the backbone, the value head Linear(hidden, 1), checkpointing, saving and loading.
    Subclasses give `auto_class` (the transformers class that loads the backbone) and the interface above."""

    auto_class = ""

    def __init__(self, backbone: nn.Module, init_value_head: bool = True):
        super().__init__()
        self.backbone = backbone
        self.value_head = nn.Linear(backbone.config.hidden_size, 1)
        if init_value_head:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)

    @property
    def config(self):
        return self.backbone.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                responses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def start_decoding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        raise NotImplementedError

    def decode_step(self, tokens: torch.Tensor, cache):
        raise NotImplementedError

    @staticmethod
    def response_states(backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        responses: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

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

    # ---- building and saving -------------------------------------------------------------------
    @classmethod
    def load_backbone(cls, path: str | Path) -> nn.Module:
        import transformers

        try:
            return getattr(transformers, cls.auto_class).from_pretrained(str(path))
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot load it with {cls.auto_class} ({e}); pass a checkpoint folder "
                             "(e.g. runs/sft/model) or a model id") from e

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Policy":
        """Load a checkpoint folder of ours, or any model id / folder of this kind (value head then zero)."""
        backbone = cls.load_backbone(path)
        policy = cls(backbone)
        head_file = Path(path) / VALUE_HEAD_FILE
        if head_file.exists():
            from safetensors.torch import load_file

            state = load_file(str(head_file))
            if state["weight"].shape != policy.value_head.weight.shape:
                raise InputError(f"{head_file}: value head shape {tuple(state['weight'].shape)} does not "
                                 f"match the backbone (hidden size {backbone.config.hidden_size})")
            policy.value_head.load_state_dict(state)
        return policy

    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        self.backbone.save_pretrained(str(directory))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
                  str(directory / VALUE_HEAD_FILE))
        info = {"d_model": self.config.hidden_size, "vocab_size": self.config.vocab_size, **(extra or {})}
        (directory / POLICY_JSON).write_text(json.dumps(info, indent=2) + "\n")


class Seq2SeqPolicy(Policy):
    """A transformers seq2seq LM (`backbone`) plus `value_head`, reading the decoder's last hidden state."""

    auto_class = "AutoModelForSeq2SeqLM"

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

    def decoder_inputs(self, responses: torch.Tensor) -> torch.Tensor:
        """[start] + y_<T (B, T): the teacher-forcing input for response ids (B, T)."""
        start = torch.full_like(responses[:, :1], self.decoder_start_id)
        return torch.cat([start, responses[:, :-1]], dim=1)

    def start_decoding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Encode the prompts once; the decoder reads [start]. Logits (B, V) and state (B, H) for y_0."""
        encoded = self.backbone.get_encoder()(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        start = torch.full((input_ids.shape[0], 1), self.decoder_start_id, dtype=torch.long, device=input_ids.device)
        return self._decode(start, (encoded, attention_mask, None))

    def decode_step(self, tokens: torch.Tensor, cache):
        """Feed y_t (B,): logits (B, V) and state (B, H) for y_{t+1}."""
        return self._decode(tokens[:, None], cache)

    def _decode(self, decoder_input: torch.Tensor, cache):
        encoded, attention_mask, kv = cache
        name = cache_kwarg(self.backbone)
        out = self.backbone(encoder_outputs=encoded, attention_mask=attention_mask, decoder_input_ids=decoder_input,
                            use_cache=True, output_hidden_states=True, return_dict=True, **{name: kv})
        return out.logits[:, -1], out.decoder_hidden_states[-1][:, -1], (encoded, attention_mask, getattr(out, name))

    @staticmethod
    def response_states(backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        responses: torch.Tensor) -> torch.Tensor:
        """Decoder states (B, T+1, H) over [start] + y: column t has read the prompt and y_<t."""
        start = torch.full_like(responses[:, :1], int(backbone.config.decoder_start_token_id))
        decoder_input = torch.cat([start, responses], dim=1)  # (B, T+1)
        encoded = backbone.get_encoder()(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return backbone.get_decoder()(
            input_ids=decoder_input, encoder_hidden_states=encoded.last_hidden_state,
            encoder_attention_mask=attention_mask, use_cache=False, return_dict=True,
        ).last_hidden_state  # (B, T+1, H)

    @classmethod
    def from_preset(cls, preset: str, vocab_size: int, pad_id: int, eos_id: int) -> "Seq2SeqPolicy":
        from transformers import T5Config, T5ForConditionalGeneration

        config = T5Config(vocab_size=vocab_size, pad_token_id=pad_id, eos_token_id=eos_id,
                          decoder_start_token_id=pad_id, **PRESETS[preset])
        return cls(T5ForConditionalGeneration(config))


# ---- which kind ------------------------------------------------------------------------------------
def all_presets() -> list[str]:
    from minirlaif.causal_policy import PRESETS as CAUSAL_PRESETS

    return sorted(PRESETS) + sorted(CAUSAL_PRESETS)


def new_policy(preset: str, vocab_size: int, pad_id: int, eos_id: int) -> Policy:
    """A model from scratch: a T5 preset (tiny, small, base) or a decoder-only one (gpt2-tiny, gpt2-small)."""
    from minirlaif.causal_policy import PRESETS as CAUSAL_PRESETS, CausalPolicy

    if preset in PRESETS:
        return Seq2SeqPolicy.from_preset(preset, vocab_size, pad_id, eos_id)
    if preset in CAUSAL_PRESETS:
        return CausalPolicy.from_preset(preset, vocab_size, pad_id, eos_id)
    raise InputError(f"--preset {preset!r}: unknown preset (choose from {', '.join(all_presets())})")


def policy_kind(config) -> type[Policy]:
    """Seq2SeqPolicy or CausalPolicy, from a transformers config."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING

    from minirlaif.causal_policy import CausalPolicy

    if type(config) in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING:
        return Seq2SeqPolicy
    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING and not config.is_encoder_decoder:
        return CausalPolicy
    raise InputError(f"a {config.model_type!r} model is neither seq2seq nor decoder-only; "
                     "pass a T5-family or a decoder-only (GPT-2, Llama, ...) model")


def policy_class(path: str | Path) -> type[Policy]:
    """Seq2SeqPolicy or CausalPolicy, from the config of a folder or model id."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: no model config found ({e}); pass a checkpoint folder (e.g. runs/sft/model) "
                         "or a model id (hub ids need internet)") from e
    try:
        return policy_kind(config)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None


def load_policy(path: str | Path) -> Policy:
    """The policy in a folder or model id, of whichever kind its config says."""
    return policy_class(path).from_pretrained(path)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
