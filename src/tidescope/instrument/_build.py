"""Helpers of the rewrite: scanning a scope's nodes, and building injected nodes in place."""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "At",
    "bound_names",
    "irrefutable",
    "is_docstring",
    "is_statement_yield",
    "scope_nodes",
]

RT: Final = "__tidescope_rt__"
"""The one module global a rewritten module gains: ``tidescope.instrument._rt``."""

_SCOPE_NODES: Final = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def scope_nodes(nodes: list[Any]) -> list[tuple[ast.AST, ast.AST | None]]:
    """Every node under ``nodes`` with its parent, not entering nested scopes."""
    out: list[tuple[ast.AST, ast.AST | None]] = []
    stack: list[tuple[ast.AST, ast.AST | None]] = [(n, None) for n in reversed(nodes)]
    while stack:
        node, parent = stack.pop()
        out.append((node, parent))
        if isinstance(node, _SCOPE_NODES):
            continue
        stack.extend((c, node) for c in reversed(list(ast.iter_child_nodes(node))))
    return out


def is_statement_yield(node: ast.AST, parent: ast.AST | None) -> bool:
    if isinstance(parent, ast.Expr):
        return parent.value is node
    if isinstance(parent, ast.Assign):
        return (
            parent.value is node and len(parent.targets) == 1
            and isinstance(parent.targets[0], ast.Name)
        )  # fmt: skip
    return False


def is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def bound_names(target: ast.AST, out: list[str]) -> list[str]:
    """Names an assignment target binds (attributes and subscripts bind none)."""
    if isinstance(target, ast.Name):
        if target.id not in out:
            out.append(target.id)
    elif isinstance(target, (ast.Tuple, ast.List)):
        for e in target.elts:
            bound_names(e, out)
    elif isinstance(target, ast.Starred):
        bound_names(target.value, out)
    return out


def irrefutable(case: ast.match_case) -> bool:
    def pat(p: ast.pattern) -> bool:
        if isinstance(p, ast.MatchAs):
            return p.pattern is None or pat(p.pattern)
        if isinstance(p, ast.MatchOr):
            return any(pat(q) for q in p.patterns)
        return False

    return case.guard is None and pat(case.pattern)


class At:
    """Builds injected nodes placed at the start of the node they instrument."""

    __slots__ = ("loc",)

    def __init__(self, node: ast.AST) -> None:
        line = getattr(node, "lineno", None) or 1
        col = getattr(node, "col_offset", None) or 0
        self.loc: Any = {
            "lineno": line, "col_offset": col, "end_lineno": line, "end_col_offset": col,
        }  # fmt: skip

    def load(self, name: str) -> ast.Name:
        return ast.Name(id=name, ctx=ast.Load(), **self.loc)

    def store(self, name: str) -> ast.Name:
        return ast.Name(id=name, ctx=ast.Store(), **self.loc)

    def const(self, value: Any) -> ast.Constant:
        return ast.Constant(value=value, kind=None, **self.loc)

    def attr(self, name: str) -> ast.Attribute:
        return ast.Attribute(value=self.load(RT), attr=name, ctx=ast.Load(), **self.loc)

    def rt(self, helper: str, *args: ast.expr, **kwargs: ast.expr) -> ast.Call:
        """``__tidescope_rt__.helper(*args, **kwargs)``."""
        return ast.Call(
            func=self.attr(helper),
            args=list(args),
            keywords=[ast.keyword(arg=k, value=v, **self.loc) for k, v in kwargs.items()],
            **self.loc,
        )

    def expr(self, value: ast.expr) -> ast.Expr:
        return ast.Expr(value=value, **self.loc)

    def assign(self, name: str, value: ast.expr) -> ast.Assign:
        return ast.Assign(targets=[self.store(name)], value=value, type_comment=None, **self.loc)

    def names(self, names: list[str], secret: Callable[[str], bool] | None = None) -> ast.Dict:
        """``{"name": name, ...}``; a name that is ``secret`` gives
        ``"name": __tidescope_rt__.redact(name)`` (the marker, never the value)."""
        values: list[ast.expr] = [
            self.rt("redact", self.load(n)) if secret is not None and secret(n) else self.load(n)
            for n in names
        ]
        return ast.Dict(keys=[self.const(n) for n in names], values=values, **self.loc)

    def try_(
        self, body: list[ast.stmt], handlers: list[ast.ExceptHandler], final: list[ast.stmt]
    ) -> ast.Try:
        return ast.Try(body=body, handlers=handlers, orelse=[], finalbody=final, **self.loc)
