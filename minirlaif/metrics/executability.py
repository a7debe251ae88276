"""Executability rate: the fraction of generated programs that run, in one of two modes.

* `run`: really execute each program in the sandbox (a separate, isolated process); it counts when
  it exits with status 0 within the time limit. The default for the built-in data, whose programs
  use only installed packages.
* `static`: for data like Gorilla's, whose programs download hub models and cannot run here: the
  program parses, every name is defined before use, every import and module attribute resolves in
  the installed packages, and the called API is in the API database (`static_check`).

Every number reported says which mode produced it.
"""

from __future__ import annotations

from minirlaif.metrics.static_check import static_check

MODES = ("run", "static")


def executability(programs: list[str], mode: str = "run", api_database: list[dict] | None = None,
                  hub: str = "builtin", workers: int | None = None, timeout_s: float = 5.0,
                  progress: bool = False) -> list[dict]:
    """One verdict per program: {"ok": bool, "status": str, "error": str | None}."""
    if mode == "run":
        from minirlaif.sandbox import run_programs

        results = run_programs(programs, workers=workers, timeout_s=timeout_s, progress=progress)
        return [{"ok": r.status == "ok", "status": r.status, "error": r.error_type} for r in results]
    if mode == "static":
        out = []
        for program in programs:
            r = static_check(program, api_database=api_database, hub=hub)
            out.append({"ok": r.ok, "status": "ok" if r.ok else "static_fail", "error": None if r.ok else r.reason})
        return out
    raise ValueError(f"executability mode {mode!r}: choose one of {MODES}")
