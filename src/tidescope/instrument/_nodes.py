"""AST node ids, the node records kept beside the events, and the process-wide node table.

An id is ``module:qualname:line:column:node_type`` (the format
:func:`tidescope.capture.runtime.validate_ast_node_id` accepts): the module's dotted name,
the qualified name of the scope the node belongs to (a function's or class's own node uses
its own qualname, so ``shop.cart:Cart.add:12:4:FunctionDef`` names ``Cart.add``; module
level code uses ``<module>``), the node's 1-based line and its 0-based column as the AST
gives it (a UTF-8 byte offset), and the AST class name. Two nodes that would get the same
id (same scope, line, column and type) are told apart by a suffix in traversal order:
``Assign``, ``Assign_2``, ``Assign_3``. Nothing random and no ``id()``: the same source
under the same module name gives the same ids on every run and every machine.
"""

from __future__ import annotations

import ast
import re
import threading
from typing import Final, NamedTuple

__all__ = ["NodeIds", "NodeRecord", "SourceText", "clear_node_table", "node_table", "register"]

SOURCE_LIMIT: Final = 200
"""Characters of a node's source text kept in its record (the rest is cut)."""


class NodeRecord(NamedTuple):
    """One instrumented module's AST node: the row a code property graph joins events on.

    ``line``/``end_line`` are 1-based; ``column``/``end_column`` are the AST's 0-based UTF-8
    byte offsets. ``parent_id`` is the nearest recorded enclosing node (None at module
    level); ``source`` is the node's text, cut to 200 characters.
    """

    id: str
    module: str
    file: str
    line: int
    column: int
    end_line: int
    end_column: int
    node_type: str
    parent_id: str | None
    source: str


_NOT_IDENT = re.compile(r"\W")


def safe_module_name(module: str) -> str:
    """``module`` with every dotted part made an identifier (``my-app`` -> ``my_app``)."""
    parts = []
    for part in module.split("."):
        p = _NOT_IDENT.sub("_", part) or "_"
        parts.append("_" + p if p[0].isdigit() else p)
    return ".".join(parts)


def _split_lines(source: str) -> list[str]:
    # the tokenizer's line breaks only (str.splitlines also breaks at \f, \v, \x1c...)
    return re.split(r"\r\n|\r|\n", source)


class SourceText:
    """A module's source, cut into lines once, for bounded node source segments."""

    def __init__(self, source: str) -> None:
        self._lines = _split_lines(source)
        self._encoded: dict[int, bytes] = {}

    def _line(self, lineno: int) -> bytes:
        b = self._encoded.get(lineno)
        if b is None:
            text = self._lines[lineno - 1] if 0 < lineno <= len(self._lines) else ""
            b = self._encoded[lineno] = text.encode("utf-8", "surrogatepass")
        return b

    def segment(self, node: ast.AST, limit: int = SOURCE_LIMIT) -> str:
        """The source text of ``node`` (at most ``limit`` characters), '' if unknown."""
        line = getattr(node, "lineno", None)
        end_line = getattr(node, "end_lineno", None)
        col = getattr(node, "col_offset", None)
        end_col = getattr(node, "end_col_offset", None)
        if line is None or end_line is None or col is None or end_col is None:
            return ""
        try:
            if line == end_line:
                text = self._line(line)[col:end_col].decode("utf-8", "replace")
                return text[:limit]
            parts = [self._line(line)[col:].decode("utf-8", "replace")]
            size = len(parts[0])
            n = line + 1
            while n < end_line and size <= limit:
                t = self._line(n).decode("utf-8", "replace")
                parts.append(t)
                size += len(t) + 1
                n += 1
            if size <= limit:
                parts.append(self._line(end_line)[:end_col].decode("utf-8", "replace"))
            return "\n".join(parts)[:limit]
        except Exception:
            return ""

    def startswith(self, node: ast.AST, prefix: str) -> bool:
        """True if the source at ``node``'s start begins with ``prefix``."""
        line = getattr(node, "lineno", None)
        col = getattr(node, "col_offset", None)
        if line is None or col is None:
            return False
        return self._line(line)[col:].startswith(prefix.encode())


class NodeIds:
    """Allocates one module's node ids and keeps their records, in traversal order."""

    def __init__(self, module: str, filename: str, source: SourceText) -> None:
        self.module = safe_module_name(module)
        self.filename = filename
        self.source = source
        self.records: list[NodeRecord] = []
        self._seen: dict[str, int] = {}

    def add(self, node: ast.AST, qualname: str, node_type: str, parent_id: str | None) -> str:
        """Give ``node`` its id, record it, and return the id."""
        line: int = getattr(node, "lineno", 0) or 0
        col: int = getattr(node, "col_offset", 0) or 0
        base = f"{self.module}:{qualname}:{line}:{col}:{node_type}"
        n = self._seen.get(base, 0) + 1
        self._seen[base] = n
        nid = base if n == 1 else f"{base}_{n}"
        self.records.append(
            NodeRecord(
                nid, self.module, self.filename, line, col,
                getattr(node, "end_lineno", None) or line,
                getattr(node, "end_col_offset", None) or col,
                node_type, parent_id, self.source.segment(node),
            )
        )  # fmt: skip
        return nid


# ---------------------------------------------------------------------------------------
# the process-wide table: module name -> its latest records

_table: dict[str, list[NodeRecord]] = {}
_table_lock = threading.Lock()


def register(module: str, records: list[NodeRecord]) -> None:
    """Make ``records`` the node table's rows for ``module`` (a re-import replaces them)."""
    with _table_lock:
        _table[module] = list(records)


def node_table() -> list[NodeRecord]:
    """Every node record of every module instrumented so far in this process."""
    # No lock: a trace closed from a signal handler reads the table, and the interrupted
    # code may be inside register(). Copying the values is one step under the GIL, and
    # register() replaces a module's rows in one store.
    return [r for rows in list(_table.values()) for r in rows]


def clear_node_table() -> None:
    """Forget every record (for tests)."""
    with _table_lock:
        _table.clear()
