"""Settings declared once (minirlaif/settings.py, ppo.PPOConfig) and settings files (config/*.py)."""

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from minirlaif.ppo import PPOConfig
from minirlaif.settings import (DataSettings, ForwardSettings, JudgeSettings, RunSettings, SamplingSettings,
                                TrainingSettings)
from minirlaif.utils import parse_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import evaluate  # noqa: E402
import train_dpo  # noqa: E402
import train_ppo  # noqa: E402
import train_rm  # noqa: E402
import train_sft  # noqa: E402

CONFIGS = {"train_sft.py": train_sft.Config, "train_rm.py": train_rm.Config, "train_ppo.py": train_ppo.Config,
           "train_dpo.py": train_dpo.Config, "evaluate.py": evaluate.Config}


def _declared_in(cls: type) -> set[str]:
    return set(vars(cls).get("__annotations__", {}))


def test_shared_settings_are_inherited_not_redeclared():
    """A script may give a shared field another default only through default_for (the flag's help and check
    stay the group's); writing `field(...)` again for a shared name in a script fails here."""
    shared = {f.name for g in (RunSettings, TrainingSettings, ForwardSettings, DataSettings, SamplingSettings,
                               JudgeSettings) for f in dataclasses.fields(g)} | {f.name for f in dataclasses.fields(PPOConfig)}
    for script, cls in CONFIGS.items():
        (node,) = [n for n in ast.parse((ROOT / script).read_text()).body
                   if isinstance(n, ast.ClassDef) and n.name == "Config"]
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and stmt.target.id in shared:
                call = stmt.value
                assert isinstance(call, ast.Call) and getattr(call.func, "id", "") == "default_for", \
                    (script, stmt.target.id, stmt.lineno)
        by_name = {f.name: f for f in dataclasses.fields(cls)}
        for group in (RunSettings, DataSettings, SamplingSettings, JudgeSettings):
            for f in dataclasses.fields(group) if issubclass(cls, group) else ():
                assert dict(by_name[f.name].metadata) == dict(f.metadata), (script, f.name)
    assert {"data", "api_db", "seed", "device", "out"} <= {f.name for f in dataclasses.fields(evaluate.Config)}


def test_every_ppo_switch_is_a_train_ppo_flag_with_its_default():
    cfg = parse_config(train_ppo.Config, "", [])
    for f in dataclasses.fields(PPOConfig):
        assert getattr(cfg, f.name) == f.default or (f.default != f.default), f.name  # nan == nan aside
    off = parse_config(train_ppo.Config, "", ["--no-whiten-advantages", "--gamma", "0.9"])
    assert off.whiten_advantages is False and off.gamma == 0.9


def test_a_settings_file_sets_values_and_a_flag_wins(tmp_path):
    f = tmp_path / "exp.py"
    f.write_text('"""train_ppo.py: an experiment."""\n# a comment\niterations = 7\nadaptive_kl = True\n'
                 'out = "runs/x"\nlr = 1e-3\n')
    cfg = parse_config(train_ppo.Config, "", [str(f), "--lr", "2e-4"])
    assert (cfg.iterations, cfg.adaptive_kl, cfg.out, cfg.lr) == (7, True, "runs/x", 2e-4)
    assert parse_config(train_ppo.Config, "", [str(f)]).lr == 1e-3


@pytest.mark.parametrize("text, line, says", [
    ("iterations = 7\nbogus = 1\n", 2, "'bogus' is not a setting"),
    ("iterations = 0\n", 1, "iterations = 0"),
    ("adaptive_kl = 1\n", 1, "must be True or False"),
    ("iterations = 3 + 4\n", 1, "plain value"),
    ("import os\n", 1, "only `name = value`"),
    ("lr = \n", 1, "not a settings file"),
])
def test_a_bad_settings_file_is_one_line_with_file_and_line(tmp_path, capsys, text, line, says):
    f = tmp_path / "bad.py"
    f.write_text(text)
    with pytest.raises(SystemExit) as e:
        parse_config(train_ppo.Config, "", [str(f)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and f"{f} line {line}" in err and says in err, err


def test_a_missing_settings_file_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(train_ppo.Config, "", [str(tmp_path / "nope.py")])
    assert e.value.code == 2 and "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.py")), ids=lambda p: p.name)
def test_every_shipped_settings_file_parses_for_its_script(path):
    """Each config/*.py names its script on its docstring's first line and holds only that script's settings."""
    script = ast.get_docstring(ast.parse(path.read_text())).split(":")[0]
    cfg = parse_config(CONFIGS[script], "", [str(path)])
    assert cfg.out.startswith("runs/") and cfg.out != parse_config(CONFIGS[script], "", []).out


def test_a_script_runs_from_a_settings_file(tmp_path):
    f = tmp_path / "exp.py"
    f.write_text('"""evaluate.py"""\nlimit = 0\nout = "x"\nbatch_size = 0\n')
    r = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), str(f)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and f"{f} line 4: batch_size = 0" in r.stderr and "Traceback" not in r.stderr
