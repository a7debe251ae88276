"""The settings more than one script has, each declared once (flag, help, check). A script's `Config`
is a dataclass that inherits the groups it needs and adds its own fields; `default_for` gives a field
another default in one script without declaring it again.

    @dataclass
    class Config(RunSettings, DataSettings, SamplingSettings):
        out: str = default_for(RunSettings, "out", "runs/ppo")
        iterations: int = field(80, "rollout + update iterations", type=flags.positive_int)

The PPO switches are declared once too, in `minirlaif.ppo.PPOConfig` (train_ppo.py's Config inherits it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from minirlaif import flags
from minirlaif.utils import field


def default_for(group: type, name: str, default: Any) -> Any:
    """Field `name` of the settings group `group` with another default (the same flag, help and check)."""
    (declared,) = [f for f in dataclasses.fields(group) if f.name == name]
    return dataclasses.field(default=default, metadata=declared.metadata)


@dataclass
class RunSettings:
    """Where a script writes, and what makes a run reproducible."""

    out: str = field("runs", "run folder this script writes (see its docstring for what it holds)")
    overwrite: bool = field(False, "write into an --out folder this script did not make (its outputs there are "
                            "replaced, other files stay)")
    seed: int = field(0, "seed of every random choice the script makes (init, data order, sampling, dropout)",
                      type=flags.seed)
    device: str = field("auto", "auto, cpu, cuda, cuda:N", type=flags.device)


@dataclass
class TrainingSettings:
    """What the three training scripts share: checkpoints, --resume, and the model's training forward."""

    save_every: int = field(100, "steps (PPO: iterations) between resumable checkpoints", type=flags.positive_int)
    resume: bool = field(False, "continue from what OUT already holds (checkpoint, and train_rm.py's finished "
                         "stages)")


@dataclass
class ForwardSettings:
    """How the policy's training forward pass runs (SFT and PPO; the results do not change on CPU)."""

    compile: bool = field(False, "torch.compile the training forward pass (the first steps compile)")
    grad_checkpointing: bool = field(False, "recompute activations in backward: less memory, ~30% more compute")


@dataclass
class DataSettings:
    """The instructions, their eval split and the API database every script reads."""

    data: str = field("builtin", "'builtin' or a Gorilla APIBench file/folder")
    eval_data: str = field("", "eval file; with it all of a --data file is training data, without it a seeded "
                           "10% of the file is held out (train_sft.py: --eval-fraction; the built-in data and Gorilla folders have their own "
                           "eval split): pass the same to every script so they train on the same part")
    api_db: str = field("", "API database file for --data files (Gorilla folders find their own)")
    max_prompt_len: int = field(64, "encoder tokens (instruction) kept", type=flags.positive_int)


@dataclass
class SamplingSettings:
    """How programs are sampled from a policy."""

    max_new_tokens: int = field(128, "response length limit", type=flags.positive_int)
    temperature: float = field(1.0, "sampling temperature (PPO: also divides the logits of every log-prob)",
                               type=flags.positive_float)


@dataclass
class JudgeSettings:
    """Which judge answers the 8 questions, and how its answers are weighted into a score."""

    judge: str = field("analyzer", "judge backend: analyzer (offline program analysis), openai, hf",
                       choices=["analyzer", "openai", "hf"])
    judge_model: str = field("gpt-3.5-turbo", "model name for --judge openai, or a folder for --judge hf")
    judge_base_url: str = field("", "OpenAI-compatible server URL (default: OpenAI; e.g. vLLM, llama.cpp, Ollama)")
    judge_workers: int = field(8, "concurrent judge questions", type=flags.positive_int)
    weights: str = field("api_fits=3,api_args=3", "question weights, id=w comma-separated ('' = all equal); "
                         "see README: equal weights let a wrong API that runs outscore the right API that crashes")
