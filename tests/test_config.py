"""Config parsing: learning rates must be finite and positive, refused by argparse before any work."""

import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from minirlaif.flags import positive_float
from minirlaif.utils import field, parse_config

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Cfg:
    lr: float = field(1e-4, "learning rate", type=positive_float)
    penalty: float = field(-1.0, "any float, nan allowed")


@pytest.mark.parametrize("bad", ["nan", "inf", "0", "-1e-4", "fast"])
def test_positive_fields_refuse_bad_values(bad, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(Cfg, "test", ["--lr", bad])
    assert e.value.code == 2
    assert "argument --lr" in capsys.readouterr().err


def test_positive_fields_accept_good_values_and_others_keep_nan():
    cfg = parse_config(Cfg, "test", ["--lr", "3e-5", "--penalty", "nan"])
    assert cfg.lr == 3e-5 and cfg.penalty != cfg.penalty  # nan stays allowed where it means "off"


@pytest.mark.parametrize("script", ["train_sft.py", "train_rm.py", "train_ppo.py"])
def test_scripts_refuse_a_nan_learning_rate_in_one_line(script, tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / script), "--lr", "nan", "--out", str(tmp_path / "out")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith("argument --lr: 'nan' must be a finite number greater than 0")
    assert not (tmp_path / "out").exists()


# ---- every flag of the four scripts is checked by the parser, before any work --------------------------

def _configs() -> dict:
    sys.path.insert(0, str(ROOT))
    import evaluate
    import train_ppo
    import train_rm
    import train_sft
    return {"train_sft.py": train_sft.Config, "train_rm.py": train_rm.Config, "train_ppo.py": train_ppo.Config,
            "evaluate.py": evaluate.Config}


BAD_FLAGS = [  # (script, argv, what the error line says)
    *[("train_sft.py", [f, v], f"argument {f}") for f, v in [
        ("--batch-size", "0"), ("--batch-size", "-3"), ("--grad-accum", "0"), ("--eval-every", "0"),
        ("--save-every", "-1"), ("--log-every", "0"), ("--max-steps", "-1"), ("--epochs", "nan"),
        ("--epochs", "inf"), ("--weight-decay", "nan"), ("--weight-decay", "-0.1"), ("--vocab-size", "0"),
        ("--vocab-size", "1"), ("--vocab-size", str(10**9)), ("--eval-fraction", "-0.5"), ("--eval-fraction", "1"),
        ("--seed", str(2**70)), ("--seed", "-1"), ("--device", "gpu"), ("--device", "tpu"), ("--device", ""),
        ("--max-target-len", "0"), ("--limit-train", "-2"), ("--grad-clip", "inf"), ("--samples", "-1")]],
    *[("train_rm.py", [f, v], f"argument {f}") for f, v in [
        ("--k", "0"), ("--prompts", "-1"), ("--temperature", "0"), ("--temperature", "-1"),
        ("--margin", "nan"), ("--margin", "inf"), ("--batch-size", "0"), ("--epochs", "0"), ("--max-new-tokens", "0"),
        ("--judge-workers", "0"), ("--heldout-fraction", "1.5"), ("--save-every", "0")]],
    *[("train_ppo.py", [f, v], f"argument {f}") for f, v in [
        ("--iterations", "0"), ("--iterations", "-1"), ("--rollouts", "0"), ("--minibatch-size", "0"),
        ("--gen-batch-size", "-1"), ("--ppo-epochs", "0"), ("--max-new-tokens", "0"), ("--gamma", "nan"),
        ("--gamma", "1.5"), ("--lam", "-0.1"), ("--clip-eps", "-0.2"), ("--clip-eps", "0"), ("--value-clip-eps", "-1"),
        ("--temperature", "0"), ("--kl-coef", "-0.1"), ("--kl-coef", "nan"), ("--vf-coef", "inf"),
        ("--missing-eos-penalty", "inf"), ("--max-kl", "0"), ("--save-every", "0"), ("--device", "cuda:x")]],
    *[("evaluate.py", [f, v], f"argument {f}") for f, v in [
        ("--temperature", "0"), ("--temperature", "nan"), ("--timeout", "0"), ("--timeout", "-1"),
        ("--timeout", "nan"), ("--timeout", "inf"), ("--exec-mode", "nonsense"), ("--limit", "-1"),
        ("--workers", "-1"), ("--runs", "0"), ("--batch-size", "0"), ("--seed", str(2**70))]],
    # flags that are fine alone but not together, or that no machine here could hold
    ("train_ppo.py", ["--minibatch-size", "128"], "--minibatch-size 128 is larger than --rollouts 64"),
    ("train_rm.py", ["--k", "1"], "--k 1 gives no preference pairs for --rm-loss bt"),
    ("train_ppo.py", ["--rollouts", "1000000000"], "would need at least"),
    ("train_rm.py", ["--k", "100000000"], "would need at least"),
    ("train_sft.py", ["--vocab-size", "1000000", "--batch-size", "100000"], "would need at least"),
    ("evaluate.py", ["--batch-size", "10000000000"], "would need at least"),
]


@pytest.mark.parametrize("script, argv, says", BAD_FLAGS, ids=[f"{s}{' '.join(a)}" for s, a, _ in BAD_FLAGS])
def test_every_flag_is_checked_by_the_parser(script, argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(_configs()[script], "test", argv)
    assert e.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: " in last and says in last, last


def test_good_flags_still_parse():
    cfg = parse_config(_configs()["train_ppo.py"], "test", ["--device", "cuda:1", "--seed", str(2**32 - 1),
                                                            "--missing-eos-penalty", "nan", "--gamma", "1"])
    assert (cfg.device, cfg.seed, cfg.gamma) == ("cuda:1", 2**32 - 1, 1.0) and math.isnan(cfg.missing_eos_penalty)
    assert parse_config(_configs()["train_rm.py"], "test", ["--k", "1", "--rm-loss", "bce"]).k == 1  # pointwise


@pytest.mark.parametrize("script, argv", [("train_sft.py", ["--batch-size", "0"]), ("train_rm.py", ["--k", "1"]),
                                          ("train_ppo.py", ["--rollouts", "1000000000"]),
                                          ("evaluate.py", ["--exec-mode", "nonsense"])])
def test_scripts_refuse_bad_flags_before_any_work(script, argv, tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / script), *argv, "--out", str(tmp_path / "out")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{script}: error: " in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()
