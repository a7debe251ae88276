"""Static executability check: would this program get past its first NameError / ImportError?

For data like Gorilla's, whose programs download hub models and cannot run here, "executable" is
judged without running anything. `static_check` passes a program when, in this order:

1. it parses (Python's `ast`)                                      else "syntax_error"
2. every name is defined before use (`undefined_names`)            else "undefined_name:<name>"
3. every imported module is installed (`importlib` finders only)   else "unresolvable_import:<module>"
4. every attribute of an imported module it reads exists           else "unresolvable_attribute:<np.foo>"
5. with an API database: it calls a database API (as `ast_match`)  else "unknown_api"

A program nested too deeply for the recursive analysis (hundreds of levels, e.g. a degenerate
`a+a+a+...`) fails with "too_complex" instead of crashing the evaluation.

Scope rules of `undefined_names` (a small pyflakes-like analysis):
* Module and class bodies run top to bottom: a name must be bound *textually earlier* (assignment,
  import, def, class, for/with/except targets, walrus, match captures) in that scope or, from a
  class body, at module level. A binding inside an `if` or `try` counts from there on.
* Function and lambda bodies run later, when called: they are checked after the whole module, and a
  name counts as defined if bound *anywhere* in the function, in an enclosing function, or at
  module level (order inside a function is not checked). Class scopes are invisible from methods.
* Comprehensions have their own scope (targets); the first iterable is evaluated outside it.
* Builtins and module dunders (`__name__`, `__file__`, ...) are defined. Names declared `global`
  anywhere count as defined. After `from x import *` the scope reports nothing. Annotations are
  not checked under `from __future__ import annotations`. `del` does not unbind.

Import resolution never runs the program and never imports an unknown package: a top-level module
is looked up with `importlib.util.find_spec`, a submodule by walking its parent package's
`submodule_search_locations` with `PathFinder` (finding files, not executing `__init__`). Imports
inside `try:` with an `except ImportError` (or broader) handler are not checked. Relative imports
fail: a generated program is a single script.

Attributes (`np.foo`, `from math import gcdx`) are checked only for modules in `SAFE_MODULES`: the
standard-library modules and numpy chosen here, which are imported *into this process* (harmless:
we choose them, the untrusted program is never executed). Other packages (torch, transformers)
are not imported, so their attributes pass unchecked. The check follows the chain while the value
is a module: `np.linalg.foo` is checked, `np.ndarray.foo` only up to `ndarray`.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

SAFE_MODULES = frozenset({
    "abc", "argparse", "array", "base64", "bisect", "calendar", "cmath", "collections", "colorsys",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "fractions",
    "functools", "glob", "hashlib", "heapq", "html", "io", "itertools", "json", "keyword", "logging",
    "math", "numbers", "numpy", "operator", "os", "pathlib", "pprint", "queue", "random", "re",
    "statistics", "string", "struct", "sys", "textwrap", "time", "types", "typing", "unicodedata",
    "uuid", "zlib",
})
_BUILTINS = frozenset(dir(builtins))
_MODULE_DUNDERS = frozenset({
    "__name__", "__file__", "__doc__", "__builtins__", "__spec__", "__loader__", "__package__",
    "__annotations__", "__dict__", "__path__", "__cached__",
})
_CLASS_DUNDERS = frozenset({"__module__", "__qualname__"})
_CATCHES_IMPORT_ERROR = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})


@dataclass
class StaticResult:
    """The verdict: `ok`, the first problem as `reason` ("" when ok), and every problem found."""

    ok: bool
    reason: str = ""
    problems: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Scope analysis


@dataclass
class _Scope:
    kind: str  # "module" | "class" | "function" | "comprehension"
    parent: _Scope | None
    bound: set[str] = field(default_factory=set)
    modules: dict[str, str | None] = field(default_factory=dict)  # name -> module it was imported as
    star: bool = False  # `from x import *` seen: names cannot be known


@dataclass
class _Import:
    module: str  # absolute dotted name ("" with level > 0)
    name: str | None  # for `from module import name`
    level: int  # relative import dots
    guarded: bool  # inside `try: ... except ImportError`


@dataclass
class _AttributeUse:
    dotted: list[str]  # as written: ["np", "random", "foo"]
    module: str  # the module the first name is bound to


def _function_bindings(body: list[ast.AST]) -> set[str]:
    """Every name a function body binds, anywhere in it (not inside nested functions or classes,
    whose own names do count; inside comprehensions only walrus targets count)."""
    out: set[str] = set()

    def walk(node: ast.AST, in_comprehension: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
            return
        if isinstance(node, ast.Lambda):
            return
        if isinstance(node, ast.NamedExpr):
            out.add(node.target.id)
        elif not in_comprehension:
            if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                out.add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                out.update((a.asname or a.name.split(".")[0]) for a in node.names if a.name != "*")
            elif isinstance(node, (ast.Global, ast.Nonlocal)):
                out.update(node.names)
            elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
                out.add(node.name)
            elif isinstance(node, ast.MatchMapping) and node.rest:
                out.add(node.rest)
        inner = in_comprehension or isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp))
        for child in ast.iter_child_nodes(node):
            walk(child, inner)

    for stmt in body:
        walk(stmt, False)
    return out


class _Analyzer(ast.NodeVisitor):
    """One pass over a module: undefined names, imports, and module-attribute uses."""

    def __init__(self, tree: ast.Module):
        self.module = _Scope("module", None, set(_MODULE_DUNDERS))
        self.scope = self.module
        self.declared_global = {n for node in ast.walk(tree) if isinstance(node, ast.Global) for n in node.names}
        self.lazy_annotations = any(  # `from __future__ import annotations`: annotations never run
            isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
            for n in tree.body
        )
        self.undefined: list[str] = []  # unique, first use first
        self.missing_imports: list[str] = []  # undefined names used as `name.attr`
        self.imports: list[_Import] = []
        self.attributes: list[_AttributeUse] = []
        self.attribute_stores: set[tuple[str, ...]] = set()
        self._deferred: list[tuple[ast.AST, _Scope]] = []
        self._import_guard = 0
        self.visit(tree)
        while self._deferred:  # function bodies, once everything around them is bound
            node, parent = self._deferred.pop(0)
            self._visit_function_body(node, parent)

    # -- names ---------------------------------------------------------------------------------

    def _bind(self, name: str, module: str | None = None, scope: _Scope | None = None) -> None:
        scope = scope or self.scope
        scope.bound.add(name)
        scope.modules[name] = module

    def _resolve(self, name: str) -> _Scope | None:
        """The scope whose binding `name` refers to; self.module when it cannot be known; None if unbound."""
        scope = self.scope
        first = True
        while scope is not None:
            if first or scope.kind != "class":  # class bodies are invisible from nested scopes
                if name in scope.bound:
                    return scope
                if scope.star:
                    return self.module
            first = False
            scope = scope.parent
        if name in _BUILTINS or name in self.declared_global:
            return self.module
        return None

    def _use(self, name: str) -> _Scope | None:
        scope = self._resolve(name)
        if scope is None and name not in self.undefined:
            self.undefined.append(name)
        return scope

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self._bind(node.id)
        else:  # Load, Del
            self._use(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted, base = [node.attr], node.value
        while isinstance(base, ast.Attribute):
            dotted.insert(0, base.attr)
            base = base.value
        if not isinstance(base, ast.Name):
            self.generic_visit(node)
            return
        dotted.insert(0, base.id)
        scope = self._use(base.id)
        if scope is None:
            if base.id not in self.missing_imports:
                self.missing_imports.append(base.id)
        elif not isinstance(node.ctx, ast.Load):
            self.attribute_stores.add(tuple(dotted))
        elif scope.modules.get(base.id):
            self.attributes.append(_AttributeUse(dotted, scope.modules[base.id]))

    # -- statements whose parts run out of field order ------------------------------------------

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self._use(node.target.id)  # `x += 1` reads x first
        else:
            self.visit(node.target)

    def _annotation(self, node: ast.AST | None) -> None:
        if node is not None and not self.lazy_annotations:
            self.visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._annotation(node.annotation)
        if node.value is not None:
            self.visit(node.value)
            self.visit(node.target)
        elif not isinstance(node.target, ast.Name):  # `x: int` alone binds nothing
            self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        scope = self.scope
        while scope.kind == "comprehension":  # the walrus binds outside the comprehension
            scope = scope.parent
        self._bind(node.target.id, scope=scope)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for stmt in node.body + node.orelse:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self._bind(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_Try(self, node: ast.Try) -> None:
        guarded = any(
            h.type is None or any(isinstance(n, ast.Name) and n.id in _CATCHES_IMPORT_ERROR for n in ast.walk(h.type))
            for h in node.handlers
        )
        self._import_guard += guarded
        for stmt in node.body:
            self.visit(stmt)
        self._import_guard -= guarded
        for part in node.handlers + node.orelse + node.finalbody:
            self.visit(part)

    visit_TryStar = visit_Try

    def visit_Global(self, node: ast.Global) -> None:
        pass

    visit_Nonlocal = visit_Global

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self._bind(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self._bind(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.generic_visit(node)
        if node.rest:
            self._bind(node.rest)

    # -- imports --------------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.imports.append(_Import(alias.name, None, 0, self._import_guard > 0))
            if alias.asname:
                self._bind(alias.asname, alias.name)  # `import a.b as c` binds c to a.b
            else:
                top = alias.name.split(".")[0]
                self._bind(top, top)  # `import a.b` binds a

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for alias in node.names:
            self.imports.append(_Import(module, alias.name, node.level, self._import_guard > 0))
            if alias.name == "*":
                self.scope.star = True
                continue
            # the name may be a submodule (`from os import path`); checked lazily if it is one
            self._bind(alias.asname or alias.name, f"{module}.{alias.name}" if node.level == 0 else None)

    # -- new scopes -----------------------------------------------------------------------------

    def _visit_arguments_outside(self, args: ast.arguments) -> None:
        """Defaults and annotations are evaluated where the function is defined."""
        for default in args.defaults + [d for d in args.kw_defaults if d is not None]:
            self.visit(default)
        for arg in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
            if arg is not None:
                self._annotation(arg.annotation)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        self._visit_arguments_outside(node.args)
        self._annotation(node.returns)
        self._bind(node.name)
        self._deferred.append((node, self.scope))

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._visit_arguments_outside(node.args)
        self._deferred.append((node, self.scope))

    def _visit_function_body(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda, parent: _Scope) -> None:
        a = node.args
        params = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x is not None}
        params |= {p.name for p in getattr(node, "type_params", [])}
        body = node.body if isinstance(node.body, list) else [node.body]
        outer, self.scope = self.scope, _Scope("function", parent, params | _function_bindings(body))
        for stmt in body:
            self.visit(stmt)
        self.scope = outer

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(expr)
        outer, self.scope = self.scope, _Scope("class", self.scope, set(_CLASS_DUNDERS))
        for stmt in node.body:
            self.visit(stmt)
        self.scope = outer
        self._bind(node.name)

    def _visit_comprehension(self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp) -> None:
        self.visit(node.generators[0].iter)  # evaluated in the enclosing scope
        outer, self.scope = self.scope, _Scope("comprehension", self.scope)
        for i, gen in enumerate(node.generators):
            if i > 0:
                self.visit(gen.iter)
            self.visit(gen.target)
            for cond in gen.ifs:
                self.visit(cond)
        if isinstance(node, ast.DictComp):
            self.visit(node.key)
            self.visit(node.value)
        else:
            self.visit(node.elt)
        self.scope = outer

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _visit_comprehension


def _analyze(code: str) -> _Analyzer | str:
    """The analysis, or why there is none: "syntax_error", or "too_complex" for expressions nested
    so deeply (hundreds of levels, e.g. a degenerate `a+a+a+...`) that the recursive walk gives up."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: NUL bytes
        return "syntax_error"  # CPython cannot compile it either
    try:
        return _Analyzer(tree)
    except RecursionError:
        return "too_complex"


def undefined_names(code: str) -> list[str]:
    """Names the program reads before (or without) binding them, unique, in the order the analysis
    meets them (module level first, function bodies after). Includes names used as `name.attr`
    without an import (those are also in `missing_imports`). [] when the program does not parse
    (check syntax separately) or is too deeply nested to analyse.
    """
    analysis = _analyze(code)
    return list(analysis.undefined) if isinstance(analysis, _Analyzer) else []


def missing_imports(code: str) -> list[str]:
    """Undefined names used as the base of an attribute (`np.array`, `json.dumps`): a module (or
    class) the program forgot to import. Unique, in order met; [] when there is no analysis."""
    analysis = _analyze(code)
    return list(analysis.missing_imports) if isinstance(analysis, _Analyzer) else []


# ----------------------------------------------------------------------------------------------
# Resolving imports and attributes


@lru_cache(maxsize=4096)
def module_exists(name: str) -> bool:
    """Whether `import name` finds an installed module, found without executing any package code."""
    if name in sys.modules:
        return True
    top, *rest = name.split(".")
    if top in SAFE_MODULES:
        return _safe_import(name) is not None
    try:
        spec = importlib.util.find_spec(top)
        for i in range(len(rest)):
            if spec is None or spec.submodule_search_locations is None:
                return False
            spec = importlib.machinery.PathFinder.find_spec(
                ".".join([top, *rest[: i + 1]]), list(spec.submodule_search_locations)
            )
    except (ImportError, ValueError):
        return False
    return spec is not None


@lru_cache(maxsize=1024)
def _safe_import(name: str) -> types.ModuleType | None:
    """Import a module of SAFE_MODULES (only those) in this process; None if that fails."""
    if name.split(".")[0] not in SAFE_MODULES:
        return None
    try:
        return importlib.import_module(name)
    except Exception:
        return None


def _import_problem(imp: _Import) -> str | None:
    if imp.level > 0:
        return "unresolvable_import:" + "." * imp.level + (imp.module or imp.name or "")
    if not module_exists(imp.module):
        return f"unresolvable_import:{imp.module}"
    if imp.name and imp.name != "*":
        module = _safe_import(imp.module)
        if module is not None and not hasattr(module, imp.name) and not module_exists(f"{imp.module}.{imp.name}"):
            return f"unresolvable_import:{imp.module}.{imp.name}"
    return None


def _attribute_problem(use: _AttributeUse) -> str | None:
    obj = _safe_import(use.module)
    if obj is None:
        return None
    for i, attr in enumerate(use.dotted[1:], start=2):
        if not isinstance(obj, types.ModuleType):
            return None
        if not hasattr(obj, attr):
            return "unresolvable_attribute:" + ".".join(use.dotted[:i])
        obj = getattr(obj, attr)
    return None


# ----------------------------------------------------------------------------------------------
# The check


def static_check(
    code: str, api_database: Sequence[dict] | None = None, hub: str = "huggingface"
) -> StaticResult:
    """Statically judge whether `code` would run (the 5 checks of the module docstring).

    `reason` is the first problem in check order; `problems` lists all (API check last). The API
    lookup is `ast_match`'s matching on the whole program, without Gorilla's loop-variable quirk.
    """
    analysis = _analyze(code)
    if isinstance(analysis, str):
        return StaticResult(False, analysis, [analysis])
    problems = [f"undefined_name:{n}" for n in analysis.undefined]
    for imp in analysis.imports:
        problem = None if imp.guarded else _import_problem(imp)
        if problem and problem not in problems:
            problems.append(problem)
    for use in analysis.attributes:
        if any(tuple(use.dotted[:k]) in analysis.attribute_stores for k in range(2, len(use.dotted) + 1)):
            continue  # the program sets that attribute itself
        problem = _attribute_problem(use)
        if problem and problem not in problems:
            problems.append(problem)
    if api_database is not None:
        from minirlaif.metrics.ast_match import api_index

        if api_index(api_database, hub).match(code, loop_quirk=False) < 0:
            problems.append("unknown_api")
    return StaticResult(not problems, problems[0] if problems else "", problems)
