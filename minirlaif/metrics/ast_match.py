"""AST accuracy as Gorilla scores it (shared/docs/gorilla-format.md, section 3), plus two stricter checks.

Gorilla's rule, step by step (hubs "huggingface", "torchhub", "tensorflowhub"):

1. Extract a candidate from the response text (`extract_candidate`): the piece after the first
   `api_call` (up to a second `api_call`), cut at the next `api_provider`; it starts two characters
   after the first `:` and ends at the last `)`. Without `api_call` the whole text is the candidate
   (TorchHub: no candidate at all, the answer is an error, as in Gorilla's current TH script).
2. Parse the candidate with tree-sitter and list every node that has children, in stack order (pop
   the last pushed; push children left to right), each with the text of its first child (for a
   `call` node that is the callee, e.g. `AutoModel.from_pretrained`).
3. Scan the API database in file order. For an entry with callee C and argument strings A (which
   arguments depends on the hub, see `_db_arguments`), take the first listed node whose first-child
   text is exactly C; the entry matches if every string of A, with leading and trailing `'` removed,
   is a plain substring of that node's text. The first matching entry wins.
   Quirk (`loop_quirk=True`, Gorilla's behaviour): when no node has first-child text C, Gorilla's
   loop variable is left at the *last* listed node and the substring test runs against it.
4. No match: hallucination. A match whose `domain` equals the gold record's `api_data["domain"]`:
   correct (a domain check, not an identity check). Anything else: error.

The "builtin" hub (our embedded standard-library / numpy data set, DB `api_call`s are signatures
such as `math.gcd(a, b)`) matches on the callee only: the first DB entry, in file order, whose
callee text equals the callee of some `call` node of the response. No argument check, no quirk.

Beyond Gorilla, on a match:
* `exact_api`: the matched entry IS the gold API. Gorilla hubs: the matched entry has the gold
  `api_call` string, or it is the gold's own DB record: the entry equal to `api_data` in every
  field, or, when none is, in every field but `api_call` (77 HuggingFace gold calls add arguments
  such as `torch_dtype=torch.float16` to the call of their DB record). builtin: same `api_name`.
* `args_match`: `exact_api`, and some call in the candidate with the gold callee passes every
  argument value of the gold call (the record's `api_call`). Values are compared after
  normalisation (`_arg_value`): a string literal becomes its content (quote style and prefix
  ignored), anything else its text without whitespace. A bare name stands for the literal that the
  last top-level `name = literal` assignment before the call bound to it (`_bindings`): in the
  candidate, its own assignments; in the gold call, those of the record's `code`. So `year = 2015`
  then `f(year)` passes 2015, not "year" (the built-in benchmark's gold calls are all such names).
  Keyword names, positional-vs-keyword style and order are ignored (`torch.hub.load('repo', 'm')` passes `torch.hub.load(repo_or_dir='repo',
  model='m')`); extra arguments in the response are allowed; values must be equal, not substrings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import tree_sitter

from minirlaif.metrics.treesitter import parse_python

HUBS = ("huggingface", "torchhub", "tensorflowhub", "builtin")
_PUNCTUATION = (b"(", b")", b",")


@dataclass
class ASTMatch:
    """The verdict on one response. Exactly one of correct / hallucination / error is True."""

    correct: bool
    hallucination: bool
    error: bool
    exact_api: bool = False
    args_match: bool = False
    matched: dict | None = None  # the matched API database entry
    matched_index: int | None = None  # its 0-based position in the database
    candidate: str | None = None  # the extracted snippet that was parsed (None: nothing extracted)


# ----------------------------------------------------------------------------------------------
# The database side: parse every entry once.


@dataclass(frozen=True)
class _IndexedAPI:
    index: int  # position in the database (file order decides ties)
    callee: bytes  # text of the call's callee, e.g. b"AutoModel.from_pretrained"
    args: tuple[bytes, ...]  # argument strings to find, `'` already stripped (Gorilla hubs)


def _db_arguments(call: tree_sitter.Node, hub: str) -> list[bytes]:
    """The argument strings Gorilla checks for one DB call, per hub (doc section 3.4).

    An argument is "keyword" when `=` occurs anywhere in its text; its value is then its third child
    (for a real `name=value` that is the value; Gorilla takes the third child blindly).
    * huggingface: every argument: the value of keyword ones, the whole text of positional ones.
    * torchhub: only arguments whose text contains `repo_or_dir` or `model`, their values.
    * tensorflowhub: the value of a `model=`/`model =` argument, the whole text of all others.
    """

    def value(arg: tree_sitter.Node) -> bytes | None:
        return arg.children[2].text if arg.child_count > 2 else None

    out: list[bytes | None] = []
    for arg in call.children[1].children:
        text = arg.text
        if hub == "huggingface":
            if b"=" in text:
                out.append(value(arg))
            elif text not in _PUNCTUATION:
                out.append(text)
        elif hub == "torchhub":
            if b"repo_or_dir" in text or b"model" in text:
                out.append(value(arg))
        else:  # tensorflowhub
            if b"model=" in text or b"model =" in text:
                out.append(value(arg))
            elif text not in _PUNCTUATION:
                out.append(text)
    return [a for a in out if a is not None]


def _gorilla_call_node(api_call: str) -> tree_sitter.Node | None:
    """module -> first statement -> its first child, the shape Gorilla assumes; None if it has no
    callee and argument list (Gorilla skips such entries)."""
    root = parse_python(api_call).root_node
    if root.child_count == 0 or root.children[0].child_count == 0:
        return None
    call = root.children[0].children[0]
    return call if call.child_count >= 2 else None


def _first_call(root: tree_sitter.Node) -> tree_sitter.Node | None:
    """The first `call` node in pre-order (left to right), or None."""
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "call":
            return node
        stack.extend(reversed(node.children))
    return None


def _record_key(entry: dict, with_call: bool) -> str:
    """An entry's fields (all, or all but `api_call`) as one comparable string."""
    fields = {k: v for k, v in entry.items() if with_call or k != "api_call"}
    return json.dumps(fields, sort_keys=True, default=str)


class APIIndex:
    """An API database parsed once: each entry's callee and argument strings, ready for matching.

    Entries that cannot match (not call-shaped, or with no arguments on a Gorilla hub, e.g.
    `SentimentModel()`) are left out of the scan, as in Gorilla.
    """

    def __init__(self, api_database: Sequence[dict], hub: str = "huggingface"):
        if hub not in HUBS:
            raise ValueError(f"unknown hub {hub!r}; expected one of {HUBS}")
        self.entries = api_database
        self.hub = hub
        self.apis: list[_IndexedAPI] = []
        # for the exact_api check: entry positions by whole record / by record without api_call
        self.by_record: dict[str, list[int]] = {}
        self.by_doc: dict[str, list[int]] = {}
        for i, entry in enumerate(api_database):
            self.by_record.setdefault(_record_key(entry, with_call=True), []).append(i)
            self.by_doc.setdefault(_record_key(entry, with_call=False), []).append(i)
        for i, entry in enumerate(api_database):
            api_call = str(entry.get("api_call") or "")
            if hub == "builtin":
                call = _first_call(parse_python(api_call).root_node)
                if call is not None:
                    self.apis.append(_IndexedAPI(i, call.children[0].text, ()))
                continue
            call = _gorilla_call_node(api_call)
            if call is None:
                continue
            args = tuple(a.strip(b"'") for a in _db_arguments(call, hub))
            if args:
                self.apis.append(_IndexedAPI(i, call.children[0].text, args))
        # builtin: the first entry (file order) for each callee
        self._first_by_callee: dict[bytes, int] = {}
        for api in self.apis:
            self._first_by_callee.setdefault(api.callee, api.index)

    def __len__(self) -> int:
        return len(self.entries)

    def match(self, candidate: str, loop_quirk: bool = True) -> int:
        """Index of the first DB entry that `candidate` matches (the rules in the module docstring),
        or -1 for none (a hallucination)."""
        source = candidate.encode("utf-8")
        root = parse_python(source).root_node
        if self.hub == "builtin":
            hits = [self._first_by_callee[c] for c in call_callees(root) if c in self._first_by_callee]
            return min(hits, default=-1)

        # Every node with children in Gorilla's stack order, with its first child's text.
        first_node: dict[bytes, tree_sitter.Node] = {}
        last: tree_sitter.Node = root
        stack = [root]
        while stack:
            node = stack.pop()
            last = node
            if node.child_count:
                first_node.setdefault(node.children[0].text, node)  # keep the first in stack order
            stack.extend(child for child in node.children if child.child_count)

        texts: dict[tuple[int, int], bytes] = {}  # node text by byte span, sliced once
        for api in self.apis:
            node = first_node.get(api.callee)
            if node is None:
                if not loop_quirk:
                    continue
                node = last  # Gorilla's loop variable, left at the last visited sub-tree
            span = (node.start_byte, node.end_byte)
            text = texts.get(span)
            if text is None:
                text = texts[span] = source[node.start_byte : node.end_byte]
            if all(arg in text for arg in api.args):
                return api.index
        return -1


_INDEX_CACHE: dict[tuple[int, str], APIIndex] = {}


def api_index(api_database: Sequence[dict] | APIIndex, hub: str = "huggingface") -> APIIndex:
    """The APIIndex of a database, built once per (database object, hub) and cached.

    The cache keys on the list's identity: build a new list (or call `APIIndex` yourself) after
    changing a database in place.
    """
    if isinstance(api_database, APIIndex):
        if api_database.hub != hub:
            raise ValueError(f"APIIndex was built for hub {api_database.hub!r}, not {hub!r}")
        return api_database
    key = (id(api_database), hub)
    index = _INDEX_CACHE.get(key)
    if index is None or index.entries is not api_database or len(index) != len(api_database):
        if len(_INDEX_CACHE) >= 8:
            _INDEX_CACHE.clear()
        index = _INDEX_CACHE[key] = APIIndex(api_database, hub)
    return index


# ----------------------------------------------------------------------------------------------
# The response side.


def extract_candidate(text: str, hub: str = "huggingface") -> str | None:
    """The snippet Gorilla parses from a raw response (doc section 3.2); None when there is none.

    After the first `api_call`, up to a second one, cut at `api_provider`; start 2 characters after
    the first `:` (at offset 2 when there is no `:`); end at the last `)` inclusive (without a `)`,
    drop the last character). Without `api_call`: the whole text, or None for torchhub.
    """
    pieces = text.split("api_call")
    if len(pieces) == 1:
        return None if hub == "torchhub" else text
    piece = pieces[1].split("api_provider")[0]
    start = piece.index(":") if ":" in piece else 0
    end = piece.rindex(")") if ")" in piece else -2
    return piece[start + 2 : end + 1]


def as_gorilla_response(program: str, hub: str) -> str:
    """What Gorilla's rule reads for one of OUR models' outputs. TorchHub's rule looks only after an
    `api_call` marker, which a bare program (a model trained without --with-api-call) lacks; such a
    program is wrapped as `<<<api_call>>>: program <<<api_provider>>>`, so its calls are read as an
    answer that said them. Other hubs, and text that has the marker, are read as they are. Gorilla's
    own response files are scored as written (their answers without a marker stay errors)."""
    if hub == "torchhub" and "api_call" not in program:
        return f"<<<api_call>>>: {program}\n<<<api_provider>>>"
    return program


def call_callees(root: tree_sitter.Node) -> list[bytes]:
    """The callee text of every `call` node under root, in pre-order."""
    out, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.type == "call":
            out.append(node.children[0].text)
        stack.extend(reversed(node.children))
    return out


def _arg_value(node: tree_sitter.Node) -> str:
    """Normalised value of one argument: a string literal's content, else its text sans whitespace."""
    if node.type == "keyword_argument":
        node = node.child_by_field_name("value") or node
    text = node.text.decode("utf-8", errors="replace")
    if node.type == "string":
        body = text.lstrip("rRbBuUfF")
        for quote in ('"""', "'''", '"', "'"):
            if len(body) >= 2 * len(quote) and body.startswith(quote) and body.endswith(quote):
                return body[len(quote) : -len(quote)]
    return "".join(text.split())


NOT_LITERAL = {"identifier", "call", "attribute", "subscript", "lambda", "interpolation", "await", "yield"}


def _is_literal(node: tree_sitter.Node) -> bool:
    """A constant expression: nothing under it reads a name or calls anything (numbers, strings, lists of them)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type in NOT_LITERAL or n.has_error:
            return False
        stack.extend(n.children)
    return True


def _bindings(root: tree_sitter.Node, before: float = float("inf")) -> dict[bytes, str | None]:
    """name -> normalised value bound by the last top-level `name = ...` assignment that starts before byte
    `before`; None when that right side is not a literal (the name's value is then unknown)."""
    bound: dict[bytes, str | None] = {}
    for statement in root.named_children:
        if statement.start_byte >= before:
            break
        node = statement.named_children[0] if statement.type == "expression_statement" and statement.named_children else None
        if node is None or node.type != "assignment":
            continue
        left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
        if left is not None and right is not None and left.type == "identifier":
            bound[left.text] = _arg_value(right) if _is_literal(right) else None
    return bound


def _resolved_value(node: tree_sitter.Node, bound: dict[bytes, str | None]) -> str:
    """_arg_value of an argument, a bare name replaced by the literal `bound` gives it (see _bindings)."""
    value = node.child_by_field_name("value") if node.type == "keyword_argument" else node
    if value is not None and value.type == "identifier" and bound.get(value.text) is not None:
        return bound[value.text]
    return _arg_value(node)


def _arg_values(call: tree_sitter.Node, bound: dict[bytes, str | None] | None = None) -> list[str]:
    """The normalised argument values of a call; bare names resolved through `bound` (see _bindings)."""
    bound = bound or {}
    args = call.child_by_field_name("arguments")
    if args is None:
        return []
    if args.type != "argument_list":  # f(x for x in y): the generator is the one argument
        return [_resolved_value(args, bound)]
    return [_resolved_value(a, bound) for a in args.named_children if a.type != "comment"]


def _gold(record) -> dict:
    """The gold `api_data` of an APIRecord or of a raw APIBench line (dict with "api_data")."""
    return record["api_data"] if isinstance(record, Mapping) else record.api_data


def _gold_call(record) -> str:
    call = record.get("api_call") if isinstance(record, Mapping) else getattr(record, "api_call", "")
    return str(call or _gold(record).get("api_call") or "")


def _is_gold_api(index: APIIndex, i: int, record) -> bool:
    """The exact_api rule of the module docstring."""
    entry, gold = index.entries[i], _gold(record)
    if index.hub == "builtin":
        return entry.get("api_name") == gold.get("api_name")
    if entry.get("api_call") == _gold_call(record):
        return True
    own = index.by_record.get(_record_key(gold, with_call=True))
    if own is None:
        own = index.by_doc.get(_record_key(gold, with_call=False), ())
    return i in own


def _args_match(candidate: str, record) -> bool:
    """The args_match rule of the module docstring (given exact_api)."""
    text = _gold_call(record).strip()
    gold = _first_call(parse_python(text).root_node)
    if gold is None and len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        gold = _first_call(parse_python(text[1:-1]).root_node)  # a few gold calls are quoted whole
    if gold is None:
        return False
    code = record.get("code") if isinstance(record, Mapping) else getattr(record, "code", "")
    gold_bound = _bindings(parse_python(code).root_node) if code else {}  # the reference program's final bindings
    callee, wanted = gold.children[0].text, _arg_values(gold, gold_bound)
    root = parse_python(candidate).root_node
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "call" and node.children[0].text == callee:
            have = set(_arg_values(node, _bindings(root, before=node.start_byte)))
            if all(v in have for v in wanted):
                return True
        stack.extend(node.children)
    return False


def ast_match(
    response: str | None,
    record,
    api_database: Sequence[dict] | APIIndex,
    hub: str = "huggingface",
    *,
    loop_quirk: bool = True,
) -> ASTMatch:
    """Score one response against its gold record (rules in the module docstring).

    `record` is an APIRecord (or a raw APIBench dict); its `api_data["domain"]` is the gold domain.
    A None response (Gorilla: a line without `text`) and a TorchHub answer without `api_call` are
    errors: neither correct nor hallucination.
    """
    index = api_index(api_database, hub)
    candidate = None if response is None else extract_candidate(response, hub)
    if candidate is None:
        return ASTMatch(correct=False, hallucination=False, error=True)
    i = index.match(candidate, loop_quirk=loop_quirk)
    if i < 0:
        return ASTMatch(correct=False, hallucination=True, error=False, candidate=candidate)
    entry = index.entries[i]
    correct = entry.get("domain") == _gold(record).get("domain")
    exact = _is_gold_api(index, i, record)
    return ASTMatch(
        correct=correct,
        hallucination=False,
        error=not correct,
        exact_api=exact,
        args_match=exact and _args_match(candidate, record),
        matched=entry,
        matched_index=i,
        candidate=candidate,
    )


def ast_scores(
    responses: Sequence[str | None],
    records: Sequence,
    api_database: Sequence[dict] | APIIndex,
    hub: str = "huggingface",
    *,
    loop_quirk: bool = True,
) -> dict:
    """Rates over all responses (None responses count in the denominator, as in Gorilla).

    Returns accuracy, hallucination, error (= 1 - accuracy - hallucination), exact_api, args_match
    (fractions in [0, 1]) and n. `records[i]` is the gold record of `responses[i]`.
    """
    if len(responses) != len(records):
        raise ValueError(f"{len(responses)} responses but {len(records)} records")
    index = api_index(api_database, hub)
    totals = dict.fromkeys(("accuracy", "hallucination", "error", "exact_api", "args_match"), 0)
    for response, record in zip(responses, records):
        m = ast_match(response, record, index, hub, loop_quirk=loop_quirk)
        totals["accuracy"] += m.correct
        totals["hallucination"] += m.hallucination
        totals["error"] += m.error
        totals["exact_api"] += m.exact_api
        totals["args_match"] += m.args_match
    n = len(responses)
    scores = {k: (v / n if n else 0.0) for k, v in totals.items()}
    scores["n"] = n
    return scores
