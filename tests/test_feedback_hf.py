"""The local transformers judge: P(yes) from next-token logits, checked against a direct forward pass."""

import pytest
import torch

from minirlaif.feedback import QUESTIONS, HFJudge, Item, Query, build_messages, label, make_judge
from minirlaif.feedback.prompts import plain_prompt

WORDS = ["[UNK]", "[PAD]", "Yes", "No", "Answer", ":", "?", "the", "code", "Does", "import", "print", "math",
         "<", ">", "user", "system", "assistant", "(", ")", "."]
API = {"domain": "Number theory", "api_call": "math.gcd(a, b)", "api_name": "math.gcd"}
ITEM = Item("Print the gcd of 4 and 6.", API, "import math\nprint(math.gcd(4, 6))")


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A 1-layer GPT-2 with random weights and a word-level tokenizer that knows Yes and No."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny_lm")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(path)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(WORDS), n_positions=1024, n_embd=32, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


def direct_p_yes(judge, ids):
    with torch.no_grad():
        logits = judge.model(torch.tensor([ids])).logits[0, -1]
    two = torch.stack([logits[WORDS.index("Yes")], logits[WORDS.index("No")]])
    return torch.softmax(two, dim=0)[0].item()


def test_yes_no_ids_skip_unknown_spellings(tiny_lm):
    judge = HFJudge(str(tiny_lm))
    # "Yes" and " Yes" are the same word-level token; "yes", "YES" are unknown words and must not count.
    assert judge.yes_ids == [WORDS.index("Yes")] and judge.no_ids == [WORDS.index("No")]
    assert judge.name == f"hf:{tiny_lm}"


def test_p_yes_is_the_softmax_over_yes_and_no_logits(tiny_lm):
    judge = make_judge("hf", path=str(tiny_lm))
    values = set()
    for q in QUESTIONS[:3]:
        messages = build_messages(ITEM.instruction, ITEM.api_data, ITEM.program, q)
        ids = judge.tokenizer.encode(plain_prompt(messages))  # no chat template: plain text
        assert judge.prompt_ids(messages) == ids
        raw = judge.ask(Query(ITEM, q, messages))
        expected = direct_p_yes(judge, ids)
        assert raw.p_yes == pytest.approx(expected, abs=1e-6)
        assert raw.text == ("Yes" if expected >= 0.5 else "No") and raw.source == "logits"
        assert 0 < raw.detail["yes_no_mass"] < 1
        values.add(round(raw.p_yes, 6))
    assert len(values) == 3  # different prompts, different answers: the logits are really read


def test_chat_template_is_applied_when_the_tokenizer_has_one(tiny_lm):
    judge = HFJudge(str(tiny_lm))
    judge.tokenizer.chat_template = (
        "{% for m in messages %}< {{ m['role'] }} > {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}< assistant >{% endif %}"
    )
    q = QUESTIONS[0]
    messages = build_messages(ITEM.instruction, ITEM.api_data, ITEM.program, q)
    ids = judge.prompt_ids(messages)
    assert judge.tokenizer.convert_ids_to_tokens(ids[-3:]) == ["<", "assistant", ">"]
    assert ids != judge.tokenizer.encode(plain_prompt(messages))
    assert judge.ask(Query(ITEM, q, messages)).p_yes == pytest.approx(direct_p_yes(judge, ids), abs=1e-6)


def test_label_with_the_local_judge(tiny_lm):
    judge = HFJudge(str(tiny_lm))
    (fb,) = label(judge, [ITEM], progress=False)
    assert len(fb.answers) == 8 and all(a.source == "logits" and a.tokens == 0 for a in fb.answers)
    assert fb.score == pytest.approx(sum(a.p_good for a in fb.answers) / 8)
