"""How long the path to the PPO math is, at a git revision (README "Where to find things").

    python bench/core_size.py 647dd7a HEAD

Per revision: the lines of each script's `main`; the PPO core = the functions and classes of
minirlaif/losses.py that PPO uses (with their checks and the KL controllers, wherever they lived) +
minirlaif/ppo.py + train_ppo.py; the lines of `ppo_policy_loss` (docstring included); the `raise`
statements in losses.py. Lines counted with Python's ast (end_lineno - lineno + 1).
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PPO_LOSSES = {"masked_mean", "masked_var", "masked_whiten", "whiten", "logprobs_from_logits", "entropy_from_logits",
              "kl_penalized_rewards", "sequence_kl", "gae", "ppo_policy_loss", "ppo_value_loss", "explained_variance",
              "check_response_batch", "_same_shape", "_zero_pad",  # today's names
              "_check_same_shape", "_as_bool_mask", "_check_right_padded", "_zero_padding",  # before issue 13
              "AdaptiveKLController", "FixedKLController", "_check_kind"}  # in losses.py before issue 13


def source(rev: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def definitions(text: str) -> dict[str, int]:
    return {n.name: n.end_lineno - n.lineno + 1 for n in ast.parse(text).body
            if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def main() -> None:
    for rev in sys.argv[1:] or ["HEAD"]:
        losses = source(rev, "minirlaif/losses.py")
        used = sum(n for name, n in definitions(losses).items() if name in PPO_LOSSES)
        ppo, script = (len(source(rev, p).splitlines()) for p in ("minirlaif/ppo.py", "train_ppo.py"))
        mains = [definitions(source(rev, s))["main"] for s in ("train_sft.py", "train_rm.py", "train_ppo.py", "evaluate.py")]
        raises = sum(isinstance(n, ast.Raise) for n in ast.walk(ast.parse(losses)))
        print(f"{rev}: main of train_sft/train_rm/train_ppo/evaluate {' / '.join(map(str, mains))}; PPO core "
              f"{used} + {ppo} + {script} = {used + ppo + script}; ppo_policy_loss "
              f"{definitions(losses)['ppo_policy_loss']}; raises in losses.py {raises}")


if __name__ == "__main__":
    main()
