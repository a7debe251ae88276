"""Seconds CodeBLEU takes on one long generated program: why report.py scores only a prefix.

    .venv/bin/python bench/codebleu_long_programs.py            # lengths 2,000 ... 20,000 characters

The program is a call chain `x.f(x).f(x)...`, the slowest shape we found (the dataflow step is
superlinear in it); the reference is three short lines.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minirlaif.metrics.codebleu import codebleu  # noqa: E402

REFERENCE = "import math\nx = math.gcd(4, 6)\nprint(x)\n"

for n in (2_000, 4_000, 8_000, 12_000, 20_000):
    program = "x" + ".f(x)" * ((n - 1) // 5)
    start = time.perf_counter()
    codebleu([REFERENCE], [program])
    print(f"{len(program):>7,} characters: {time.perf_counter() - start:6.2f} s", flush=True)
