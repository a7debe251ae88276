"""The reward model reads the decoder where its docstring says, ignores padding, and round-trips to disk."""

import json

import pytest
import torch

from minirlaif.policy import Seq2SeqPolicy
from minirlaif.reward_model import NORM_FILE, RewardModel

PAD, EOS = 0, 1


def tiny_rm(pooling: str) -> RewardModel:
    torch.manual_seed(0)
    backbone = Seq2SeqPolicy.from_preset("tiny", 50, PAD, EOS).backbone
    return RewardModel(backbone, pooling).eval()


def batch():
    """Two prompts and two right-padded responses of lengths 5 and 3 (EOS included)."""
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(2, 50, (2, 6), generator=g)
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    responses = torch.randint(2, 50, (2, 5), generator=g)
    responses[0, 4] = EOS
    responses[1, 2] = EOS
    responses[1, 3:] = PAD
    response_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    return input_ids, attention_mask, responses, response_mask


def decoder_states(rm: RewardModel, input_ids, attention_mask, response) -> torch.Tensor:
    """Decoder states (T+1, H) of ONE unpadded response, from the plain transformers forward pass."""
    start = torch.tensor([[rm.backbone.config.decoder_start_token_id]])
    out = rm.backbone(input_ids=input_ids, attention_mask=attention_mask,
                      decoder_input_ids=torch.cat([start, response[None]], dim=1), output_hidden_states=True)
    return out.decoder_hidden_states[-1][0]


@pytest.mark.parametrize("pooling", ["eos", "mean"])
def test_raw_reward_reads_the_documented_states(pooling):
    rm = tiny_rm(pooling)
    input_ids, attention_mask, responses, response_mask = batch()
    with torch.no_grad():
        got = rm.raw_reward(input_ids, attention_mask, responses, response_mask)
        for i in range(2):
            n = int(response_mask[i].sum())
            keep = attention_mask[i].bool()
            h = decoder_states(rm, input_ids[i : i + 1, keep], attention_mask[i : i + 1, keep], responses[i, :n])
            pooled = h[n] if pooling == "eos" else h[1 : n + 1].mean(dim=0)  # h[t+1] has read y_0..y_t
            want = float(pooled @ rm.head.weight[0] + rm.head.bias[0])
            assert abs(float(got[i]) - want) < 1e-4, (pooling, i)


@pytest.mark.parametrize("pooling", ["eos", "mean"])
def test_extra_padding_changes_nothing(pooling):
    rm = tiny_rm(pooling)
    input_ids, attention_mask, responses, response_mask = batch()
    padded = torch.cat([responses, torch.full((2, 4), PAD)], dim=1)
    padded_mask = torch.cat([response_mask, torch.zeros(2, 4, dtype=response_mask.dtype)], dim=1)
    with torch.no_grad():
        a = rm.raw_reward(input_ids, attention_mask, responses, response_mask)
        b = rm.raw_reward(input_ids, attention_mask, padded, padded_mask)
    assert torch.allclose(a, b, atol=1e-5)


def test_normalisation_gives_mean_0_std_1_and_round_trips(tmp_path):
    rm = tiny_rm("mean")
    raw = torch.tensor([0.5, 1.5, -2.0, 3.0])
    rm.fit_normalisation(raw)
    normalised = rm.gain * raw + rm.bias
    assert abs(float(normalised.mean())) < 1e-6 and abs(float(normalised.std()) - 1.0) < 1e-6
    rm.save_pretrained(tmp_path)
    loaded = RewardModel.from_pretrained(tmp_path).eval()  # the saved pooling wins over the default "eos"
    assert loaded.pooling == "mean"
    assert float(loaded.gain) == pytest.approx(float(rm.gain)) and float(loaded.bias) == pytest.approx(float(rm.bias))
    args = batch()
    with torch.no_grad():
        assert torch.allclose(loaded(*args), rm(*args), atol=1e-6)


def test_folders_from_before_pooling_load_as_eos(tmp_path):
    rm = tiny_rm("eos")
    rm.save_pretrained(tmp_path)
    norm = json.loads((tmp_path / NORM_FILE).read_text())
    del norm["pooling"]
    (tmp_path / NORM_FILE).write_text(json.dumps(norm))
    assert RewardModel.from_pretrained(tmp_path, pooling="mean").pooling == "eos"


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling"):
        tiny_rm("max")
