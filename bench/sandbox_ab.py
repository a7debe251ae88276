"""Sandbox throughput of this checkout vs an earlier git revision, interleaved on the same programs.

    .venv/bin/python bench/sandbox_ab.py 7520549             # vs the sandbox before the hardening
    .venv/bin/python bench/sandbox_ab.py 7520549 --workers 2

Both sandboxes run the same 200 programs of bench_sandbox.py on warm fork servers, alternating which
goes first each round, so a change in machine load hits both. Prints programs/s per round, the median
of each side and new/old. sandbox.py is a leaf module: the old one runs from a temp folder unchanged.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_sandbox import make_programs  # noqa: E402
from minirlaif import sandbox as new_sandbox  # noqa: E402


def load_old(revision: str, folder: Path):
    for name in ("sandbox.py", "_sandbox_worker.py"):
        text = subprocess.run(["git", "show", f"{revision}:minirlaif/{name}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        (folder / name).write_text(text)
    spec = importlib.util.spec_from_file_location("old_sandbox", folder / "sandbox.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_sandbox"] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("revision", help="git revision whose minirlaif/sandbox.py is the baseline")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--n", type=int, default=200, help="programs per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    codes = make_programs(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        old_sandbox = load_old(args.revision, Path(tmp))
        sides = {"old": old_sandbox, "new": new_sandbox}
        for module in sides.values():
            module.run_programs(codes[:20], workers=args.workers)  # start the servers
        rates: dict[str, list[float]] = {"old": [], "new": []}
        for round_ in range(args.rounds):
            for name in (["old", "new"] if round_ % 2 == 0 else ["new", "old"]):
                start = time.perf_counter()
                results = sides[name].run_programs(codes, workers=args.workers)
                rates[name].append(len(codes) / (time.perf_counter() - start))
                bad = [r for r in results if not r.ok]
                assert not bad, f"{name}: {bad[0]}"
    for name, values in rates.items():
        print(f"{name}: median {statistics.median(values):.1f} programs/s, rounds {[round(v, 1) for v in values]}")
    print(f"new/old (medians): {statistics.median(rates['new']) / statistics.median(rates['old']):.3f} "
          f"with {args.workers} worker(s)")


if __name__ == "__main__":
    main()
