import torch

from minirlaif.generation import sample
from minirlaif.ppo import response_logprobs
from minirlaif.policy import Seq2SeqPolicy


def make_policy(seed=0):
    torch.manual_seed(seed)
    return Seq2SeqPolicy.from_preset("tiny", vocab_size=300, pad_id=0, eos_id=1).eval()


def test_forward_shapes_and_zero_value_head():
    policy = make_policy()
    x = torch.randint(3, 300, (3, 7))
    y = torch.randint(3, 300, (3, 5))
    logits, values = policy(x, torch.ones_like(x), y)
    assert logits.shape == (3, 5, 300) and values.shape == (3, 5)
    assert torch.all(values == 0)  # zero-initialised head: V = 0 everywhere before training
    assert policy.decoder_inputs(y)[:, 0].eq(policy.decoder_start_id).all()
    assert torch.equal(policy.decoder_inputs(y)[:, 1:], y[:, :-1])


def test_value_head_reads_decoder_last_hidden_state():
    policy = make_policy()
    torch.nn.init.normal_(policy.value_head.weight)
    x, y = torch.randint(3, 300, (2, 6)), torch.randint(3, 300, (2, 4))
    _, values = policy(x, torch.ones_like(x), y)
    out = policy.backbone(input_ids=x, attention_mask=torch.ones_like(x), decoder_input_ids=policy.decoder_inputs(y),
                          output_hidden_states=True)
    expected = out.decoder_hidden_states[-1] @ policy.value_head.weight[0] + policy.value_head.bias[0]
    torch.testing.assert_close(values, expected)


def test_save_and_load_round_trip(tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    policy = make_policy()
    torch.nn.init.normal_(policy.value_head.weight)
    policy.save_pretrained(tmp_path)
    again = Seq2SeqPolicy.from_pretrained(tmp_path)
    for a, b in zip(policy.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    backbone = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)  # plain transformers loads the backbone
    assert backbone.config.d_model == policy.config.d_model


def test_rollout_logprobs_equal_teacher_forced_pass():
    policy = make_policy(1)
    torch.nn.init.normal_(policy.value_head.weight, std=0.1)
    x = torch.randint(3, 300, (6, 9))
    mask = torch.ones_like(x)
    x[2, 5:], mask[2, 5:] = 0, 0  # a right-padded prompt
    for temperature in (1.0, 0.7):
        s = sample(policy, x, mask, 25, eos_id=1, pad_id=0, temperature=temperature,
                   generator=torch.Generator().manual_seed(0))
        logp, values, _ = response_logprobs(policy, x, mask, s.tokens, s.mask, temperature)
        assert (logp - s.logprobs).abs().max() < 1e-4
        assert (values - s.values).abs().max() < 1e-4
        # masks come from EOS, not from `!= pad`: everything after the first EOS is padding
        for row in range(6):
            n = int(s.mask[row].sum())
            assert torch.all(s.tokens[row, n:] == 0)
            if s.finished[row]:
                assert s.tokens[row, n - 1] == 1 and (s.tokens[row, : n - 1] != 1).all()


def test_greedy_matches_transformers_generate():
    policy = make_policy(2)
    x = torch.randint(3, 300, (2, 8))
    s = sample(policy, x, torch.ones_like(x), 12, eos_id=1, pad_id=0, greedy=True)
    ref = policy.backbone.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=12, do_sample=False)
    for row in range(2):
        n = int(s.mask[row].sum())
        assert s.tokens[row, :n].tolist() == ref[row, 1 : n + 1].tolist()  # ref starts with the start token


def test_inverse_cdf_sampler_matches_the_distribution():
    from minirlaif.generation import sample_from

    probs = torch.tensor([0.5, 0.0, 0.2, 0.3])
    logp = probs.log().expand(200_000, 4)
    draws = sample_from(logp, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).double() / draws.numel()
    assert freq[1] == 0  # a zero-probability token is never drawn
    torch.testing.assert_close(freq, probs.double(), atol=4e-3, rtol=0)  # ~4 standard errors
