"""Config parsing: learning rates must be finite and positive, refused by argparse before any work."""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from minirlaif.utils import field, parse_config

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Cfg:
    lr: float = field(1e-4, "learning rate", positive=True)
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
