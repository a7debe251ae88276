"""Decoder-only policies: every batched, padded computation equals a plain transformers forward pass on each
row alone (unpadded prompt + response), which knows nothing of our left padding, masks or position ids."""

import json

import pytest
import torch

from minirlaif.causal_policy import CausalPolicy, left_pad
from minirlaif.errors import InputError
from minirlaif.generation import sample
from minirlaif.policy import Seq2SeqPolicy, load_policy, new_policy, policy_class
from minirlaif.ppo import response_logprobs
from minirlaif.reward_model import RewardModel

PAD, EOS, VOCAB = 0, 1, 300


def make_policy(seed=0) -> CausalPolicy:
    torch.manual_seed(seed)
    policy = new_policy("gpt2-tiny", VOCAB, PAD, EOS).eval()
    torch.nn.init.normal_(policy.value_head.weight, std=0.1)  # a zero head would hide which state it reads
    return policy


def prompts():
    """Right-padded prompts of lengths 9, 5, 9, 2 (the scripts' layout)."""
    ids = torch.randint(3, VOCAB, (4, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    for row, n in ((1, 5), (3, 2)):
        ids[row, n:], mask[row, n:] = PAD, 0
    return ids, mask


def plain(backbone, prompt: torch.Tensor, response: torch.Tensor):
    """Log-softmax logits (n, V) for each response token and the last hidden states (n + 1, H) from column
    len(prompt) - 1 on, of ONE unpadded sequence."""
    sequence = torch.cat([prompt, response])[None]
    out = backbone(input_ids=sequence, attention_mask=torch.ones_like(sequence), output_hidden_states=True)
    S = len(prompt)
    return out.logits[0, S - 1 : -1], out.hidden_states[-1][0, S - 1 :]


def test_left_pad_moves_each_prompt_to_the_right_end():
    ids, mask = prompts()
    left, left_mask = left_pad(ids, mask)
    for row in range(4):
        n = int(mask[row].sum())
        assert left_mask[row].tolist() == [0] * (9 - n) + [1] * n
        assert torch.equal(left[row, 9 - n :], ids[row, :n])


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_and_values_equal_a_plain_forward_of_each_row(temperature):
    policy = make_policy(1)
    ids, mask = prompts()
    s = sample(policy, ids, mask, 20, eos_id=EOS, pad_id=PAD, temperature=temperature,
               generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        teacher_logp, teacher_values, _ = response_logprobs(policy, ids, mask, s.tokens, s.mask, temperature)
        for row in range(4):
            n = int(s.mask[row].sum())
            logits, hidden = plain(policy.backbone, ids[row, mask[row].bool()], s.tokens[row, :n])
            logp = torch.log_softmax(logits / temperature, dim=-1).gather(1, s.tokens[row, :n, None]).squeeze(1)
            values = policy.value_head(hidden[:n]).squeeze(-1)
            torch.testing.assert_close(s.logprobs[row, :n], logp, atol=1e-5, rtol=0)
            torch.testing.assert_close(s.values[row, :n], values, atol=1e-5, rtol=0)
            torch.testing.assert_close(teacher_logp[row, :n], logp, atol=1e-5, rtol=0)
            torch.testing.assert_close(teacher_values[row, :n], values, atol=1e-5, rtol=0)
            assert torch.all(s.tokens[row, n:] == PAD)


def test_greedy_matches_transformers_generate_on_each_unpadded_prompt():
    policy = make_policy(2)
    ids, mask = prompts()
    s = sample(policy, ids, mask, 12, eos_id=EOS, pad_id=PAD, greedy=True)
    for row in range(4):
        prompt = ids[row, mask[row].bool()][None]
        ref = policy.backbone.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12,
                                       do_sample=False, eos_token_id=EOS, pad_token_id=PAD)
        n = int(s.mask[row].sum())
        assert s.tokens[row, :n].tolist() == ref[0, prompt.shape[1] : prompt.shape[1] + n].tolist()


def test_sft_loss_reads_only_the_response_tokens():
    import train_sft

    policy = make_policy(3)
    pairs = [([5, 6, 7, EOS], [8, 9, EOS]), ([10, EOS], [11, 12, 13, 14, EOS])]
    with torch.no_grad():
        loss, n_tokens = train_sft.batch_loss(policy, pairs, PAD, "cpu")
    total, count = 0.0, 0
    for prompt, target in pairs:  # by hand: -log p(y_t | x, y_<t) summed over the target tokens only
        with torch.no_grad():
            logp = torch.log_softmax(policy.backbone(input_ids=torch.tensor([prompt + target])).logits[0], dim=-1)
        for t, token in enumerate(target):
            total -= float(logp[len(prompt) - 1 + t, token])
            count += 1
    assert n_tokens == count == 8
    assert abs(float(loss) - total / count) < 1e-5


@pytest.mark.parametrize("pooling", ["eos", "mean"])
def test_reward_model_pools_the_documented_states(pooling):
    torch.manual_seed(4)
    rm = RewardModel(new_policy("gpt2-tiny", VOCAB, PAD, EOS).backbone, pooling).eval()
    ids, mask = prompts()
    responses = torch.randint(3, VOCAB, (4, 6), generator=torch.Generator().manual_seed(5))
    lengths = [6, 3, 1, 4]
    response_mask = (torch.arange(6)[None] < torch.tensor(lengths)[:, None]).long()
    responses = torch.where(response_mask.bool(), responses, PAD)
    with torch.no_grad():
        got = rm.raw_reward(ids, mask, responses, response_mask)
        padded_more = rm.raw_reward(torch.cat([ids, torch.zeros(4, 3, dtype=torch.long)], 1),
                                    torch.cat([mask, torch.zeros(4, 3, dtype=torch.long)], 1),
                                    torch.cat([responses, torch.zeros(4, 2, dtype=torch.long)], 1),
                                    torch.cat([response_mask, torch.zeros(4, 2, dtype=torch.long)], 1))
        for row, n in enumerate(lengths):
            _, hidden = plain(rm.backbone, ids[row, mask[row].bool()], responses[row, :n])  # hidden[t] read y_<t
            pooled = hidden[n] if pooling == "eos" else hidden[1 : n + 1].mean(dim=0)
            want = float(pooled @ rm.head.weight[0] + rm.head.bias[0])
            assert abs(float(got[row]) - want) < 1e-4, (pooling, row)
    torch.testing.assert_close(padded_more, got, atol=1e-5, rtol=0)


def test_save_load_round_trip_and_kind_detection(tmp_path):
    from transformers import AutoModelForCausalLM

    policy = make_policy(5)
    policy.save_pretrained(tmp_path / "causal")
    assert policy_class(tmp_path / "causal") is CausalPolicy
    again = load_policy(tmp_path / "causal")
    assert isinstance(again, CausalPolicy)
    for (k, a), b in zip(policy.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    AutoModelForCausalLM.from_pretrained(tmp_path / "causal")  # plain transformers loads the backbone
    assert json.loads((tmp_path / "causal" / "policy.json").read_text())["d_model"] == 128
    rm = RewardModel.from_pretrained(tmp_path / "causal", "mean")
    assert rm.kind is CausalPolicy and rm.head.weight.shape == (1, 128)

    new_policy("tiny", VOCAB, PAD, EOS).save_pretrained(tmp_path / "t5")
    assert isinstance(load_policy(tmp_path / "t5"), Seq2SeqPolicy)


def test_bad_models_are_refused_in_one_line(tmp_path):
    from transformers import CLIPVisionConfig

    CLIPVisionConfig().save_pretrained(tmp_path / "vision")
    with pytest.raises(InputError, match="neither seq2seq nor decoder-only"):
        load_policy(tmp_path / "vision")
    with pytest.raises(InputError, match="unknown preset"):
        new_policy("gpt3-huge", VOCAB, PAD, EOS)
    policy = make_policy()
    long = torch.ones(1, 200, dtype=torch.long)
    with pytest.raises(InputError, match="max_position_embeddings"):
        policy(long, torch.ones_like(long), torch.ones(1, 60, dtype=torch.long))  # 260 > 256 positions


def test_a_tokenizer_without_a_pad_token_is_refused_with_the_fix(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from minirlaif.tokenizer import load_tokenizer

    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "</s>": 1, "<unk>": 2}, "<unk>")),
                                   eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(tmp_path / "no_pad")
    with pytest.raises(InputError, match=r"has no pad token; set one .*tok.pad_token = tok.eos_token"):
        load_tokenizer(tmp_path / "no_pad")
    fast.pad_token = fast.eos_token
    fast.save_pretrained(tmp_path / "with_pad")
    assert load_tokenizer(tmp_path / "with_pad").pad_id == 1
