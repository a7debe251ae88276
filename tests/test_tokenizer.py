import pytest

from minirlaif.errors import InputError
from minirlaif.tokenizer import SentencePieceTokenizer, check_round_trip, load_tokenizer
from tiny_data import tiny_records

TRICKY = [
    "import numpy as np\n\nx = np.arange(5)\nprint(x)\n",
    "def f(a):\n    if a:\n\treturn  'q\"uote'  \n\n\n",
    "  leading spaces and trailing  ",
    's = "unicode é 漢字 ✓"\r\nprint(s)',
    "x = '\\n is a literal backslash-n'",
    "",
]


@pytest.fixture(scope="module")
def tok():
    recs = tiny_records(64)
    return SentencePieceTokenizer.train([r.instruction for r in recs] + [r.code for r in recs], vocab_size=300)


def test_round_trip_exact_whitespace(tok):
    for text in TRICKY + [r.code for r in tiny_records(20, seed=5)]:
        assert tok.decode(tok.encode(text)) == text


def test_special_ids_and_eos(tok):
    assert (tok.pad_id, tok.eos_id) == (0, 1)
    ids = tok("print(1)", max_length=4)
    assert len(ids) == 4 and ids[-1] == tok.eos_id
    assert tok.decode(ids) == tok.decode(tok.encode("print(1)")[:3])


def test_save_load(tok, tmp_path):
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.encode(TRICKY[1]) == tok.encode(TRICKY[1])


def test_round_trip_check_names_the_text():
    class Lossy(SentencePieceTokenizer):
        def decode(self, ids):
            return super().decode(ids).replace("\t", "    ")

    lossy = Lossy(SentencePieceTokenizer.train(["a\tb", "c d"] * 20, vocab_size=100).model_proto)
    with pytest.raises(InputError, match="#1"):
        check_round_trip(lossy, ["ok", "x\ty"])


def test_real_gorilla_programs_round_trip(gorilla):
    from minirlaif.data import load_apibench

    records = [r for r in load_apibench(gorilla / "apibench" / "huggingface_eval.json") if r.code]
    tok = SentencePieceTokenizer.train([r.code for r in records[:300]], vocab_size=1000)
    for r in records:  # includes programs whose characters were never seen (byte fallback)
        assert tok.decode(tok.encode(r.code)) == r.code
