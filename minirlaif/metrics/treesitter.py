"""One cached tree-sitter parser for Python, shared by the metrics (AST match, CodeBLEU).

tree-sitter (unlike Python's `ast`) builds a tree for *any* text: invalid parts become ERROR or
MISSING nodes. That is what lets Gorilla's AST evaluation score free-form model output and the
invalid `api_call`s of its API database. Pinned versions: tree-sitter 0.22.3 with tree-sitter-python
0.21.0, whose API is `Language(tree_sitter_python.language())` and `Parser(language)`.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import tree_sitter
import tree_sitter_python


@lru_cache(maxsize=1)
def python_language() -> tree_sitter.Language:
    """The tree-sitter Python grammar (built once per process)."""
    return tree_sitter.Language(tree_sitter_python.language())


_local = threading.local()  # a Parser is not safe to share between threads: one per thread


def _parser() -> tree_sitter.Parser:
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = tree_sitter.Parser(python_language())
    return parser


def parse_python(code: str | bytes) -> tree_sitter.Tree:
    """Parse Python source (str is UTF-8 encoded) into a tree-sitter Tree. Never raises on bad syntax.

    Node byte offsets index the UTF-8 bytes; `node.text` is the node's bytes. The Parser is created
    once per thread and reused.
    """
    data = code.encode("utf-8") if isinstance(code, str) else code
    return _parser().parse(data)


def node_text(node: tree_sitter.Node) -> str:
    """The source text of a node, decoded as UTF-8 (undecodable bytes replaced)."""
    return node.text.decode("utf-8", errors="replace")
