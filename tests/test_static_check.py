"""Static executability check on hand-written programs (each expectation is what Python would do)."""

import sys

import pytest

from minirlaif.metrics.static_check import StaticResult, missing_imports, module_exists, static_check, undefined_names

CORRECT = """\
import json
import math
import numpy as np
from collections import Counter

def mean_gcd(pairs, *, scale=1.0):
    total = 0
    for a, b in pairs:
        total += math.gcd(a, b)
    return scale * total / max(len(pairs), 1)

pairs = [(12, 18), (7, 21)]
counts = Counter(x % 2 for x in np.arange(5).tolist())
print(json.dumps({"mean": mean_gcd(pairs), "odd": counts[1]}))
"""


def test_correct_program_passes():
    assert static_check(CORRECT) == StaticResult(True, "", [])
    assert undefined_names(CORRECT) == [] and missing_imports(CORRECT) == []


def test_syntax_error():
    r = static_check("def f(:\n    return 1\n")
    assert (r.ok, r.reason) == (False, "syntax_error")
    assert undefined_names("def f(:") == [] and missing_imports("def f(:") == []


def test_missing_import():
    code = "x = np.array([1, 2])\nprint(json.dumps(x.tolist()), len(x))\n"
    assert missing_imports(code) == ["np", "json"]
    assert undefined_names(code) == ["np", "json"]  # also undefined names, in order of first use
    assert static_check(code).reason == "undefined_name:np"
    assert static_check(code).problems == ["undefined_name:np", "undefined_name:json"]


def test_undefined_variable_is_not_a_missing_import():
    code = "import math\nprint(math.sqrt(value))\n"
    assert undefined_names(code) == ["value"] and missing_imports(code) == []
    assert static_check(code).reason == "undefined_name:value"


def test_use_before_definition_at_module_level():
    assert undefined_names("print(x)\nx = 1\n") == ["x"]
    assert undefined_names("print(helper(2))\ndef helper(n):\n    return n\n") == ["helper"]
    assert undefined_names("x = x + 1\n") == ["x"]
    assert undefined_names("total += 1\n") == ["total"]
    assert undefined_names("class A(Base):\n    pass\nclass Base:\n    pass\n") == ["Base"]
    # a binding inside if/try counts from there on
    assert undefined_names("if True:\n    y = 1\nprint(y)\n") == []


def test_function_bodies_run_later():
    # the body reads `k` when called, after the module bound it: fine; `c` is bound nowhere
    code = "def f(n):\n    return n * k + c\nk = 3\nprint(f(2))\n"
    assert undefined_names(code) == ["c"]
    # defaults are evaluated at definition time
    assert undefined_names("def g(a=default):\n    return a\ndefault = 1\n") == ["default"]
    # mutual recursion, nested functions, global declarations
    code = (
        "def even(n):\n    return n == 0 or odd(n - 1)\n"
        "def odd(n):\n    return n != 0 and even(n - 1)\n"
        "def outer():\n    v = 1\n    def inner():\n        return v + w\n    w = 2\n    return inner()\n"
        "def init():\n    global CFG\n    CFG = 1\n"
        "init()\nprint(even(4), outer(), CFG)\n"
    )
    assert undefined_names(code) == []


def test_function_params():
    code = "def f(a, /, b, *args, c=1, d, **kw):\n    return a + b + c + d + len(args) + len(kw) + e\n"
    assert undefined_names(code) == ["e"]
    assert undefined_names("square = lambda v: v * v + bias\n") == ["bias"]
    assert undefined_names("square = lambda v, bias=0: v * v + bias\n") == []


def test_comprehension_scopes():
    assert undefined_names("xs = [i * i for i in range(3)]\nprint(i)\n") == ["i"]  # no leak
    code = (
        "pairs = [(a, b) for a in range(3) for b in range(a)]\n"
        "d = {k: v for k, v in pairs if k > v}\n"
        "s = {c for c in 'abc'}\n"
        "g = sum(x for x in d)\n"
        "print(any((last := z) > 1 for z in d), last)\n"  # walrus binds outside the comprehension
    )
    assert undefined_names(code) == []
    # the first iterable is evaluated outside: `a` is not yet bound there
    assert undefined_names("r = [a for a in a]\n") == ["a"]
    # class variables are invisible from comprehensions and methods in the class body
    code = (
        "class A:\n    n = 2\n    sq = [n * i for i in range(3)]\n"
        "    def m(self):\n        return n\n    k = n + 1\n"
    )
    assert undefined_names(code) == ["n"]


def test_other_binders():
    code = (
        "import os.path\n"  # binds `os`
        "import xml.etree.ElementTree as ET\n"
        "with open(os.path.join('a', 'b')) as fh, open('c') as (g):\n    data = fh.read() + g.read()\n"
        "try:\n    pass\nexcept (ValueError, KeyError) as err:\n    print(err)\n"
        "for idx, (p, q) in enumerate([(1, 2)]):\n    print(idx, p, q)\n"
        "match [1, 2]:\n    case [first, *rest]:\n        print(first, rest)\n"
        "    case {'k': val, **others}:\n        print(val, others)\n"
        "print(__name__, ET, data)\n"
    )
    assert undefined_names(code) == []


def test_annotations():
    code = "def f(x: Later) -> Later:\n    return x\nclass Later:\n    pass\n"
    assert undefined_names(code) == ["Later"]  # evaluated at definition time
    assert undefined_names("from __future__ import annotations\n" + code) == []
    assert undefined_names("count: int\nprint(count)\n") == ["count"]  # a bare annotation binds nothing


def test_star_import_disables_reports():
    assert undefined_names("from math import *\nprint(gcd(4, 6))\n") == []


def test_hallucinated_module_attribute():
    r = static_check("import math\nprint(math.gcdx(4, 6))\n")
    assert (r.ok, r.reason) == (False, "unresolvable_attribute:math.gcdx")
    assert static_check("import math\nprint(math.gcd(4, 6))\n").ok
    # the alias as written; the chain is followed through submodules
    r = static_check("import numpy as np\nnp.linalg.normx([1.0])\n")
    assert r.reason == "unresolvable_attribute:np.linalg.normx"
    assert static_check("import numpy as np\nprint(np.linalg.norm([1.0]))\n").ok
    # `from module import name` of a name the module lacks fails at import time
    assert static_check("from math import gcdx\n").reason == "unresolvable_import:math.gcdx"
    assert static_check("from os import path\nfrom math import gcd\nprint(path.join('a'), gcd(1, 2))\n").ok
    # the chain is checked only while it walks through modules (documented choice)
    assert static_check("import numpy as np\nprint(np.ndarray.sizex)\n").ok
    # a program that sets the attribute itself, or rebinds the alias, is not flagged
    assert static_check("import math\nmath.tau2 = 2\nprint(math.tau2)\n").ok
    assert static_check("import math\nmath = {'x': 1}\nprint(math.keys())\n").ok


def test_unresolvable_import():
    assert static_check("import nonexistent_pkg_xyz\n").reason == "unresolvable_import:nonexistent_pkg_xyz"
    assert static_check("from nonexistent_pkg_xyz import thing\n").reason == "unresolvable_import:nonexistent_pkg_xyz"
    assert static_check("from . import sibling\n").reason == "unresolvable_import:.sibling"
    # guarded by `except ImportError`: the fallback is the program's own business
    code = "try:\n    import nonexistent_pkg_xyz as j\nexcept ImportError:\n    import json as j\nprint(j)\n"
    assert static_check(code).ok
    assert static_check(code.replace("ImportError", "KeyError")).reason == "unresolvable_import:nonexistent_pkg_xyz"


def test_submodules_resolve_without_importing_the_package():
    was_loaded = "torch" in sys.modules
    assert module_exists("torch.nn.functional")
    assert not module_exists("torch.nn.functionalx")
    assert ("torch" in sys.modules) == was_loaded  # found by path, torch was not imported by the check
    assert static_check("import torch.nn.functional as F\nx = F.relu\n").ok  # torch attributes: unchecked
    assert static_check("import os.path\nprint(os.path.sep)\n").ok


DB = [
    {"domain": "math", "api_name": "math.gcd", "api_call": "math.gcd(a, b)"},
    {"domain": "numpy", "api_name": "numpy.linspace", "api_call": "np.linspace(start, stop, num)"},
]


def test_api_database_check():
    assert static_check("import math\nprint(math.gcd(4, 6))\n", DB, hub="builtin").ok
    r = static_check("import math\nprint(math.lcm(4, 6))\n", DB, hub="builtin")
    assert (r.ok, r.reason) == (False, "unknown_api")
    # other problems come first; the API problem is still listed
    r = static_check("print(math.lcm(4, 6))\n", DB, hub="builtin")
    assert r.problems == ["undefined_name:math", "unknown_api"]
    hf_db = [{"domain": "d", "api_name": "roberta-base", "api_call": "pipeline('fill-mask', model='roberta-base')"}]
    program = "from transformers import pipeline\nunmasker = pipeline('fill-mask', model='roberta-base')\n"
    assert static_check(program, hf_db).ok
    assert static_check(program.replace("roberta-base", "roberta-huge"), hf_db).reason == "unknown_api"


def test_degenerate_nesting_does_not_crash():
    deep = "a = 1\nx = " + "+".join(["a"] * 1000) + "\n"  # compiles, too deep for the recursive walk
    assert static_check(deep).reason == "too_complex" and undefined_names(deep) == []
    deeper = "x = " + "+".join(["a"] * 5000) + "\n"  # CPython's parser gives up (RecursionError)
    assert static_check(deeper).reason == "syntax_error"


@pytest.mark.parametrize("code", ["", "# just a comment\n", "pass\n"])
def test_trivial_programs(code):
    assert static_check(code).ok
