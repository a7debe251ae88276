"""ROUGE-L on code tokens: hand-computed LCS values and a brute-force cross-check."""

import itertools
import random

import pytest

from minirlaif.metrics.rouge import code_tokens, lcs_length, rouge_l, rouge_l_corpus


def test_code_tokens():
    assert code_tokens("x = f(a+b, 'hi there')  # ok") == [
        "x", "=", "f", "(", "a", "+", "b", ",", "'hi there'", ")", "#", "ok"
    ]
    assert code_tokens('m = AutoModel.from_pretrained("bert-base", n=2)') == [
        "m", "=", "AutoModel", ".", "from_pretrained", "(", '"bert-base"', ",", "n", "=", "2", ")"
    ]
    assert code_tokens("x **= 1.5e-3 ; a//b != c -> d") == [
        "x", "**=", "1.5e-3", ";", "a", "//", "b", "!=", "c", "->", "d"
    ]
    assert code_tokens("s = r'\\d+' + f\"{x}\" + '''a\nb''' + 0x1F") == [
        "s", "=", "r'\\d+'", "+", 'f"{x}"', "+", "'''a\nb'''", "+", "0x1F"
    ]
    assert code_tokens("don't") == ["don", "'", "t"]  # unterminated quote: one character
    assert code_tokens("  \n\t ") == []


def test_lcs_hand_computed():
    # a b c d e  vs  a c e f : LCS = a c e -> 3
    assert lcs_length("abcde", "acef") == 3
    # x y z  vs  z y x : any single token -> 1
    assert lcs_length("xyz", "zyx") == 1
    # A B C B D A B  vs  B D C A B A (CLRS example): LCS = B C B A -> 4
    assert lcs_length("ABCBDAB", "BDCABA") == 4
    assert lcs_length("", "abc") == 0 and lcs_length("abc", "") == 0


def test_rouge_l_hand_computed():
    # ref  = pipeline ( 'fill-mask' , model = 'roberta-base' )   -> 8 tokens
    # hyp  = pipeline ( 'fill-mask' )                              -> 4 tokens
    # LCS  = pipeline ( 'fill-mask' )  -> 4;  P = 4/4 = 1, R = 4/8 = 0.5, F = 2*0.5/1.5 = 2/3
    ref = "pipeline('fill-mask', model='roberta-base')"
    assert rouge_l(ref, "pipeline('fill-mask')") == pytest.approx(2 / 3)
    # ref = a + b (3), hyp = a - b (3): LCS = a b -> 2; P = R = 2/3 -> F = 2/3
    assert rouge_l("a+b", "a-b") == pytest.approx(2 / 3)
    # ref = x = f ( 1 ) (6), hyp = y = f ( 1 , 2 ) (8): LCS = = f ( 1 ) -> 5
    # P = 5/8, R = 5/6, F = 2 * (25/48) / (5/8 + 5/6) = (50/48) / (35/24) = 5/7
    assert rouge_l("x = f(1)", "y = f(1, 2)") == pytest.approx(5 / 7)
    # the string literal is one token: 'roberta-base' vs 'roberta-large' share nothing inside
    # ref m ( 'roberta-base' ) vs hyp m ( 'roberta-large' ): LCS = m ( ) -> 3 of 4 each -> F = 3/4
    assert rouge_l("m('roberta-base')", "m('roberta-large')") == pytest.approx(3 / 4)


def test_operators_matter_unlike_default_rouge():
    assert rouge_l("a+b", "a-b") < 1.0
    assert rouge_l("x == y", "x = y") < 1.0


def test_identical_disjoint_empty():
    code = "import numpy as np\nprint(np.linspace(0, 1, 5))"
    assert rouge_l(code, code) == 1.0
    assert rouge_l(code, "import numpy as np\n\n\nprint( np.linspace(0,1,5) )") == 1.0  # whitespace-insensitive
    assert rouge_l("a b c", "x y z") == 0.0
    assert rouge_l("", "a") == 0.0 and rouge_l("a", "") == 0.0 and rouge_l("", "") == 0.0


def brute_force_lcs(a, b):
    """Longest subsequence of `a` (tried longest first) that is also a subsequence of `b`."""

    def is_subsequence(sub, seq):
        it = iter(seq)
        return all(tok in it for tok in sub)

    for k in range(len(a), 0, -1):
        for idx in itertools.combinations(range(len(a)), k):
            if is_subsequence([a[i] for i in idx], b):
                return k
    return 0


def test_lcs_matches_brute_force_on_random_lists():
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 9))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 9))]
        assert lcs_length(a, b) == brute_force_lcs(a, b) == lcs_length(b, a)


def test_rouge_l_matches_formula_on_random_token_lists():
    rng = random.Random(1)
    for _ in range(100):
        ref = [rng.choice(["x", "y", "(", ")", "+", "1"]) for _ in range(rng.randint(1, 8))]
        hyp = [rng.choice(["x", "y", "(", ")", "+", "1"]) for _ in range(rng.randint(1, 8))]
        lcs = brute_force_lcs(ref, hyp)
        want = 0.0 if lcs == 0 else 2 * lcs / (len(ref) + len(hyp))  # 2PR/(P+R) simplifies to this
        assert rouge_l(" ".join(ref), " ".join(hyp)) == pytest.approx(want)


def test_corpus_mean():
    assert rouge_l_corpus(["a+b", "x"], ["a-b", "x"]) == pytest.approx((2 / 3 + 1) / 2)
    assert rouge_l_corpus([], []) == 0.0
    with pytest.raises(ValueError):
        rouge_l_corpus(["a"], [])
