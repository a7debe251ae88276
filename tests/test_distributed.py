"""Data parallel runs (minirlaif/distributed.py) on CPU: 2 gloo processes must compute what 1 process does.

The unit tests start 2 processes with torch.multiprocessing (rendezvous on 127.0.0.1); the end-to-end
tests launch the scripts with `torchrun --nproc_per_node 2`. Everything is tiny (OMP_NUM_THREADS=1).
"""

import copy
import json
import os
import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from minirlaif import distributed
from minirlaif.data.apibench import load_apibench
from minirlaif.data.prompts import format_prompt, format_target
from minirlaif.losses import gae, masked_mean, masked_var, masked_whiten
from minirlaif.policy import Seq2SeqPolicy, new_policy
from minirlaif.ppo import PPOConfig, Rollout, rollout, update
from minirlaif.tokenizer import SentencePieceTokenizer
from tiny_data import tiny_models, write_tiny

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank, world, port, fn, args):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed.setup("cpu")
    try:
        fn(rank, world, *args)
    finally:
        distributed.cleanup()


def spawn(fn, *args, world=2):
    """Run fn(rank, world, *args) in `world` fresh processes joined into one gloo group."""
    mp.spawn(_join, args=(world, free_port(), fn, args), nprocs=world, join=True)


def torchrun(script, *args, env=None):
    cmd = [*TORCHRUN, "--master_port", str(free_port()), str(ROOT / script), *map(str, args)]
    return subprocess.run(cmd, env={**ENV, **(env or {})}, cwd=ROOT, capture_output=True, text=True, timeout=300)


def python(script, *args):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


# ---- the helpers ------------------------------------------------------------------------------------------------
def test_single_process_helpers_return_their_input():
    assert not distributed.is_distributed() and distributed.is_main()
    x = torch.randn(3, 4)
    assert distributed.all_reduce_sum(x) is x and distributed.all_gather(x) is x
    assert distributed.all_reduce_mean([1.0, 2]) == [1.0, 2] and distributed.all_reduce_sum(7) == 7
    assert distributed.shard(list(range(5))) == list(range(5))
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]])
    assert torch.equal(distributed.masked_whiten(x, mask), masked_whiten(x, mask))
    mean, std = distributed.mean_std(x[0])
    assert torch.equal(mean, x[0].mean()) and torch.equal(std, x[0].std())
    state = {"a": 1}
    assert distributed.with_rank_states(state, {"rng": 2}) == {"a": 1, "rng": 2}
    assert distributed.own_rank_state({"a": 1, "ranks": [{"a": 3}]}) == {"a": 1, "ranks": [{"a": 3}]}


def _helpers(rank, world):
    assert distributed.get_rank() == rank and distributed.get_world_size() == world == 2
    assert distributed.shard(list(range(10))) == list(range(5 * rank, 5 * rank + 5))
    assert distributed.shard(list(range(3)), 1, 2) == [1, 2]
    assert distributed.all_reduce_sum(rank + 1) == 3.0
    assert distributed.all_reduce_mean([rank, 10.0]) == [0.5, 10.0]
    assert torch.equal(distributed.all_reduce_sum(torch.tensor([rank, 1])), torch.tensor([1, 2]))
    # gather: rank order, dim 1 padded to the longest with the pad value, bool survives
    x = torch.full((2, 3 + rank), rank + 1)
    g = distributed.all_gather(x, pad_value=-1)
    assert g.tolist() == [[1, 1, 1, -1]] * 2 + [[2, 2, 2, 2]] * 2
    assert distributed.all_gather(torch.tensor([rank == 0])).tolist() == [True, False]
    assert distributed.all_gather_object({"r": rank}) == [{"r": 0}, {"r": 1}]
    assert distributed.broadcast_object("hello" if rank == 0 else None) == "hello"
    # global-batch whitening from each rank's rows == whitening of the whole batch in one process
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([6, 1, 3, 6, 2, 5, 4, 1])
    mask = (torch.arange(6)[None] < lengths[:, None]).float()
    x = torch.where(mask.bool(), x, torch.full_like(x, float("nan")))  # padding garbage must not leak
    rows = slice(4 * rank, 4 * rank + 4)
    for kw in ({}, {"unbiased": False}, {"shift_mean": False}):
        got = distributed.masked_whiten(x[rows], mask[rows], **kw)
        assert torch.allclose(got, masked_whiten(x, mask, **kw)[rows], atol=1e-6), kw
    scores = torch.randn(8, generator=torch.Generator().manual_seed(1))
    mean, std = distributed.mean_std(scores[rows])
    assert torch.allclose(mean, scores.mean(), atol=1e-6) and torch.allclose(std, scores.std(), atol=1e-6)
    # per-rank checkpoint state: saved by every rank, restored to each
    state = distributed.with_rank_states({"step": 3}, {"rng": rank})
    assert state["ranks"] == [{"rng": 0}, {"rng": 1}] and state["rng"] == rank
    assert distributed.own_rank_state({"step": 3, "rng": 0, "ranks": [{"rng": 0}, {"rng": 1}]})["rng"] == rank


def test_collectives_and_global_whitening_on_two_processes():
    spawn(_helpers)


# ---- PPO: the update of a global batch split over 2 processes == the update of that batch in one ---------------
def tiny_prompts(b=8, s=10):
    ids = torch.randint(3, 200, (b, s), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    ids[0, 6:], mask[0, 6:], ids[5, 4:], mask[5, 4:] = 0, 0, 0, 0
    return ids, mask


PADS = {"prompt_ids": 0, "tokens": 0}  # pad id 0 in the tiny models
CFG = PPOConfig(max_new_tokens=12, ppo_epochs=2, minibatch_size=4, whiten_scores=True, missing_eos_penalty=float("nan"))


def _ppo(rank, world, tmp):
    saved = torch.load(Path(tmp) / "in.pt", weights_only=False)
    policy, ref, rm = tiny_models(preset=saved["preset"])
    policy.load_state_dict(saved["policy"])

    # 1. rollout() on this rank's prompts (its own seed): scores and advantages whitened over the global batch
    ids, mask = tiny_prompts()
    batch = distributed.all_gather_fields(rollout(policy, ref, rm, ids[4 * rank : 4 * rank + 4], mask[4 * rank : 4 * rank + 4], 0.1, CFG,
                           1, 0, torch.Generator().manual_seed(100003 * rank)), PADS)
    assert batch.tokens.shape[0] == 8 and torch.equal(batch.prompt_ids, ids)
    assert abs(float(batch.scores.mean())) < 1e-5 and abs(float(batch.scores.std()) - 1) < 1e-4
    raw_advantages, _ = gae(batch.rewards, batch.values, batch.mask, CFG.gamma, CFG.lam)
    assert torch.allclose(batch.advantages, masked_whiten(raw_advantages, batch.mask), atol=1e-5)
    assert abs(float(masked_mean(batch.advantages, batch.mask))) < 1e-5
    assert abs(float(masked_var(batch.advantages, batch.mask)) - 1) < 1e-4

    # 2. the fixed rollout of the parent, split by rows (each part cut to its own longest response), gathered back
    full = saved["batch"]
    rows = slice(4 * rank, 4 * rank + 4)
    width = int(full.mask[rows].sum(1).max())
    part = {f.name: getattr(full, f.name)[rows] for f in fields(Rollout)}
    local = Rollout(**{k: v if k.startswith("prompt") or v.dim() == 1 else v[:, :width] for k, v in part.items()})
    batch = distributed.all_gather_fields(local, PADS)
    for f in fields(Rollout):
        assert torch.equal(getattr(batch, f.name), getattr(full, f.name)), f.name

    # 3. the update through DDP
    model = distributed.ddp(policy, torch.device("cpu"))
    stats = update(model, torch.optim.SGD(policy.parameters(), lr=0.1), batch, CFG, torch.Generator().manual_seed(0))
    torch.save({"state": policy.state_dict(), "stats": stats}, Path(tmp) / f"out{rank}.pt")


def cut(batch: Rollout, lengths: list[int], pad_id: int = 0) -> Rollout:
    """`batch` with response i cut to lengths[i] tokens (an untrained model hardly ever says EOS)."""
    keep = (torch.arange(batch.tokens.shape[1])[None] < torch.tensor(lengths)[:, None])
    cut_field = lambda x: torch.where(keep, x, torch.zeros((), dtype=x.dtype))  # noqa: E731
    changes = {f.name: cut_field(getattr(batch, f.name)) for f in fields(Rollout)
               if getattr(batch, f.name).shape == keep.shape and not f.name.startswith("prompt")}
    changes["tokens"] = torch.where(keep, batch.tokens, pad_id)
    return Rollout(**{**{f.name: getattr(batch, f.name) for f in fields(Rollout)}, **changes})


@pytest.mark.parametrize("preset", ["tiny", "gpt2-tiny"])  # seq2seq and decoder-only
def test_ppo_update_on_two_processes_equals_one_process(tmp_path, preset):
    policy, ref, rm = tiny_models(preset=preset)
    ids, mask = tiny_prompts()
    full = rollout(policy, ref, rm, ids, mask, 0.1, CFG, 1, 0, torch.Generator().manual_seed(0))
    full = cut(full, [5, 9, 3, 7, 12, 2, 8, 12])  # rank 0's half is narrower than rank 1's
    torch.save({"policy": policy.state_dict(), "batch": full, "preset": preset}, tmp_path / "in.pt")
    one = copy.deepcopy(policy)
    # SGD: Adam's first steps are about lr * sign(gradient), so a gradient component within float noise of 0
    # could flip by 2 lr between two summation orders; SGD moves every weight by lr * gradient.
    expected = update(one, torch.optim.SGD(one.parameters(), lr=0.1), full, CFG, torch.Generator().manual_seed(0))

    spawn(_ppo, str(tmp_path))
    outs = [torch.load(tmp_path / f"out{r}.pt", weights_only=False) for r in range(2)]
    before = policy.state_dict()
    for k, v in one.state_dict().items():
        assert torch.equal(outs[0]["state"][k], outs[1]["state"][k]), k  # the ranks stay identical
        assert torch.allclose(outs[0]["state"][k], v, atol=1e-5, rtol=0), (k, (outs[0]["state"][k] - v).abs().max())
    assert any(not torch.equal(v, before[k]) for k, v in one.state_dict().items())  # it did train
    for k, v in expected.items():
        assert outs[0]["stats"][k] == pytest.approx(v, rel=1e-4, abs=1e-6), k


def test_grad_checkpointing_in_eval_mode_recomputes_and_changes_nothing():
    policy, ref, rm = tiny_models()
    ids, mask = tiny_prompts()
    cfg = PPOConfig(max_new_tokens=8, ppo_epochs=1, minibatch_size=8)
    batch = rollout(policy, ref, rm, ids, mask, 0.1, cfg, 1, 0, torch.Generator().manual_seed(0))
    plain, ckpt = copy.deepcopy(policy), copy.deepcopy(policy)
    update(plain, torch.optim.SGD(plain.parameters(), lr=0.1), batch, cfg)
    ckpt.gradient_checkpointing_enable()
    calls = []
    ckpt.backbone.decoder.block[0].layer[0].register_forward_pre_hook(lambda *a: calls.append(1))  # inside the layer
    with ckpt.checkpointing_in_eval_mode():
        update(ckpt, torch.optim.SGD(ckpt.parameters(), lr=0.1), batch, cfg)
    assert len(calls) == 2  # the layer ran again in backward
    assert not any(m.training for m in ckpt.modules())  # eval mode everywhere afterwards
    for k, v in plain.state_dict().items():
        assert torch.allclose(ckpt.state_dict()[k], v, atol=1e-6, rtol=0), (k, (ckpt.state_dict()[k] - v).abs().max())


# ---- the scripts under torchrun ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_init(tmp_path_factory):
    """Tiny data, and a dropout-free tiny T5 + tokenizer to start from (so 1 and 2 processes can agree)."""
    base = tmp_path_factory.mktemp("dist")
    tiny = write_tiny(base / "data")
    records = load_apibench(tiny["train"])
    tok = SentencePieceTokenizer.train([format_prompt(r) for r in records] + [format_target(r) for r in records], 300)
    torch.manual_seed(0)
    policy = Seq2SeqPolicy.from_preset("tiny", tok.vocab_size, tok.pad_id, tok.eos_id)
    policy.backbone.config.dropout_rate = 0.0
    policy.save_pretrained(base / "init")
    tok.save(base / "init")
    return base, tiny


def data_args(tiny):
    return ["--data", tiny["train"], "--eval-data", tiny["eval"], "--api-db", tiny["api"], "--device", "cpu"]


def weights(run):
    return load_file(str(Path(run) / "model" / "model.safetensors"))


@pytest.mark.slow
def test_sft_two_processes_match_one_with_the_same_global_batch(tiny_init):
    base, tiny = tiny_init
    common = [*data_args(tiny), "--model", base / "init", "--samples", "0", "--warmup-steps", "2", "--max-steps", "4",
              "--grad-accum", "2", "--eval-every", "2", "--log-every", "1"]
    one = python("train_sft.py", *common, "--batch-size", "8", "--out", base / "sft1")
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun("train_sft.py", *common, "--batch-size", "4", "--out", base / "sft2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "x 2 processes" in two.stdout and two.stdout.count("eval loss") == 1  # rank 0 prints, once
    a, b = weights(base / "sft1"), weights(base / "sft2")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=0), (k, (a[k] - b[k]).abs().max())
    rows1 = [json.loads(line) for line in open(base / "sft1" / "metrics.jsonl")]
    rows2 = [json.loads(line) for line in open(base / "sft2" / "metrics.jsonl")]
    assert len(rows1) == len(rows2) == 4  # one writer
    for r1, r2 in zip(rows1, rows2):
        assert r1.keys() == r2.keys()
        for key in {"loss", "grad_norm", "lr", "eval_loss"} & r1.keys():
            assert r2[key] == pytest.approx(r1[key], rel=1e-5), key


@pytest.mark.slow
def test_dpo_two_processes_match_one_with_the_same_global_batch(tiny_init):
    base, tiny = tiny_init
    records = load_apibench(tiny["train"])
    rm = base / "dpo_pairs"
    rm.mkdir(exist_ok=True)
    pairs = [{"prompt": format_prompt(r), "chosen": format_target(r), "rejected": format_target(r)[:15],
              "chosen_score": 1.0, "rejected_score": 0.0} for r in records[:24]]
    (rm / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs[:16]))
    (rm / "heldout_pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs[16:]))
    common = ["--device", "cpu", "--sft", base / "init", "--rm", rm, "--epochs", "2", "--lr", "1e-3",
              "--max-new-tokens", "32"]
    one = python("train_dpo.py", *common, "--batch-size", "8", "--out", base / "dpo1")
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun("train_dpo.py", *common, "--batch-size", "4", "--out", base / "dpo2")
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = weights(base / "dpo1"), weights(base / "dpo2")
    # Adam moves a weight by about lr = 1e-3 per step whatever its gradient's size, so a gradient component
    # within float noise of 0 can differ by a little; a wrong split of the global batch differs by ~lr.
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4, rtol=0), (k, (a[k] - b[k]).abs().max())
    assert any(not torch.equal(v, load_file(str(base / "init" / "model.safetensors"))[k]) for k, v in a.items())
    rows1, rows2 = ([json.loads(line) for line in open(base / run / "metrics.jsonl")] for run in ("dpo1", "dpo2"))
    assert len(rows1) == len(rows2) == 4
    for r1, r2 in zip(rows1, rows2):
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-5) and r2["margin"] == pytest.approx(r1["margin"], abs=1e-5)


@pytest.mark.slow
def test_sft_kill_and_resume_under_torchrun(tiny_init):
    """From scratch (tokenizer trained on rank 0, dropout on): a killed and resumed 2-process run ends with the
    weights of an uninterrupted one, so each rank's random streams were saved and restored."""
    base, tiny = tiny_init
    common = [*data_args(tiny), "--vocab-size", "300", "--samples", "0", "--warmup-steps", "2", "--max-steps", "5",
              "--save-every", "2", "--batch-size", "4"]
    full = torchrun("train_sft.py", *common, "--out", base / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    killed = torchrun("train_sft.py", *common, "--out", base / "killed", env={"MINIRLAIF_KILL_AT_STEP": "3"})
    assert killed.returncode != 0 and not (base / "killed" / "model").exists()
    resumed = torchrun("train_sft.py", *common, "--out", base / "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "step 2" in resumed.stdout
    a, b = weights(base / "full"), weights(base / "killed")
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_rm_ppo_and_evaluate_run_under_torchrun(tiny_init):
    base, tiny = tiny_init
    many = write_tiny(base / "many", n_train=140)  # 3 sampling chunks of 64: rank 0 samples two, rank 1 one
    rm_args = ["--data", many["train"], "--eval-data", many["eval"], "--api-db", many["api"], "--device", "cpu",
               "--sft", base / "init", "--prompts", "0", "--k", "1", "--max-new-tokens", "8", "--epochs", "1",
               "--batch-size", "4", "--rm-loss", "bce"]  # pointwise: random programs make no pairs
    two = torchrun("train_rm.py", *rm_args, "--out", base / "rm2")
    assert two.returncode == 0, two.stderr[-3000:]
    one = python("train_rm.py", *rm_args, "--out", base / "rm1")
    assert one.returncode == 0, one.stderr[-3000:]
    # sampling is seeded per chunk: the same samples, in the same order, whoever sampled them
    assert (base / "rm1" / "samples.jsonl").read_text() == (base / "rm2" / "samples.jsonl").read_text()
    assert len((base / "rm2" / "samples.jsonl").read_text().splitlines()) == 140
    assert (base / "rm2" / "model" / "reward_head.safetensors").exists()
    assert json.loads((base / "rm2" / "summary.json").read_text())["samples"] == 140

    ppo = torchrun("train_ppo.py", *data_args(tiny), "--sft", base / "init", "--rm", base / "rm2", "--out",
                   base / "ppo", "--iterations", "2", "--rollouts", "8", "--minibatch-size", "4", "--ppo-epochs", "2",
                   "--max-new-tokens", "12", "--gen-batch-size", "2", "--grad-checkpointing")
    assert ppo.returncode == 0, ppo.stderr[-3000:]
    assert (base / "ppo" / "model" / "model.safetensors").exists()
    assert len((base / "ppo" / "metrics.jsonl").read_text().splitlines()) == 2
    assert any(not torch.equal(v, weights(base / "ppo")[k]) for k, v in load_file(
        str(base / "init" / "model.safetensors")).items())

    # without a critic: groups of 2 stay on one rank (4 rollouts each), the unused value head does not stall DDP
    grpo = torchrun("train_ppo.py", *data_args(tiny), "--sft", base / "init", "--rm", base / "rm2", "--out",
                    base / "grpo", "--iterations", "1", "--rollouts", "8", "--minibatch-size", "4", "--ppo-epochs", "1",
                    "--max-new-tokens", "12", "--algo", "grpo", "--group-size", "2")
    assert grpo.returncode == 0, grpo.stderr[-3000:]
    assert "kl_loss" in json.loads((base / "grpo" / "metrics.jsonl").read_text().splitlines()[0])
    # the judge as the reward: each rank asks about its own rollouts, with its own answer cache
    judged = torchrun("train_ppo.py", *data_args(tiny), "--sft", base / "init", "--out", base / "ppo_judge",
                      "--reward", "judge", "--iterations", "1", "--rollouts", "8", "--minibatch-size", "4",
                      "--ppo-epochs", "1", "--max-new-tokens", "12")
    assert judged.returncode == 0, judged.stderr[-3000:]
    caches = sorted(p.name for p in (base / "ppo_judge" / "feedback").glob("cache.rank*.jsonl"))
    assert caches == ["cache.rank0.jsonl", "cache.rank1.jsonl"]
    assert all((base / "ppo_judge" / "feedback" / c).read_text() for c in caches)

    ev = torchrun("evaluate.py", *data_args(tiny), "--models", base / "ppo", "--runs", "1", "--limit", "6",
                  "--max-new-tokens", "12", "--exec-mode", "static", "--out", base / "eval")
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert len((base / "eval" / "ppo.examples.jsonl").read_text().splitlines()) == 6
    assert ev.stdout.count("exact API match") == 1  # one table: rank 0's
    best = torchrun("evaluate.py", *data_args(tiny), "--models", base / "ppo", "--rm", base / "rm2", "--best-of", "2",
                    "--runs", "1", "--limit", "6", "--max-new-tokens", "12", "--exec-mode", "static", "--out",
                    base / "eval_best")
    assert best.returncode == 0, best.stderr[-3000:]
    assert len((base / "eval_best" / "ppo.best-of-2.examples.jsonl").read_text().splitlines()) == 6


@pytest.mark.slow
def test_evaluate_responses_under_torchrun_scores_once(tiny_init, tmp_path):
    """Scoring a file of responses is rank 0's alone: the other rank leaves at once, no process group is made
    (rank 0 would otherwise wait for it), and one table and one summary are written."""
    base, tiny = tiny_init
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps({"question_id": i, "text": "import math\nprint(math.gcd(4, 6))"}) + "\n"
                                 for i in (1, 2, 3)))
    ev = torchrun("evaluate.py", "--responses", responses, "--eval-data", tiny["eval"], "--api-db", tiny["api"],
                  "--exec-mode", "static", "--out", tmp_path / "eval")
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert ev.stdout.count("exact API match") == 1
    assert len((tmp_path / "eval" / "responses.examples.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow
def test_decoder_only_chain_in_one_and_two_processes(tmp_path):
    """--preset gpt2-tiny through every script: SFT in 2 processes equals 1 (same global batch, dropout-free
    start), then RM, PPO and DPO under torchrun, and evaluation; checkpoints load as plain causal LMs."""
    from transformers import AutoModelForCausalLM

    tiny = write_tiny(tmp_path / "data")
    records = load_apibench(tiny["train"])
    tok = SentencePieceTokenizer.train([format_prompt(r) for r in records] + [format_target(r) for r in records], 300)
    torch.manual_seed(0)
    init = new_policy("gpt2-tiny", tok.vocab_size, tok.pad_id, tok.eos_id)
    init.config.resid_pdrop = init.config.embd_pdrop = init.config.attn_pdrop = 0.0  # as saved: dropout-free
    init.save_pretrained(tmp_path / "init")
    tok.save(tmp_path / "init")

    sft = [*data_args(tiny), "--model", tmp_path / "init", "--samples", "0", "--warmup-steps", "2", "--max-steps", "4",
           "--grad-accum", "2", "--eval-every", "2", "--log-every", "1"]
    one = python("train_sft.py", *sft, "--batch-size", "8", "--out", tmp_path / "sft1")
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun("train_sft.py", *sft, "--batch-size", "4", "--out", tmp_path / "sft2")
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = weights(tmp_path / "sft1"), weights(tmp_path / "sft2")
    assert any(not torch.equal(a[k], v) for k, v in load_file(str(tmp_path / "init" / "model.safetensors")).items())
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=0), (k, (a[k] - b[k]).abs().max())
    AutoModelForCausalLM.from_pretrained(tmp_path / "sft2" / "model")

    rm = torchrun("train_rm.py", *data_args(tiny), "--sft", tmp_path / "sft2", "--out", tmp_path / "rm", "--prompts", "0",
                  "--k", "2", "--max-new-tokens", "12", "--epochs", "1", "--batch-size", "4", "--rm-loss", "bce")
    assert rm.returncode == 0, rm.stderr[-3000:]
    ppo = torchrun("train_ppo.py", *data_args(tiny), "--sft", tmp_path / "sft2", "--rm", tmp_path / "rm", "--out",
                   tmp_path / "ppo", "--iterations", "2", "--rollouts", "8", "--minibatch-size", "4", "--ppo-epochs", "2",
                   "--max-new-tokens", "12")
    assert ppo.returncode == 0, ppo.stderr[-3000:]
    assert len((tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()) == 2
    assert any(not torch.equal(v, weights(tmp_path / "ppo")[k]) for k, v in b.items())
    samples = [json.loads(line) for line in (tmp_path / "rm" / "samples.jsonl").read_text().splitlines()]
    pairs = [{"prompt": r["prompt"], "chosen": r["response"], "rejected": r["response"][:5], "chosen_score": 1.0,
              "rejected_score": 0.0} for r in samples[:12]]
    dpo_rm = tmp_path / "dpo_pairs"
    dpo_rm.mkdir()
    (dpo_rm / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs[:8]))
    (dpo_rm / "heldout_pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs[8:]))
    dpo = torchrun("train_dpo.py", "--device", "cpu", "--sft", tmp_path / "sft2", "--rm", dpo_rm, "--epochs", "1",
                   "--batch-size", "4", "--max-new-tokens", "12", "--out", tmp_path / "dpo")
    assert dpo.returncode == 0, dpo.stderr[-3000:]
    ev = python("evaluate.py", *data_args(tiny), "--models", f"{tmp_path / 'sft2'},{tmp_path / 'ppo'}", "--runs", "1",
                "--limit", "6", "--max-new-tokens", "12", "--exec-mode", "static", "--out", tmp_path / "eval")
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert len((tmp_path / "eval" / "ppo.examples.jsonl").read_text().splitlines()) == 6
