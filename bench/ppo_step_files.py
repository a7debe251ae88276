"""Which of our files one PPO minibatch step runs (README "Where to find things").

    python bench/ppo_step_files.py

Runs update() on a tiny policy's batch of 8 twice under sys.setprofile, one epoch each: as 2 minibatches of 4
and as 4 minibatches of 2, counting the calls of every function in this repository. A function called more
often in the second run runs in every minibatch step; one called as often runs once per epoch or update.
"""

import collections
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from tiny_data import tiny_models  # noqa: E402

from minirlaif.ppo import PPOConfig, rollout, update  # noqa: E402


def calls_in_update(policy, batch, minibatch_size: int) -> collections.Counter:
    calls: collections.Counter = collections.Counter()

    def profile(frame, event, arg):
        path = frame.f_code.co_filename
        if event == "call" and path.startswith(str(ROOT)) and "/.venv" not in path:
            calls[(Path(path).relative_to(ROOT).as_posix(), frame.f_code.co_name)] += 1

    cfg = PPOConfig(max_new_tokens=8, ppo_epochs=1, minibatch_size=minibatch_size)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    sys.setprofile(profile)
    update(policy, optimizer, batch, cfg, torch.Generator().manual_seed(0))
    sys.setprofile(None)
    return calls


def main() -> None:
    policy, ref, rm = tiny_models()
    ids = torch.randint(3, 200, (8, 10), generator=torch.Generator().manual_seed(3))
    batch = rollout(policy, ref, rm, ids, torch.ones_like(ids), 0.1, PPOConfig(max_new_tokens=8), 1, 0,
                    torch.Generator().manual_seed(0))
    two, four = calls_in_update(policy, batch, 4), calls_in_update(policy, batch, 2)
    print("calls with 2 steps, with 4 steps, function")
    for key in sorted(four):
        print(f"{two[key]:5d} {four[key]:5d}  {key[0]}:{key[1]}")
    # update()'s own loop body is in minirlaif/ppo.py: it runs in every step whatever it calls
    per_step = sorted({"minirlaif/ppo.py"} | {path for (path, name), n in four.items() if n > two[(path, name)]})
    print(f"\nfiles that run in every minibatch step: {', '.join(per_step)} ({len(per_step)})")


if __name__ == "__main__":
    main()
