"""Throughput of minirlaif.sandbox vs a naive `subprocess.run([python, file])` per program.

    .venv/bin/python bench/bench_sandbox.py            # 200 programs, workers = os.cpu_count()
    .venv/bin/python bench/bench_sandbox.py --n 500 --workers 4

Runs the same short numpy/stdlib programs (the kind the policy writes) four ways -- naive and
sandboxed, sequential and parallel -- checks that every run printed the same thing, prints a
table and writes bench/results/sandbox.json. "cold" includes starting the fork servers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minirlaif import sandbox  # noqa: E402

TEMPLATES = [
    "import numpy as np\nresult = np.arange({i}).sum()\nprint(result)",
    "import numpy as np\na = np.linspace(0, 1, {i} + 2)\nprint(round(float(a.mean() * a.std()), 6))",
    "import numpy as np\nm = np.eye(3) * {i}\nprint(np.linalg.det(m + 1).round(3))",
    "import json\nd = {{'id': {i}, 'tags': ['a', 'b'] * {i}}}\nprint(len(json.dumps(d)))",
    "import re\ntext = 'call api_v{i}(x=1, y=2) then api_v2()'\nprint(re.findall(r'api_v(\\d+)', text))",
    "from collections import Counter\nprint(Counter('mississippi' * {i}).most_common(2))",
    "import math\nprint(sum(math.sqrt(k) for k in range({i} * 10)) // 1)",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nprint(fib({i} % 15))",
]


def make_programs(n: int) -> list[str]:
    return [TEMPLATES[i % len(TEMPLATES)].format(i=i) for i in range(n)]


def naive_run(code: str) -> str:
    """What a sandbox-less evaluator would do: one fresh interpreter per program."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "main.py")
        with open(path, "w") as f:
            f.write(code)
        proc = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=60, cwd=d)
    return proc.stdout if proc.returncode == 0 else f"ERROR {proc.returncode}: {proc.stderr[-200:]}"


def time_naive(codes: list[str], workers: int) -> tuple[float, list[str]]:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outs = list(pool.map(naive_run, codes))
    return time.perf_counter() - start, outs


def time_sandbox(codes: list[str], workers: int, cold: bool) -> tuple[float, list[str]]:
    if cold:
        sandbox.shutdown()
    start = time.perf_counter()
    results = sandbox.run_programs(codes, workers=workers, timeout_s=30)
    outs = [r.stdout if r.ok else f"ERROR {r.status}: {r.stderr[-200:]}" for r in results]
    return time.perf_counter() - start, outs


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    import numpy
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "numpy": numpy.__version__,
            "loadavg_1min_at_start": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="number of programs")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel workers")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "sandbox.json"))
    args = ap.parse_args()

    codes = make_programs(args.n)
    info = machine()
    isolation = sandbox.isolation_info()
    print(f"{args.n} programs, workers={args.workers}, {info['cpu']} x{info['cpu_count']}, "
          f"load {info['loadavg_1min_at_start']:.2f}, fully isolated: {isolation['namespaces']}")

    # Interleaved so that a change in machine load hits both sides alike.
    runs = {}
    for name, fn in [
        ("naive, 1 worker", lambda: time_naive(codes, 1)),
        ("sandbox cold, 1 worker", lambda: time_sandbox(codes, 1, cold=True)),
        ("sandbox warm, 1 worker", lambda: time_sandbox(codes, 1, cold=False)),
        (f"naive, {args.workers} workers", lambda: time_naive(codes, args.workers)),
        (f"sandbox cold, {args.workers} workers", lambda: time_sandbox(codes, args.workers, cold=True)),
        (f"sandbox warm, {args.workers} workers", lambda: time_sandbox(codes, args.workers, cold=False)),
    ]:
        seconds, outs = fn()
        runs[name] = {"seconds": round(seconds, 3), "programs_per_s": round(len(codes) / seconds, 1),
                      "outputs": outs}
        print(f"  {name:<28} {seconds:7.2f} s  {len(codes) / seconds:8.1f} programs/s", flush=True)

    reference = runs["naive, 1 worker"]["outputs"]
    assert all(not o.startswith("ERROR") for o in reference), [o for o in reference if o.startswith("ERROR")][:3]
    for name, run in runs.items():
        assert run.pop("outputs") == reference, f"{name}: outputs differ from the naive run"

    def speedup(kind: str, workers: int) -> float:
        label = "worker" if workers == 1 else "workers"
        return round(runs[f"sandbox {kind}, {workers} {label}"]["programs_per_s"]
                     / runs[f"naive, {workers} {label}"]["programs_per_s"], 1)

    print(f"\n{'':<12}{'naive/s':>10}{'sandbox cold/s':>16}{'sandbox warm/s':>16}{'speedup (warm)':>16}")
    for w in (1, args.workers):
        label = "worker" if w == 1 else "workers"
        print(f"{f'workers={w}':<12}{runs[f'naive, {w} {label}']['programs_per_s']:>10.1f}"
              f"{runs[f'sandbox cold, {w} {label}']['programs_per_s']:>16.1f}"
              f"{runs[f'sandbox warm, {w} {label}']['programs_per_s']:>16.1f}{speedup('warm', w):>15.1f}x")

    info["loadavg_1min_at_end"] = os.getloadavg()[0]
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "n_programs": args.n,
        "workers": args.workers,
        "fully_isolated": bool(isolation["namespaces"]),
        "isolation": {k: v for k, v in isolation.items() if k != "preloaded"},
        "runs": runs,
        "speedup_warm": {str(w): speedup("warm", w) for w in (1, args.workers)},
        "speedup_cold": {str(w): speedup("cold", w) for w in (1, args.workers)},
        "outputs_identical_to_naive": True,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
