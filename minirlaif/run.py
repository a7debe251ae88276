"""The plumbing every training script repeats, written once: a script's `main` reads as its algorithm.

    run = Run("train_sft.py", cfg)                   # torchrun setup, run folder, seed
    checkpoint = run.checkpoint()                    # (model folder, state) when --resume finds one
    start = run.restore(checkpoint[1], optimizer, scheduler, lr_at) if checkpoint else 0
    logger, bar = run.logger(start), run.progress(start, total_steps, "sft")   # metrics.jsonl, args.json
    for step in bar:
        ...                                          # the algorithm
        run.end_step(step + 1, total_steps, save_model, {"optimizer": ..., "scheduler": ...})
    run.finish(save_model, summary)                  # model/, summary.json, teardown

What each piece guarantees:
- the run folder is claimed before any work (checkpoint.claim_run_folder: a script never writes into a
  folder it did not make, unless --overwrite);
- checkpoints are atomic and hold the model, the optimizer (and scheduler), every RNG and, under
  torchrun, each rank's RNG streams: a killed run resumed with --resume ends with the same weights;
- --lr on resume replaces the checkpoint's learning rate (e.g. lowered after a non-finite loss);
- MINIRLAIF_KILL_AT_STEP kills the process after that step (the kill/resume tests);
- only rank 0 writes files, logs and progress bars.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from minirlaif import distributed
from minirlaif.checkpoint import claim_run_folder, load_checkpoint, save_checkpoint, write_dir_atomic
from minirlaif.progress import progress_bar
from minirlaif.utils import (JsonlLogger, debug_kill_point, quiet_transformers, rng_state, set_rng_state, set_seed,
                             write_json_atomic)


class Run:
    """One training run of `script` with settings `cfg` (a dataclass with out, overwrite, seed, device,
    resume and save_every). `timeout_minutes` bounds how long a rank waits for the others (train_rm.py's
    ranks wait while rank 0 asks the judge); `log_key` names the step counter in metrics.jsonl."""

    def __init__(self, script: str, cfg: Any, timeout_minutes: float = 30, log_key: str = "step") -> None:
        self.cfg, self.out, self.log_key = cfg, Path(cfg.out), log_key
        # (0, 1, 0, --device) unless launched by torchrun
        self.rank, self.world, _, self.device = distributed.setup(cfg.device, timeout_minutes)
        self.main = distributed.is_main()
        if self.main:
            claim_run_folder(self.out, script, {f.name for f in dataclasses.fields(cfg)}, cfg.overwrite)
        quiet_transformers()
        set_seed(cfg.seed)
        self._logger: JsonlLogger | None = None

    # ---- resume ----------------------------------------------------------------------------------------------
    def checkpoint(self) -> tuple[Path, dict] | None:
        """(model folder, state with this rank's RNG streams) of OUT/checkpoint when --resume is on and there
        is one; None otherwise."""
        if not self.cfg.resume:
            return None
        found = load_checkpoint(self.out)
        if found is None:
            print(f"--resume: no checkpoint in {self.out}: training starts at step 0")
            return None
        return found[0], distributed.own_rank_state(found[1])

    def restore(self, state: dict, optimizer: Any, scheduler: Any = None,
                multiplier: Callable[[int], float] | None = None, generators: dict[str, Any] | None = None) -> int:
        """Load the optimizer (and scheduler), every RNG and the named torch generators from `state`; returns
        the step it was saved at. A different --lr replaces the saved one, continuing the schedule
        `multiplier(step)` from there."""
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        saved = scheduler.base_lrs[0] if scheduler is not None else optimizer.param_groups[0]["lr"]
        if saved != self.cfg.lr:
            print(f"--lr {self.cfg.lr} replaces the checkpoint's {saved}")
            if scheduler is not None:
                scheduler.base_lrs = [self.cfg.lr] * len(scheduler.base_lrs)
            for group in optimizer.param_groups:
                group["lr"] = self.cfg.lr * (multiplier(scheduler.last_epoch) if scheduler is not None else 1.0)
                if scheduler is not None:
                    group["initial_lr"] = self.cfg.lr
        set_rng_state(state["rng"])
        for name, generator in (generators or {}).items():
            generator.set_state(state[name])
        print(f"resumed from {self.out}/checkpoint at {self.log_key} {state[self.log_key]}")
        return state[self.log_key]

    # ---- the loop --------------------------------------------------------------------------------------------
    def logger(self, start: int) -> JsonlLogger:
        """OUT/metrics.jsonl without the rows after `start` (rank 0; the others log nowhere), and the settings
        beside it in OUT/args.json."""
        if self.main:
            write_json_atomic(dataclasses.asdict(self.cfg), self.out / "args.json")
        self._logger = JsonlLogger(self.out / "metrics.jsonl" if self.main else os.devnull, start, key=self.log_key)
        return self._logger

    def progress(self, start: int, total: int, desc: str) -> Iterable[int]:
        """range(start, total) with a progress bar on rank 0 (whole lines in a log file)."""
        return progress_bar(range(start, total), initial=start, total=total, desc=desc, disable=not self.main)

    def end_step(self, done: int, total: int, save_model: Callable[[Path], None], state: dict,
                 generators: dict[str, Any] | None = None) -> None:
        """After step `done`: every --save-every steps and at the last one, an atomic checkpoint of the model
        and `state`, with the settings, every RNG and the named torch generators (under torchrun each rank's
        own). A collective: every rank calls it."""
        if done % self.cfg.save_every == 0 or done == total:
            own = {"rng": rng_state(), **{name: g.get_state() for name, g in (generators or {}).items()}}
            state = distributed.with_rank_states({**state, self.log_key: done, "config": dataclasses.asdict(self.cfg)},
                                                 own)
            if self.main:
                save_checkpoint(self.out, save_model, state)
        debug_kill_point(done)

    # ---- the end ---------------------------------------------------------------------------------------------
    def finish(self, save_model: Callable[[Path], None] | None = None, summary: dict | None = None) -> None:
        """Rank 0 writes OUT/model atomically and OUT/summary.json; every rank closes the log and, after the
        others are done, leaves the process group."""
        if self.main and save_model is not None:
            write_dir_atomic(self.out / "model", save_model)
        if self.main and summary is not None:
            write_json_atomic(summary, self.out / "summary.json")
        if self._logger is not None:
            self._logger.close()
        distributed.cleanup()
