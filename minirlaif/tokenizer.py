"""Tokenizers: a SentencePiece model trained on our corpus (the offline default) or any HF tokenizer.

Both are wrapped behind one tiny interface, `Tokenizer`: `encode(text) -> ids` (no special tokens),
`decode(ids) -> text` (special tokens dropped), and the ids the model needs (`pad_id`, `eos_id`).
Code needs exact whitespace, so the SentencePiece model uses the identity normaliser, keeps
repeated spaces, adds no dummy prefix, has `\\n` and `\\t` as pieces and byte fallback for any
character it never saw: `decode(encode(program)) == program` for every program.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable, Sequence

from minirlaif.errors import InputError

SPM_FILE = "spm.model"
# T5's convention, which our tiny T5 follows: pad 0 (also the decoder start token), eos 1, unk 2.
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


class Tokenizer:
    """The interface every script uses. Subclasses fill in the four methods."""

    pad_id: int
    eos_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def save(self, directory: str | Path) -> None:
        raise NotImplementedError

    def __call__(self, text: str, max_length: int | None = None, add_eos: bool = True) -> list[int]:
        """Ids of `text`, truncated to `max_length` (counting the eos), eos appended."""
        ids = self.encode(text)
        if max_length is not None:
            ids = ids[: max_length - int(add_eos)]
        return ids + [self.eos_id] if add_eos else ids


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece BPE model; `spm.model` in a checkpoint folder."""

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.pad_id, self.eos_id = self.sp.pad_id(), self.sp.eos_id()
        self.vocab_size = self.sp.get_piece_size()

    def __reduce__(self):  # picklable (e.g. sent from rank 0 to the other torchrun ranks): the model bytes
        return SentencePieceTokenizer, (self.model_proto,)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 2000) -> "SentencePieceTokenizer":
        """Train on `texts` (instructions and programs). `vocab_size` is a soft upper bound."""
        import sentencepiece as spm

        texts = list(texts)
        # Every character seen, 256 byte-fallback pieces and 5 specials must fit in the vocabulary.
        vocab_size = max(vocab_size, len(set("".join(texts))) + 256 + 8)
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size,
            hard_vocab_limit=False, model_type="bpe", normalization_rule_name="identity",
            remove_extra_whitespaces=False, add_dummy_prefix=False, byte_fallback=True,
            character_coverage=1.0, allow_whitespace_only_pieces=True, split_digits=True,
            user_defined_symbols=["\n", "\t"], pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
            max_sentence_length=1 << 16, num_threads=2, minloglevel=2,
        )
        return cls(buf.getvalue())

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids if int(i) not in (self.pad_id, self.eos_id)])

    def save(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / SPM_FILE).write_bytes(self.model_proto)


class HFTokenizer(Tokenizer):
    """Any `transformers` tokenizer (e.g. CodeT5's byte-level BPE `RobertaTokenizer`)."""

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer
        missing = [name for name in ("pad", "eos") if getattr(hf_tokenizer, f"{name}_token_id") is None]
        if missing:  # many decoder-only tokenizers (GPT-2's) have no pad token; any token will do, masks say what is real
            raise InputError(f"tokenizer {hf_tokenizer.name_or_path!r} has no {' and no '.join(missing)} token; "
                             "set one and save the tokenizer into the model folder, e.g. "
                             "tok.pad_token = tok.eos_token; tok.save_pretrained(folder)")
        self.pad_id, self.eos_id = hf_tokenizer.pad_token_id, hf_tokenizer.eos_token_id
        self.vocab_size = len(hf_tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True,
                              clean_up_tokenization_spaces=False)

    def save(self, directory: str | Path) -> None:
        self.hf.save_pretrained(str(directory))


def load_tokenizer(name_or_path: str | Path) -> Tokenizer:
    """A folder with `spm.model` -> SentencePieceTokenizer; anything else -> AutoTokenizer."""
    path = Path(name_or_path)
    if (path / SPM_FILE).exists():
        return SentencePieceTokenizer((path / SPM_FILE).read_bytes())
    from transformers import AutoTokenizer

    try:
        return HFTokenizer(AutoTokenizer.from_pretrained(str(name_or_path)))
    except (OSError, ValueError) as e:  # ValueError: a folder with files but no usable tokenizer
        raise InputError(
            f"{name_or_path}: no tokenizer found (expected {SPM_FILE} or a transformers tokenizer; "
            f"hub ids need internet): {e}"
        ) from e


def check_round_trip(tokenizer: Tokenizer, texts: Iterable[str], name: str = "tokenizer") -> None:
    """Raise InputError naming the first text that `decode(encode(text))` does not reproduce."""
    for i, text in enumerate(texts):
        back = tokenizer.decode(tokenizer.encode(text))
        if back != text:
            raise InputError(
                f"{name}: decode(encode(text)) != text for text #{i} ({text[:60]!r} -> {back[:60]!r}); "
                "code needs exact whitespace: use a tokenizer that preserves it"
            )
