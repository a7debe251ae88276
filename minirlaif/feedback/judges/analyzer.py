"""The offline judge: answers the 8 questions by PROGRAM ANALYSIS, not with an LLM.

It exists so that the whole pipeline (feedback -> pairs -> reward model -> PPO) runs with no network
and no large model. Its answers are facts it can check, mapped onto the same questions:

    syntax         the program compiles (Python's own parser)
    imports        no module-like name is used without an import (metrics.static_check.missing_imports)
    undefined      some name is used that nothing defines (metrics.static_check.undefined_names),
                   forgotten imports left out: the imports question already counts those
    api_exists     the program calls an API of the database (metrics.ast_match: not a hallucination)
    api_fits       the matched API is the gold one; on Gorilla's hubs, also one of the gold API's domain
    api_args       the call passes the gold call's argument values (ast_match.args_match)
    complete       it parses, calls a database API, and runs to the end in the sandbox
    no_logic_bugs  it runs to the end and prints something (1.0); runs but prints nothing (0.5)

A program Python cannot parse gets no credit on the questions that need its parse tree (imports,
undefined). P(yes) is 1.0 / 0.0 (0.5 where noted). With `execute=False` nothing is run: `complete`
becomes metrics.static_check's verdict and `no_logic_bugs` that verdict and the arguments check.
Execution is only meaningful for programs that can run offline (the "builtin" hub); a HuggingFace
program that downloads a model fails in the sandbox, which has no network. So by default
(`execute=None`) programs are run for the builtin hub only, and checked statically otherwise.

Each program is analysed (and run) ONCE; the 8 questions about it reuse that analysis. `prepare`
(called by `label` with the programs it is about to ask about) runs them all in parallel first.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

from minirlaif.feedback.judges.base import Item, Judge, JudgeError, Query, RawAnswer
from minirlaif.metrics.ast_match import ASTMatch, as_gorilla_response, ast_match
from minirlaif.metrics.static_check import StaticResult, missing_imports, static_check, undefined_names
from minirlaif.sandbox import run_program, run_programs

# Bumped when an answer rule changes, so that answers cached under older rules are asked again. 2: the arguments
# check compares values (a name stands for the literal it was bound to), not names (2026-11-30). 3: on the
# builtin hub only the gold API fits the task, not any API of its domain (2026-11-30).
RULES = 3
# Hubs whose domain names a task that any API of it does (Gorilla's "Image Classification": any classifier
# suits "classify this photo"). A builtin domain groups functions that compute different things
# ("Number theory": gcd and lcm), so there only the gold API suits the task.
TASK_DOMAIN_HUBS = ("huggingface", "torchhub", "tensorflowhub")


@dataclass
class Run:
    """What running a program in the sandbox showed."""

    ok: bool
    status: str  # the sandbox's status: "ok", "runtime_error", "timeout", ...
    printed: bool  # it wrote something to stdout


@dataclass
class Analysis:
    """Everything the analyzer learns about one program, shared by its 8 questions."""

    syntax_error: str  # "" when the program compiles
    missing_imports: list[str]
    undefined: list[str]  # undefined names other than the missing imports (those have their question)
    match: ASTMatch
    run: Run | None  # None with execute=False
    static: StaticResult | None  # static_check's verdict, with execute=False only

    @property
    def parses(self) -> bool:
        return not self.syntax_error


def _yes(condition: bool, reason: str) -> tuple[float, str]:
    return (1.0 if condition else 0.0), reason


def _sha(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _compiles(code: str) -> str:
    """"" when `code` compiles, else the error."""
    try:
        with warnings.catch_warnings():  # SyntaxWarnings about model-written code are not ours to print
            warnings.simplefilter("ignore")
            compile(code, "<program>", "exec")
        return ""
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:  # ValueError: NUL bytes
        return f"{type(e).__name__}: {e}"


class AnalyzerJudge(Judge):
    """Program analysis standing in for the LLM judge (see the module docstring). Not an LLM."""

    def __init__(
        self,
        api_database: Sequence[dict],
        hub: str = "builtin",
        *,
        execute: bool | None = None,
        timeout_s: float = 10.0,
        memory_mb: int = 1024,
        sandbox_workers: int | None = None,
        max_workers: int = 2,
        memo_size: int = 4096,
    ):
        """api_database: the API documentation records (Gorilla's 10 keys); hub: as for ast_match.
        execute: run programs in the sandbox (timeout_s, memory_mb per program; `prepare` runs them
        with sandbox_workers processes, None = one per core). None: only for the "builtin" hub, whose
        programs can run offline (hub programs download models; they would all fail)."""
        self.api_database = api_database
        self.hub = hub
        self.execute = (hub == "builtin") if execute is None else execute
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.sandbox_workers = sandbox_workers
        self.max_workers = max_workers
        # The rules, the database and the mode change the answers, so they are part of the name (the cache key).
        mode = "exec" if self.execute else "static"
        self.name = f"analyzer:{hub}:{mode}:rules{RULES}:{_sha(list(api_database))[:12]}"
        self._runs: dict[str, Run] = {}  # program hash -> its run, from `prepare` or the first question
        self._memo: OrderedDict[str, Analysis] = OrderedDict()  # item hash -> analysis (bounded)
        self._memo_size = memo_size
        self._lock = threading.Lock()
        self._item_locks: dict[str, threading.Lock] = {}

    # -- running programs ------------------------------------------------------------------------

    @staticmethod
    def _summary(result) -> Run:
        return Run(ok=bool(result.ok), status=result.status, printed=bool(result.stdout.strip()))

    def prepare(self, programs: list[str]) -> None:
        """Run every compiling, not-yet-run program in parallel now (the questions then reuse the runs)."""
        if not self.execute:
            return
        with self._lock:
            todo = list(dict.fromkeys(p for p in programs if _sha(p) not in self._runs and not _compiles(p)))
        if not todo:
            return
        results = run_programs(todo, workers=self.sandbox_workers, timeout_s=self.timeout_s, memory_mb=self.memory_mb)
        with self._lock:
            for program, result in zip(todo, results):
                self._runs[_sha(program)] = self._summary(result)

    def _run(self, code: str) -> Run:
        with self._lock:
            run = self._runs.get(_sha(code))
        if run is None:
            run = self._summary(run_program(code, timeout_s=self.timeout_s, memory_mb=self.memory_mb))
            with self._lock:
                self._runs[_sha(code)] = run
        return run

    # -- analysis, once per program --------------------------------------------------------------

    def _ast_match(self, item: Item) -> ASTMatch:
        return ast_match(as_gorilla_response(item.program, self.hub), item.record, self.api_database, self.hub)

    def _analyze_now(self, item: Item) -> Analysis:
        code = item.program
        syntax_error = _compiles(code)
        parses = not syntax_error
        missing = missing_imports(code) if parses else []
        analysis = Analysis(
            syntax_error=syntax_error,
            missing_imports=missing,
            undefined=[n for n in undefined_names(code) if n not in missing] if parses else [],
            match=self._ast_match(item),
            run=None,
            static=None,
        )
        if not self.execute:
            analysis.static = static_check(code, api_database=self.api_database, hub=self.hub)
        elif parses:  # no point starting a process for a program that cannot compile
            analysis.run = self._run(code)
        else:
            analysis.run = Run(ok=False, status="syntax_error", printed=False)
        return analysis

    def analyze(self, item: Item) -> Analysis:
        """The program's analysis, computed on the first question about it and reused afterwards."""
        if item.record is None:
            raise JudgeError("the analyzer judge needs each item's APIRecord (item.record) to find the gold API")
        key = _sha(item.program, item.api_data, item.record)
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
            item_lock = self._item_locks.setdefault(key, threading.Lock())
        with item_lock:  # two threads asking about the same program: the second waits for the first
            with self._lock:
                if key in self._memo:
                    return self._memo[key]
            analysis = self._analyze_now(item)
            with self._lock:
                self._memo[key] = analysis
                while len(self._memo) > self._memo_size:
                    self._memo.popitem(last=False)
                self._item_locks.pop(key, None)
        return analysis

    # -- the interface ---------------------------------------------------------------------------

    def ask(self, query: Query) -> RawAnswer:
        a = self.analyze(query.item)
        m = a.match
        api = (m.matched or {}).get("api_name", "")
        qid = query.question.id
        if qid == "syntax":
            p, why = _yes(a.parses, a.syntax_error or "compiles")
        elif qid == "imports":
            p, why = _yes(a.parses and not a.missing_imports,
                          "does not parse" if not a.parses else f"missing imports: {a.missing_imports}")
        elif qid == "undefined":  # polarity -1: "Yes" (undefined names present) is bad
            p, why = _yes(not a.parses or bool(a.undefined),
                          "does not parse" if not a.parses else f"undefined names: {a.undefined}")
        elif qid == "api_exists":
            p, why = _yes(m.matched is not None, f"matched {api!r}" if m.matched else "no database API is called")
        elif qid == "api_fits":
            same_task = m.correct and self.hub in TASK_DOMAIN_HUBS
            p, why = _yes(m.matched is not None and (m.exact_api or same_task),
                          f"matched {api!r} (exact={m.exact_api}, same domain={m.correct}, hub {self.hub})")
        elif qid == "api_args":
            p, why = _yes(m.args_match, f"the gold call's argument values passed: {m.args_match}")
        elif qid == "complete":
            if a.run is not None:
                p, why = _yes(a.parses and m.matched is not None and a.run.ok,
                              f"calls a database API: {m.matched is not None}; run: {a.run.status}")
            else:
                p, why = _yes(a.static.ok, f"static check: {a.static.reason or 'ok'}")
        elif qid == "no_logic_bugs":
            if a.run is not None:
                p = 0.0 if not a.run.ok else 1.0 if a.run.printed else 0.5
                why = f"run: {a.run.status}; printed: {a.run.printed}"
            else:
                p, why = _yes(a.static.ok and m.args_match,
                              f"static check: {a.static.reason or 'ok'}; gold arguments: {m.args_match}")
        else:
            raise JudgeError(f"the analyzer has no rule for question {qid!r}")
        return RawAnswer("Yes" if p > 0.5 else "No", p, "analysis", 0, {"reason": why})
