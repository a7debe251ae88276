"""Dataflow graph (DFG) for CodeBLEU's fourth component, reproducing `codebleu` 0.7.0 for Python.

The DFG is GraphCodeBERT's: every variable occurrence is a node, and it points to the occurrences
its value comes from. An edge is (name, token position, relation, parent names, parent positions):

    x = a + b        ->  ("x", 0, "computedFrom", ["a", "b"], [2, 4])
    print(x)         ->  ("x", 8, "comesFrom",    ["x"],      [0])

Names are then renamed var_0, var_1, ... in order of first appearance, so only the *shape* of the flow
is compared: `dataflow_match = (# reference edges also found in the hypothesis) / (# reference edges)`.

The rules below (which statement kinds are special, loops visited twice, a for-loop with an `else`
never visiting its body, any exception meaning "no DFG at all", ...) are the package's, quirks
included; we only restate them.

Determinism. The package merges parent-name lists with `list(set(a + b))` in two places: when it folds
the two visits of a for/while body (so any loop assignment or loop target with two or more distinct
names on its right, e.g. `s = s + x` or `for i in range(n)`), and when two edges land on one token.
A set of strings is ordered by the per-process string hash, i.e. by PYTHONHASHSEED, and that order is
part of the compared edge (parents [var_1, var_0] != [var_0, var_1]) and of the var_i numbering after
it. Identical programs see identical sets, so they always agree; programs whose names differ need not:
a loop and its renamed copy score 8/9 under seeds 0, 2, 3, 5, 6 and 1 under seeds 1, 4, 7. On the
3000-pair bench corpus the package's corpus score spans 0.682895 .. 0.683502 over seeds 0..7.

A "natural" canonical order does not stay inside that range: first-occurrence order gives 0.685441 and
sorted order 0.685050 there, because they order the names of two similar programs alike far more often
than random hashing does. So we reproduce one real run instead: the order CPython 3.11 gives with
PYTHONHASHSEED=0 (SipHash-1-3 with a zero key, then CPython's set slot layout), computed in pure Python
below. It never depends on this process's hash seed, equals the package wherever the package does not
depend on the seed, and equals `PYTHONHASHSEED=0 python -c "calc_codebleu(...)"` on every input.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from operator import itemgetter
from typing import Callable, Hashable, Iterable

from tree_sitter import Node, Tree

Edge = tuple[str, int, str, list[str], list[int]]  # (name, position, relation, parent names, parent positions)
NormEdge = tuple[int, str, tuple[int, ...]]  # names replaced by var ids: (var, relation, parent vars)

# Leaves of the token sequence: childless nodes, plus whole string literals (their inner parts are not tokens).
_ATOMIC_TYPES = ("string_literal", "string", "character_literal")
_POSITION = itemgetter(1)


# ----------------------------------------------------------------------------------------------------
# Canonical set order: what `list(set(items))` gives in CPython 3.11 run with PYTHONHASHSEED=0.

_MASK64 = (1 << 64) - 1


def _rotl(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (64 - bits))) & _MASK64


def _sip_round(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _MASK64
    v2 = (v2 + v3) & _MASK64
    v1 = _rotl(v1, 13) ^ v0
    v3 = _rotl(v3, 16) ^ v2
    v0 = _rotl(v0, 32)
    v2 = (v2 + v1) & _MASK64
    v0 = (v0 + v3) & _MASK64
    v1 = _rotl(v1, 17) ^ v2
    v3 = _rotl(v3, 21) ^ v0
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def _siphash13_zero_key(data: bytes) -> int:
    """SipHash-1-3 (one compression round, three finalisation rounds) with k0 = k1 = 0, as CPython's pyhash.c."""
    v0, v1, v2, v3 = 0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573
    full = len(data) - len(data) % 8
    for i in range(0, full, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
        v0 ^= m
    last = ((len(data) & 0xFF) << 56) | int.from_bytes(data[full:], "little")
    v3 ^= last
    v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


@lru_cache(maxsize=1 << 16)
def seed0_str_hash(text: str) -> int:
    """hash(text) in CPython 3.11 under PYTHONHASHSEED=0 (an unsigned 64-bit value; only its bits matter)."""
    # CPython hashes the string's internal buffer: 1, 2 or 4 bytes per character, whichever fits all of them.
    widest = max(map(ord, text), default=0)
    data = text.encode("latin-1" if widest < 256 else "utf-16-le" if widest < 65536 else "utf-32-le")
    if not data:
        return 0
    h = _siphash13_zero_key(data)
    return (-2) & _MASK64 if h == _MASK64 else h  # -1 is reserved for errors and becomes -2


def cpython_set_order(items: Iterable[Hashable], hash_fn: Callable[[Hashable], int]) -> list:
    """`list(set(items))` as CPython 3.11 lays out a fresh set, given the hash function to assume.

    A set is an open-addressing table (8 slots to start) iterated slot by slot. A key goes to slot
    `hash & mask`; if taken, the next 9 slots are tried when they fit in the table, then the probe
    jumps with `i = 5*i + 1 + (perturb >>= 5)`. The table is rebuilt 4x the size (re-inserting in slot
    order) once it is 60% full.
    """
    mask, table, used = 7, [None] * 8, 0

    def insert(table: list, mask: int, h: int, key, check_equal: bool) -> bool:
        i, perturb = h & mask, h & _MASK64
        while True:
            j_end = i + (9 if i + 9 <= mask else 0)
            for j in range(i, j_end + 1):
                if table[j] is None:
                    table[j] = (h, key)
                    return True
                if check_equal and table[j][0] == h and table[j][1] == key:
                    return False  # already present
            perturb >>= 5
            i = (i * 5 + 1 + perturb) & mask

    for key in items:
        if insert(table, mask, hash_fn(key), key, True):
            used += 1
            if used * 5 >= mask * 3:
                size = 8
                while size <= used * 4:
                    size <<= 1
                bigger: list = [None] * size
                for entry in table:
                    if entry is not None:
                        insert(bigger, size - 1, entry[0], entry[1], False)
                table, mask = bigger, size - 1
    return [entry[1] for entry in table if entry is not None]


def _merge_names(a: list[str], b: list[str]) -> list[str]:
    """The package's `list(set(a + b))` for variable names, in the canonical (PYTHONHASHSEED=0) order."""
    merged = a + b
    if len(set(merged)) <= 1:
        return list(dict.fromkeys(merged))  # 0 or 1 distinct names: every order is the same
    return cpython_set_order(merged, seed0_str_hash)


# ----------------------------------------------------------------------------------------------------
# A plain-Python copy of the tree, made in one pass. The walk below touches nodes many times (loops are
# visited twice, nested loops 2^depth times) and tree-sitter's Node API builds new objects on every access.

_FIELDS = {  # the only child_by_field_name() lookups the walk needs
    "default_parameter": ("name", "value"),
    "assignment": ("left", "right"),
    "augmented_assignment": ("left", "right"),
    "for_in_clause": ("left",),
    "for_statement": ("left", "right"),
}
_KIND_NAMES: dict[int, str] = {}  # node.kind_id -> node.type (reading .type builds a new str every time)
Span = tuple[int, int]  # (start_byte, end_byte) of a token


class _Node:
    """One node of the copy: `kind` (the tree-sitter type), `children`, `is_token`; `token` = (position,
    text) for tokens; `fields` for the kinds in _FIELDS. The two caches are filled on first use. Slots
    are only set where meaningful: this runs for every node of every program."""

    __slots__ = ("kind", "children", "is_token", "token", "fields", "variables_cache", "visit_order")

    def variables(self) -> list[tuple[int, str]]:
        """(position, text) of the tokens below whose text differs from their node type (so no keywords
        or punctuation). Cached; callers never modify the list."""
        found = getattr(self, "variables_cache", None)
        if found is None:
            if self.is_token:
                pos, text = self.token
                found = [(pos, text)] if self.kind != text else []
            else:
                found = [v for child in self.children for v in child.variables()]
            self.variables_cache = found
        return found


def copy_tree(tree: Tree, code: str) -> tuple[_Node, list[str | None]]:
    """Copy the tree for the DFG walk, with every token's (position, text) as the package computes them.

    Also returns, for the syntax component, one entry per node that appears in the tree's S-expression
    (named or MISSING nodes), in pre-order: its type if it has children (or is the root), else None.
    """
    # The package cuts token text out of the *str* with tree-sitter's *byte* columns and drops the
    # newlines of multi-line tokens. For ASCII code that is just code[start_byte:end_byte] minus "\n".
    lines = None if code.isascii() else code.split("\n")
    root = _Node()
    visible: list[str | None] = []
    first_at: dict[Span, _Node] = {}  # span -> first token there
    same_span: dict[Span, list[_Node]] = {}  # zero-width tokens sharing a spot (error recovery)
    position = 0  # a token's position is the number of tokens before it
    detached: list[tuple[Node, _Node]] = []  # field targets that are not direct children (not seen in practice)
    for stack, in_tree in (([(tree.root_node, root)], True), (detached, False)):
        while stack:  # pre-order
            ts, node = stack.pop()
            node.kind = kind = _KIND_NAMES.get(ts.kind_id) or _KIND_NAMES.setdefault(ts.kind_id, ts.type)
            n_children = ts.child_count
            if in_tree and (ts.is_named or ts.is_missing):
                visible.append(kind if n_children or node is root else None)
            # Tokens: the leaves, except comments; a whole string literal is one token.
            node.is_token = (n_children == 0 or kind in _ATOMIC_TYPES) and kind != "comment"
            if node.is_token:
                node.children = [_untokenized_copy(child) for child in ts.children] if n_children else ()
                span = (ts.start_byte, ts.end_byte)
                if not in_tree:  # a second copy of a token of the tree: same (position, text), or None
                    twin = (same_span.get(span) or [first_at.get(span)])[-1]
                    node.token = twin.token if twin is not None else None
                    continue
                if lines is None:
                    text = code[span[0] : span[1]]
                    text = text.replace("\n", "") if "\n" in text else text
                else:
                    text = _token_text(lines, ts.start_point, ts.end_point)
                node.token = (position, text)
                position += 1
                first = first_at.setdefault(span, node)
                if first is not node:
                    same_span.setdefault(span, [first]).append(node)
                if n_children:
                    _list_visible(ts, visible)  # the insides of a string still count for the syntax component
                continue
            ts_children = ts.children if n_children else []
            node.children = [_Node() for _ in ts_children]
            if kind in _FIELDS:
                node.fields = {
                    name: _field_copy(ts, name, ts_children, node.children, detached) for name in _FIELDS[kind]
                }
            stack.extend(zip(reversed(ts_children), reversed(node.children)))
    for group in same_span.values():  # the package keys tokens by span: the last one's (position, text) wins
        for node in group:
            node.token = group[-1].token
    return root, visible


def _token_text(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    (r0, c0), (r1, c1) = start, end
    if r0 == r1:
        return lines[r0][c0:c1]
    return lines[r0][c0:] + "".join(lines[r0 + 1 : r1]) + lines[r1][:c1]


def _untokenized_copy(part: Node) -> _Node:
    """A direct child of a string token. The package has no token entry for it, so if the walk ever
    reaches it (`a, b, c = "xyz"` pairs a, b, c with the string's three parts) its lookup fails and
    the whole DFG is empty. A None token fails the same way; only the kind is ever read without failing."""
    node = _Node()
    node.kind, node.is_token, node.token, node.children = part.type, True, None, ()
    return node


def _list_visible(token: Node, visible: list[str | None]) -> None:
    stack = list(reversed(token.children))
    while stack:
        ts = stack.pop()
        if ts.is_named or ts.is_missing:
            visible.append(ts.type if ts.child_count else None)
        stack.extend(reversed(ts.children))


def _field_copy(ts: Node, name: str, ts_children: list[Node], children: list[_Node], detached: list) -> _Node | None:
    target = ts.child_by_field_name(name)
    if target is None:
        return None
    for ts_child, child in zip(ts_children, children):
        if ts_child == target:
            return child
    copy = _Node()  # not a direct child: copied on its own after the tree pass
    detached.append((target, copy))
    return copy


# ----------------------------------------------------------------------------------------------------
# The DFG walk: visit(node, states) -> (edges, states), where `states` maps a name to the positions
# that last defined it. States dicts are never modified once made (a change makes a new dict), so
# they can be shared; the package instead copies the dict on entry to every node, same result.
#
# The package sorts the edges by position (a stable sort) on the way out of every compound node. Only
# the relative order of edges at the *same* position ever matters afterwards, and stable sorts keep
# that as generated, so we sort once, at the end.

States = dict[str, list[int]]
COMES, COMPUTED = "comesFrom", "computedFrom"


def _visit(node: _Node, states: States) -> tuple[list[Edge], States]:
    if node.is_token:
        return _visit_token(node, states)
    special = _SPECIAL_VISITS.get(node.kind)
    if special is not None:
        return special(node, states)
    # Any other node: comprehension clauses first (`[f(x) for x in xs]` defines x before f(x)), then the rest.
    order = getattr(node, "visit_order", None)
    if order is None:  # computed once per node: loop bodies are visited more than once
        clauses = [child for child in node.children if child.kind == "for_in_clause"]
        others = [child for child in node.children if child.kind != "for_in_clause"]
        order = node.visit_order = clauses + others
    edges: list[Edge] = []
    for child in order:
        sub, states = _visit_token(child, states) if child.is_token else _visit(child, states)
        edges += sub
    return edges, states


def _visit_token(node: _Node, states: States) -> tuple[list[Edge], States]:
    pos, text = node.token
    if node.kind == text:  # keyword or punctuation
        return [], states
    if text in states:  # a use of a known name: it comes from its last definitions
        return [(text, pos, COMES, [text], states[text])], states  # position lists are never changed in place
    if node.kind == "identifier":  # first sighting of a name defines it
        states = {**states, text: [pos]}
    return [(text, pos, COMES, [], [])], states


def _visit_default_parameter(node: _Node, states: States) -> tuple[list[Edge], States]:
    name, value = node.fields["name"], node.fields["value"]
    targets = name.variables()  # raises on a missing name, which means "no DFG", as in the package
    edges: list[Edge] = []
    if value is None:
        edges = [(text, pos, COMES, [], []) for pos, text in targets]
    else:
        sources = value.variables()
        edges, states = _visit(value, states)
        for pos, text in targets:
            edges += [(text, pos, COMES, [src_text], [src_pos]) for src_pos, src_text in sources]
    return edges, {**states, **{text: [pos] for pos, text in targets}}


def _visit_assignment(node: _Node, states: States) -> tuple[list[Edge], States]:
    if node.kind == "for_in_clause":
        lefts, rights = [node.fields["left"]], [node.children[-1]]
    else:
        if node.fields["right"] is None:  # e.g. a bare annotation `x: int`
            return [], states
        lefts, rights = _paired_sides(node)
    edges: list[Edge] = []
    for right in rights:
        sub, states = _visit(right, states)
        edges += sub
    sub, states = _assign(lefts, rights, states)
    return edges + sub, states


def _assign(lefts: list[_Node], rights: list[_Node], states: States) -> tuple[list[Edge], States]:
    """Each variable of a left side is computedFrom every variable of its right side, and is now defined there."""
    edges: list[Edge] = []
    states = dict(states)
    for left, right in zip(lefts, rights):
        targets, sources = left.variables(), right.variables()
        for pos, text in targets:
            edges.append((text, pos, COMPUTED, [t for _, t in sources], [p for p, _ in sources]))
            states[text] = [pos]
    return edges, states


def _paired_sides(node: _Node) -> tuple[list[_Node], list[_Node]]:
    """Left/right of an assignment or for: element-wise (`a, b = c, d`) when the counts agree, else whole."""
    left, right = node.fields["left"], node.fields["right"]
    rights = [c for c in right.children if c.kind != ","]  # a None side (broken code) raises: "no DFG"
    lefts = [c for c in left.children if c.kind != ","]
    if len(rights) != len(lefts):
        lefts, rights = [left], [right]
    return (lefts or [left]), (rights or [right])


def _visit_if(node: _Node, states: States) -> tuple[list[Edge], States]:
    # The `if` body runs on from the current state; each elif/else starts again from the state before the
    # `if`. Afterwards a name may come from any branch (or from before the `if`, when there is no else).
    edges: list[Edge] = []
    current, outcomes, has_else = states, [], False
    for child in node.children:
        has_else = has_else or "else" in child.kind
        if child.kind in ("elif_clause", "else_clause"):
            sub, branch = _visit(child, states)
            outcomes.append(branch)
        else:
            sub, current = _visit(child, current)
        edges += sub
    outcomes.append(current)
    if not has_else:
        outcomes.append(states)
    joined: States = {}
    for outcome in outcomes:
        for name, positions in outcome.items():
            joined[name] = joined.get(name, []) + positions
    return edges, {name: sorted(set(positions)) for name, positions in joined.items()}


def _visit_for(node: _Node, states: States) -> tuple[list[Edge], States]:
    # Visited twice so that uses in the body also see the definitions of the previous iteration.
    edges: list[Edge] = []
    for _ in range(2):
        lefts, rights = _paired_sides(node)
        for right in rights:
            sub, states = _visit(right, states)
            edges += sub
        sub, states = _assign(lefts, rights, states)
        edges += sub
        if node.children[-1].kind == "block":  # quirk: in a `for ... else`, the body is never visited
            sub, states = _visit(node.children[-1], states)
            edges += sub
    return _fold_repeats(edges), states


def _visit_while(node: _Node, states: States) -> tuple[list[Edge], States]:
    edges: list[Edge] = []
    for _ in range(2):
        for child in node.children:
            sub, states = _visit(child, states)
            edges += sub
    return _fold_repeats(edges), states


_SPECIAL_VISITS = {
    "default_parameter": _visit_default_parameter,
    "assignment": _visit_assignment,
    "augmented_assignment": _visit_assignment,
    "for_in_clause": _visit_assignment,
    "if_statement": _visit_if,
    "for_statement": _visit_for,
    "while_statement": _visit_while,
}


def _fold_repeats(edges: list[Edge]) -> list[Edge]:
    """Merge the twice-visited loop edges: one edge per (name, position, relation), parents united."""
    folded: dict[tuple[str, int, str], tuple[list[str], list[int]]] = {}
    for name, pos, rel, names, positions in edges:
        key = (name, pos, rel)
        if key in folded:
            old_names, old_positions = folded[key]
            folded[key] = (_merge_names(old_names, names), sorted(set(old_positions + positions)))
        else:
            folded[key] = (names, positions)
    # First-occurrence order; the package also sorts by position here (see the note on sorting above).
    return [(name, pos, rel, names, positions) for (name, pos, rel), (names, positions) in folded.items()]


# ----------------------------------------------------------------------------------------------------
# Public entry points.


def extract_dataflow(root: _Node) -> list[Edge]:
    """The package's `get_data_flow` on a converted tree: the DFG restricted to tokens that take part in
    an edge, with the edges at one position merged into one."""
    try:
        edges, _ = _visit(root, {})
    except Exception:  # the package treats any failure (odd error trees, deep recursion) as "no DFG"
        return []
    edges.sort(key=_POSITION)  # stable
    linked = set()  # positions in some edge: as a token with parents, or as a parent
    for _, pos, _, _, positions in edges:
        if positions:
            linked.add(pos)
        linked.update(positions)
    merged: dict[int, Edge] = {}
    for edge in edges:
        pos = edge[1]
        if pos not in linked:
            continue
        old = merged.get(pos)
        if old is None:
            merged[pos] = edge
        else:  # the latest name/relation wins, parents are united (parent positions are never compared)
            merged[pos] = (edge[0], pos, edge[2], _merge_names(old[3], edge[3]), sorted(set(old[4] + edge[4])))
    return list(merged.values())


def normalize_dataflow(edges: list[Edge]) -> Counter[NormEdge]:
    """Rename names to var ids 0, 1, ... by first appearance (parents before the child); count the edges."""
    ids: dict[str, int] = {}
    normalized: Counter[NormEdge] = Counter()
    for name, _, relation, parents, _ in edges:
        for parent in parents:
            ids.setdefault(parent, len(ids))
        ids.setdefault(name, len(ids))
        normalized[(ids[name], relation, tuple(ids[p] for p in parents))] += 1
    return normalized
