"""The AST rewrite: one module's tree in, the same tree with ``report_*`` calls injected out.

What is injected, by level (each level includes the ones before it):

``calls``
    A function's body (after its docstring) becomes::

        if not __tidescope_on__:          # capture off: a copy of the body, no report
            <body, as written>            # (at every level, see below)
            return
        __tidescope_call__ = __tidescope_enter__(__tidescope_sK__, *params)
        try:
            <body, with every ``return X`` as
             ``return __tidescope_leave__(__tidescope_call__, X, __tidescope_sK__)``>
            return __tidescope_leave__(__tidescope_call__, None, __tidescope_sK__)
        except __tidescope_rt__.BaseException:
            __tidescope_rt__.fail_site(__tidescope_call__, __tidescope_sK__)
            raise

    (the exit reported on the return path itself, ``report_site_return`` returning the
    value: no ``finally`` and no local for the value). A function with a ``return`` inside
    a ``with``, a ``for``, a ``try`` with a ``finally`` or an ``except``, where the program
    runs code after the value is computed (``__exit__``, a generator closed as the loop
    drops it, the ``finally``), keeps the exit in a ``finally`` instead, so the calls made
    there stay its children and the value reported is the one really returned::

        __tidescope_rv__ = None
        __tidescope_call__ = __tidescope_enter__(__tidescope_sK__, *params)
        try:
            <body, with every ``return X`` as ``return (__tidescope_rv__ := X)``>
        except __tidescope_rt__.BaseException:
            __tidescope_call__ = __tidescope_rt__.fail_site(__tidescope_call__, __tidescope_sK__)
            raise
        finally:
            __tidescope_leave__(__tidescope_call__, __tidescope_rv__, __tidescope_sK__)

    where ``__tidescope_sK__`` is the function's site id: the module registers its
    functions once, at import (module, qualname, node id, parameter names, file, line:
    ``tidescope.capture._sites``), in one statement after ``__tidescope_rt__``'s that also
    binds ``__tidescope_enter__`` and ``__tidescope_leave__`` (``report_site_entry`` /
    ``report_site_return``, which reports nothing for a call of None), so a call passes a
    site id and its parameters' values positionally: no dict, keywords or strings per
    call, and one global read per name. So entry and exit share the call that the core's
    token names (``_core.call_of``: on the C core a token stands for a frame in C memory,
    not a call-id int), the exit sees the value really returned (a ``return`` in a user's
    ``finally`` overrides an earlier one, as it does in the program)
    or the exception really raised (the bare ``raise`` keeps its traceback unchanged), and
    ``asyncio.CancelledError`` exits as ``"cancelled"``. No frame is added and nothing is
    re-evaluated. Coroutines (``async def``) get the same wrapper: their entry runs at the
    first step, and their call stays on the call stack across ``await`` because asyncio (and
    trio) run each task step inside the task's own ``Context``, so the stack that holds it
    is the suspended task's own. (A coroutine stepped by hand with ``coro.send()`` from
    plain code would stay on that caller's stack while suspended.)

    A lambda's body can't hold a ``try``, so ``lambda a: body`` becomes
    ``lambda a: __tidescope_rt__.call(module, qualname, {"a": a}, id, lambda: body) if
    __tidescope_on__ else body``:
    signature, defaults and code location unchanged, two extra frames in a traceback that
    passes through it. Lambdas that use ``yield``, ``super``, ``locals``, ``vars``,
    ``dir``, ``eval`` or ``exec`` are left as they are (moving their body changes those).

Generators (and async generators) suspend. The call id lives in a local
(``__tidescope_call__``; the start time in ``__tidescope_t0__``), and the call is taken off
the context's call stack at every ``yield`` and put back on whoever resumes it, so while
suspended it is never on the consumer's stack and the calls it makes while running are its
children. A ``yield`` statement (``yield x`` or ``name = yield x``) becomes::

    try:
        yield __tidescope_rt__.suspend(__tidescope_call__, x)   # x first, then pop
    finally:
        __tidescope_rt__.resume(__tidescope_call__)             # push, even on throw/close

Any other ``yield`` in a generator becomes ``yield from __tidescope_rt__.yield_(call, x)``
and ``yield from it`` becomes ``yield from __tidescope_rt__.delegate(call, it)``, PEP 380's
expansion with the same pop and push around its own yield (so ``send``, ``throw`` and
``close`` reach the sub-iterator as they do through ``yield from``). Entry is at the first
step; exit at exhaustion (normal, with the ``return`` value), ``close()`` (``GeneratorExit``,
reported as ``"cancelled"``) or an exception (``"exception"``), with the entry's call id and
the duration from the first step. An async generator with a ``yield`` anywhere but in such
a statement is left uninstrumented (its calls, not its nested functions).

Redaction: an argument, a local or a loop variable whose name is secret (``Config.redact_pattern``,
see ``tidescope.capture._redact``) is passed as ``__tidescope_rt__.redact(name)``, a marker
with its type's name, decided here once: names that are not secret cost nothing more.

``values``
    After an assignment (``=``, ``+=``, annotated), a snapshot of the names it bound; at the
    start of a ``with`` body, the ``as`` names. ``if``/``elif``/``else``: a branch event in
    the branch taken (the test is never evaluated twice: the event is in the body, not
    around the test), and for ``a if t else b`` the same inside the chosen operand. Loops:
    one event per iteration for the first 10 iterations of each run of the loop, then every
    100th, counted in a local ``__tidescope_loop_N__``. ``match``: the subject is kept in
    ``__tidescope_match__``; the case taken reports success, and a final ``case _`` (added
    when the last case can fail) reports that none matched. Loops and ``match`` in class
    bodies are not instrumented (their helper names would become class attributes).

``lines``
    A line event before every statement (not before a docstring or ``from __future__``).

Every value report (``values`` and ``lines``) is a site, as functions are: the module
registers its reporting nodes once, at import, in one statement,
``__tidescope_value__ = __tidescope_rt__.value_sites(((kind, node_id, line, names, detail),
...))``, and a report passes the call's id, the node's index in that table (a constant) and
the values, positionally: ``__tidescope_value__(__tidescope_call__, 3, y)`` after ``y = ...``,
``__tidescope_loop_1__ = __tidescope_value__(__tidescope_call__, 4, __tidescope_loop_1__,
i)`` in a loop (see ``tidescope.capture._pure_values``). No dict, keyword or string per
event; the node ids, names and constants come from the table.

Capture off, at every level: each instrumented function (generators included) starts with
``if not __tidescope_on__:`` and a copy of its body with nothing of the rewrite in its own
scope (no report, loop counter, walrus or suspension protocol; its nested functions are
rewritten as usual), so a call with capture off costs one global read and a branch. A
``global``/``nonlocal`` declaration is moved above that test. The price is code size: each
function's own code is there twice (its nested functions are copied with it).

Injected nodes take the source position of the node they instrument, so tracebacks,
``inspect`` and line tables point at the user's code. Names injected are ``__tidescope_*__``
dunders (never mangled in classes, never clashing with a user's name), and the module
globals ``__tidescope_rt__``, ``__tidescope_on__`` and those of the site registration,
bound after the docstring and ``from __future__`` imports.
Annotations, decorators' and defaults' evaluation order, class bodies, the meaning of
``global`` and ``nonlocal`` (moved to the top of the function, see above), zero-argument
``super()`` and its ``__class__`` cell are left alone. Seen by a program: with capture on,
the injected locals appear in ``locals()`` of instrumented functions.

What is not instrumented is said: each function or lambda left as written is listed in
:attr:`Rewrite.skipped` with the reason, for the hook to report. That is the async
generators and lambdas above, and any function whose rewrite fails (a bug of ours) or
whose rewritten code does not compile (CPython's limit of 20 nested blocks, which the
wrapper's ``try`` can pass): :func:`rewrite_module` is then run again with that function
in ``skip``, so one function's failure costs that function only, not its module.
"""

from __future__ import annotations

import ast
import copy
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from tidescope.capture._redact import secret_name
from tidescope.instrument._build import (
    RT,
    At,
    bound_names,
    irrefutable,
    is_docstring,
    is_statement_yield,
    scope_nodes,
)
from tidescope.instrument._nodes import NodeIds, NodeRecord, SourceText

__all__ = [
    "LEVELS",
    "RT",
    "FunctionAt",
    "Rewrite",
    "Skipped",
    "check_level",
    "rewrite_module",
    "rewrite_source",
]

LEVELS: Final = ("calls", "values", "lines")
_VALUES: Final = 1
_LINES: Final = 2

CALL: Final = "__tidescope_call__"
START: Final = "__tidescope_t0__"
ON: Final = "__tidescope_on__"  # the module's copy of the capture flag (see _rt.track)
RV: Final = "__tidescope_rv__"
MATCH: Final = "__tidescope_match__"
LOOP: Final = "__tidescope_loop_{}__"
ENTER: Final = "__tidescope_enter__"  # the module's binding of _rt.enter_site
LEAVE: Final = "__tidescope_leave__"  # and of _rt.leave_site
SITE: Final = "__tidescope_s{}__"  # a function's site id, registered at import
VALUE: Final = "__tidescope_value__"  # the module's value reporter (_rt.value_sites)

_LAMBDA_BLOCKERS: Final = frozenset({"super", "locals", "vars", "dir", "eval", "exec"})
_LAMBDA_SUSPENDERS: Final[dict[type[ast.AST], str]] = {
    ast.Yield: "yield", ast.YieldFrom: "yield from", ast.Await: "await",
}  # fmt: skip


def check_level(level: str) -> int:
    """The index of ``level`` in :data:`LEVELS`.

    Raises:
        ValueError: not one of ``calls``, ``values``, ``lines``.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    return LEVELS.index(level)


FunctionAt = tuple[int, int]
"""Where a function (or lambda) starts: ``(lineno, col_offset)``, unique in a module."""


class Skipped(NamedTuple):
    """A function or lambda left as written, and why."""

    qualname: str
    lineno: int
    reason: str


@dataclass
class Rewrite:
    """One module rewritten: what :func:`rewrite_module` returns."""

    tree: ast.Module
    records: list[NodeRecord]
    skipped: list[Skipped]
    functions: list[tuple[FunctionAt, int]]
    """Each function rewritten (start, last line), to find which one a compile error is in."""

    def function_at(self, lineno: int, skip: Mapping[FunctionAt, str]) -> FunctionAt | None:
        """The innermost rewritten function holding line ``lineno``, not in ``skip``."""
        best: FunctionAt | None = None
        for at, end in self.functions:
            if at[0] <= lineno <= end and at not in skip and (best is None or at > best):
                best = at
        return best


class _FunctionFailed(Exception):
    """Rewriting the function at ``at`` raised (the cause)."""

    def __init__(self, at: FunctionAt, reason: str) -> None:
        super().__init__(reason)
        self.at = at
        self.reason = reason


def rewrite_module(
    source: str,
    filename: str,
    module: str,
    level: str = "calls",
    skip: Mapping[FunctionAt, str] | None = None,
) -> Rewrite:
    """Parse ``source`` and inject the reports of ``level``; nothing is registered or run.

    A function whose rewrite raises is left as written and listed in ``skipped`` (the
    module is parsed and rewritten again without it), so only an error outside every
    function raises.

    Args:
        source: the module's text.
        filename: what tracebacks and node records name (compile the tree with it).
        module: the module's dotted name (``__main__`` for a script), the first part of
            every node id.
        level: ``"calls"``, ``"values"`` or ``"lines"``.
        skip: functions to leave as written, by where they start, with the reason.

    Raises:
        SyntaxError: ``source`` does not parse.
        ValueError: unknown level.
    """
    lvl = check_level(level)
    left = dict(skip or {})
    again = bool(left)  # a caller's second try: the parser's warnings were shown the first time
    while True:
        if again:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(source, filename)
        else:
            tree = ast.parse(source, filename)
        again = True
        rewriter = _Rewriter(module, filename, source, lvl, left)
        try:
            tree = rewriter.rewrite(tree)
        except _FunctionFailed as failed:
            if failed.at in left:  # pragma: no cover - a skipped function is not visited
                raise
            left[failed.at] = failed.reason
            continue
        return Rewrite(tree, rewriter.ids.records, rewriter.skipped, rewriter.functions)


def rewrite_source(
    source: str, filename: str, module: str, level: str = "calls"
) -> tuple[ast.Module, list[NodeRecord]]:
    """Parse ``source`` and inject the reports of ``level``; nothing is registered or run.

    :func:`rewrite_module` without the list of what was left as written.

    Args:
        source: the module's text.
        filename: what tracebacks and node records name (compile the tree with it).
        module: the module's dotted name (``__main__`` for a script), the first part of
            every node id.
        level: ``"calls"``, ``"values"`` or ``"lines"``.

    Returns:
        The rewritten tree (compile it with ``dont_inherit=True``) and the module's node
        records in traversal order.

    Raises:
        SyntaxError: ``source`` does not parse.
        ValueError: unknown level.
    """
    done = rewrite_module(source, filename, module, level)
    return done.tree, done.records


# ---------------------------------------------------------------------------------------
# the rewriter


@dataclass
class _Scope:
    kind: str  # "module", "class", "function", "lambda", "comprehension"
    qualname: str
    call: bool = False  # __tidescope_call__ is this scope's local
    generator: bool = False  # an instrumented (async) generator
    async_generator: bool = False
    rv: bool = False  # returns go through __tidescope_rv__
    loops: int = 0
    globals: set[str] = field(default_factory=set)


class _Rewriter(ast.NodeTransformer):
    def __init__(
        self, module: str, filename: str, source: str, level: int, skip: Mapping[FunctionAt, str]
    ) -> None:
        self.module = module
        self.level = level
        self.skip = skip
        self.skipped: list[Skipped] = []
        self.functions: list[tuple[FunctionAt, int]] = []
        self.src = SourceText(source)
        self.ids = NodeIds(module, filename, self.src)
        self.scopes: list[_Scope] = []
        self.parents: list[str | None] = [None]
        self.docstrings: set[int] = set()
        self.filename = filename
        self.sites: list[tuple[str, str, str, tuple[str, ...], str, int]] = []
        # the value sites: (kind, ast_node_id, line, names, detail), by index
        self.value_sites: list[tuple[str, str, int, tuple[str, ...], tuple[Any, ...]]] = []

    # -- driving ---------------------------------------------------------------------

    def rewrite(self, tree: ast.Module) -> ast.Module:
        self.scopes.append(_Scope("module", "<module>", globals=set()))
        self._mark_docstring(tree.body)
        body = self._block(tree.body)
        i = 0
        if body and id(body[0]) in self.docstrings:
            i = 1
        while (
            i < len(body) and isinstance(body[i], ast.ImportFrom)
            and body[i].module == "__future__"  # type: ignore[attr-defined]
        ):  # fmt: skip
            i += 1
        at = At(body[i] if i < len(body) else ast.Pass(lineno=1, col_offset=0))
        imp = ast.ImportFrom(
            module="tidescope.instrument",
            names=[ast.alias(name="_rt", asname=RT, **at.loc)],
            level=0,
            **at.loc,
        )
        # __tidescope_on__ = __tidescope_rt__.track(globals()): the module's own copy of
        # the capture flag, kept current by _rt (a global read is the cheapest test)
        track = at.assign(
            ON,
            ast.Call(
                func=at.attr("track"),
                args=[ast.Call(func=at.load("globals"), args=[], keywords=[], **at.loc)],
                keywords=[],
                **at.loc,
            ),
        )
        body[i:i] = [imp, track, *self._register(at), *self._register_values(at)]
        tree.body = body
        return tree

    def _register(self, at: At) -> list[ast.stmt]:
        """``__tidescope_enter__, __tidescope_leave__, (__tidescope_s0__, ...) =
        __tidescope_rt__.sites((site, ...))``: the module's functions registered once, at
        import; their calls then pass a site id and values (one global read each)."""
        if not self.sites:
            return []
        ids = ast.Tuple(
            elts=[at.store(SITE.format(k)) for k in range(len(self.sites))],
            ctx=ast.Store(),
            **at.loc,
        )
        targets = ast.Tuple(elts=[at.store(ENTER), at.store(LEAVE), ids], ctx=ast.Store(), **at.loc)
        value = at.rt("sites", at.const(tuple(self.sites)))
        return [ast.Assign(targets=[targets], value=value, type_comment=None, **at.loc)]

    def _register_values(self, at: At) -> list[ast.stmt]:
        """``__tidescope_value__ = __tidescope_rt__.value_sites((site, ...))``: the module's
        value-reporting nodes registered once, at import (``capture._pure_values``)."""
        if not self.value_sites:
            return []
        return [at.assign(VALUE, at.rt("value_sites", at.const(tuple(self.value_sites))))]

    def _value(
        self,
        at: At,
        kind: str,
        line: int,
        nid: str,
        names: list[str] = (),  # type: ignore[assignment]
        detail: tuple[Any, ...] = (),
        values: list[ast.expr] = (),  # type: ignore[assignment]
    ) -> ast.Call:
        """``__tidescope_value__(call, k, *values)`` for a new value site ``k``; the values
        are ``names``' (a secret one as its marker) after ``values``."""
        k = len(self.value_sites)
        self.value_sites.append((kind, nid, line, tuple(names), detail))
        loaded = [at.rt("redact", at.load(n)) if secret_name(n) else at.load(n) for n in names]
        args = [self._cid(at), at.const(k), *values, *loaded]
        return ast.Call(func=at.load(VALUE), args=args, keywords=[], **at.loc)

    def _mark_docstring(self, body: list[ast.stmt]) -> None:
        if body and is_docstring(body[0]):
            self.docstrings.add(id(body[0]))

    def _block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for s in stmts:
            r = self.visit(s)
            out.extend(r if isinstance(r, list) else [r])
        return out

    @property
    def _nid(self) -> str:
        nid = self.parents[-1]
        assert nid is not None
        return nid

    def _scope(self) -> _Scope:
        return self.scopes[-1]

    def _cid(self, at: At) -> ast.expr:
        """The enclosing call's id as an expression (None: the innermost call here)."""
        return at.load(CALL) if self._scope().call else at.const(None)

    def _qualname(self, name: str) -> str:
        s = self._scope()
        if s.kind == "module" or name in s.globals:
            return name
        if s.kind == "class":
            return f"{s.qualname}.{name}"
        return f"{s.qualname}.<locals>.{name}"

    def visit(self, node: ast.AST) -> Any:
        if isinstance(node, ast.stmt):
            return self._statement(node)
        if isinstance(node, (ast.Lambda, ast.IfExp, ast.excepthandler)):
            qual = self._qualname("<lambda>") if isinstance(node, ast.Lambda) else None
            nid = self.ids.add(
                node, qual or self._scope().qualname, type(node).__name__, self.parents[-1]
            )
            self.parents.append(nid)
            try:
                return super().visit(node)
            finally:
                self.parents.pop()
        return super().visit(node)

    def _statement(self, node: ast.stmt) -> list[ast.stmt]:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            qual = self._qualname(node.name)
        else:
            qual = self._scope().qualname
        nid = self.ids.add(node, qual, type(node).__name__, self.parents[-1])
        self.parents.append(nid)
        try:
            r = super().visit(node)
        finally:
            self.parents.pop()
        out: list[ast.stmt] = r if isinstance(r, list) else [r]
        if (
            self.level >= _LINES
            and id(node) not in self.docstrings
            and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
        ):
            at = At(node)
            out.insert(0, at.expr(self._value(at, "line", node.lineno, nid)))
        return out

    # -- scopes ----------------------------------------------------------------------

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        return self._function(node)

    def _defaults(self, args: ast.arguments) -> None:
        args.defaults = [self.visit(d) for d in args.defaults]
        args.kw_defaults = [None if d is None else self.visit(d) for d in args.kw_defaults]

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        at = (node.lineno, node.col_offset)
        reason = self.skip.get(at)
        if reason is not None:
            self.skipped.append(Skipped(self._qualname(node.name), node.lineno, reason))
            return node
        try:
            out = self._instrument(node)
        except _FunctionFailed:
            raise  # a nested function's: that one is left as written
        except Exception as exc:
            raise _FunctionFailed(at, f"the rewrite failed: {type(exc).__name__}: {exc}") from exc
        self.functions.append((at, node.end_lineno or node.lineno))
        return out

    def _instrument(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        nid = self._nid
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        self._defaults(node.args)  # annotations are never touched (they may be strings)
        qual = self._qualname(node.name)
        inner = scope_nodes(node.body)
        yields = [(n, p) for n, p in inner if isinstance(n, (ast.Yield, ast.YieldFrom))]
        is_async = isinstance(node, ast.AsyncFunctionDef)
        generator = bool(yields)
        instrument = not (
            is_async and generator and not all(is_statement_yield(n, p) for n, p in yields)
        )
        scope = _Scope(
            "function",
            qual,
            call=instrument,
            generator=generator and instrument,
            async_generator=is_async and generator,
            rv=instrument and not (is_async and generator),
            globals={name for n, _ in inner if isinstance(n, ast.Global) for name in n.names},
        )
        self.scopes.append(scope)
        self._mark_docstring(node.body)
        body = self._block(node.body)
        self.scopes.pop()
        if instrument:
            node.body = self._wrap(node, body, qual, nid, scope)
        else:
            node.body = body
            self.skipped.append(
                Skipped(qual, node.lineno, "an async generator whose yield is in an expression")
            )
        return node

    def _wrap(
        self,
        node: ast.FunctionDef | ast.AsyncFunctionDef,
        body: list[ast.stmt],
        qual: str,
        nid: str,
        scope: _Scope,
    ) -> list[ast.stmt]:
        doc: list[ast.stmt] = []
        if body and id(body[0]) in self.docstrings:
            doc, body = [body[0]], body[1:]
        at = At(node)
        # first: it takes out global and nonlocal, and copies the body before the returns
        # are changed below
        fast = self._unreported(at, body) if self._copies_allowed() else []
        if scope.rv and not scope.generator and not _deferred_return(body):
            return [*doc, *fast, *self._lean(node, body, qual, nid)]
        mod, q, n = at.const(self.module), at.const(qual), at.const(nid)
        pre: list[ast.stmt] = []
        if scope.rv:
            pre.append(at.assign(RV, at.const(None)))
        rv = at.load(RV) if scope.rv else at.const(None)
        call, start = at.load(CALL), at.load(START)
        final: ast.stmt
        if scope.generator:
            pair = ast.Tuple(elts=[at.store(CALL), at.store(START)], ctx=ast.Store(), **at.loc)
            pre.append(
                ast.Assign(
                    targets=[pair],
                    value=at.rt("genter", mod, q, self._params(at, node.args), n),
                    type_comment=None,
                    **at.loc,
                )
            )
            on_exc = at.assign(CALL, at.rt("gfail", call, start, n))
            final = at.expr(at.rt("gleave", call, start, rv, n))
        else:
            site, enter = self._site_entry(node, qual, nid)
            pre.append(enter)
            on_exc = at.assign(CALL, at.rt("fail_site", call, site))
            # the leave returns at once when the entry returned None (capture went off)
            leave = ast.Call(func=at.load(LEAVE), args=[call, rv, site], keywords=[], **at.loc)
            final = at.expr(leave)
        try_ = at.try_(body or [ast.Pass(**at.loc)], [_handler(at, on_exc)], [final])
        return [*doc, *fast, *pre, try_]

    def _site_entry(
        self, node: ast.FunctionDef | ast.AsyncFunctionDef, qual: str, nid: str
    ) -> tuple[ast.Name, ast.stmt]:
        """The function's site (registered here) and ``__tidescope_call__ =
        __tidescope_enter__(__tidescope_sK__, *params)``.

        The flag was just tested (the unreported copy runs without it); if capture went off
        since, the entry returns None and the exit reports nothing.
        """
        at = At(node)
        names = self._param_names(node.args)
        site = at.load(SITE.format(len(self.sites)))
        self.sites.append((self.module, qual, nid, tuple(names), self.filename, node.lineno))
        values = [at.rt("redact", at.load(p)) if secret_name(p) else at.load(p) for p in names]
        enter = ast.Call(func=at.load(ENTER), args=[site, *values], keywords=[], **at.loc)
        return site, at.assign(CALL, enter)

    def _lean(
        self,
        node: ast.FunctionDef | ast.AsyncFunctionDef,
        body: list[ast.stmt],
        qual: str,
        nid: str,
    ) -> list[ast.stmt]:
        """A function whose returns run nothing of the program's after their value (see
        :func:`_deferred_return`) reports its exit on the return path itself::

            __tidescope_call__ = __tidescope_enter__(__tidescope_sK__, *params)
            try:
                <body, with every ``return X`` as
                 ``return __tidescope_leave__(__tidescope_call__, X, __tidescope_sK__)``>
                return __tidescope_leave__(__tidescope_call__, None, __tidescope_sK__)
            except __tidescope_rt__.BaseException:
                __tidescope_rt__.fail_site(__tidescope_call__, __tidescope_sK__)
                raise

        (the last ``return`` only when the body can end without one): no ``finally``, no
        return-value local, and the leave (``report_site_return``) returns the value.
        """
        at = At(node)
        site, enter = self._site_entry(node, qual, nid)
        for n, _ in scope_nodes(body):
            if isinstance(n, ast.Return) and isinstance(n.value, ast.NamedExpr):
                v = At(n.value)
                n.value = ast.Call(
                    func=v.load(LEAVE),
                    args=[v.load(CALL), n.value.value, v.load(SITE.format(len(self.sites) - 1))],
                    keywords=[],
                    **v.loc,
                )
        if not body or not isinstance(body[-1], (ast.Return, ast.Raise)):
            leave = ast.Call(
                func=at.load(LEAVE),
                args=[at.load(CALL), at.const(None), site],
                keywords=[],
                **at.loc,
            )
            body = [*body, ast.Return(value=leave, **at.loc)]
        on_exc = at.expr(at.rt("fail_site", at.load(CALL), site))
        return [enter, at.try_(body, [_handler(at, on_exc)], [])]

    def _copies_allowed(self) -> bool:
        """Whether a function or lambda here gets an unreported copy of its body.

        An enclosing function's copy holds a copy of each function nested in it, so a
        function nested k deep would be compiled 2**k times: past :data:`_COPY_DEPTH`
        enclosing functions a function has no copy (with capture off it runs its reports,
        which record nothing), and the code stays at most 2**_COPY_DEPTH times its size.
        """
        depth = sum(1 for s in self.scopes if s.kind in ("function", "lambda"))
        return depth < _COPY_DEPTH

    @staticmethod
    def _unreported(at: At, body: list[ast.stmt]) -> list[ast.stmt]:
        """``if not __tidescope_on__: <body>; return``: with capture off a call runs a copy
        of its body without what the rewrite injected in it (see :class:`_Unreported`), and
        reports nothing, for the cost of one global test, at every level.

        A generator tests the flag at its first step, where its entry would be reported;
        once running the copy it stays unreported to its end. ``global`` and ``nonlocal``
        are hoisted above the test (see :func:`_hoist_declarations`), since a declaration
        may not follow a use of its name.
        """
        declared = _hoist_declarations(body)
        copied = _Unreported().visit_body(copy.deepcopy(body)) or [ast.Pass(**at.loc)]
        off = ast.UnaryOp(op=ast.Not(), operand=at.load(ON), **at.loc)
        done = ast.Return(value=None, **at.loc)  # a bare return: async generators allow it
        return [*declared, ast.If(test=off, body=[*copied, done], orelse=[], **at.loc)]

    @staticmethod
    def _param_names(args: ast.arguments) -> list[str]:
        names = [a.arg for a in (*args.posonlyargs, *args.args)]
        if args.vararg is not None:
            names.append(args.vararg.arg)
        names += [a.arg for a in args.kwonlyargs]
        if args.kwarg is not None:
            names.append(args.kwarg.arg)
        return names

    @classmethod
    def _params(cls, at: At, args: ast.arguments) -> ast.Dict:
        return at.names(cls._param_names(args), secret_name)

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        nid = self._nid
        self._defaults(node.args)
        qual = self._qualname("<lambda>")
        blocker = next(
            (
                f"{n.id}()" if isinstance(n, ast.Name) else _LAMBDA_SUSPENDERS[type(n)]
                for n in ast.walk(node.body)
                if type(n) in _LAMBDA_SUSPENDERS
                or (isinstance(n, ast.Name) and n.id in _LAMBDA_BLOCKERS)
            ),
            None,
        )
        self.scopes.append(_Scope("lambda", qual))
        node.body = self.visit(node.body)
        self.scopes.pop()
        if blocker is not None:
            self.skipped.append(Skipped(qual, node.lineno, f"a lambda using {blocker}"))
            return node
        at = At(node)
        thunk = ast.Lambda(
            args=ast.arguments(
                posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[],
                kwarg=None, defaults=[],
            ),
            body=node.body,
            **at.loc,
        )  # fmt: skip
        copies = self._copies_allowed()
        unreported = _Unreported().visit(copy.deepcopy(node.body)) if copies else None
        reported = at.rt(
            "call", at.const(self.module), at.const(qual), self._params(at, node.args),
            at.const(nid), thunk,
        )  # fmt: skip
        if unreported is None:
            node.body = reported
        else:
            node.body = ast.IfExp(test=at.load(ON), body=reported, orelse=unreported, **at.loc)
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.bases = [self.visit(b) for b in node.bases]
        node.keywords = [self.visit(k) for k in node.keywords]
        qual = self._qualname(node.name)
        inner = scope_nodes(node.body)
        globs = {name for n, _ in inner if isinstance(n, ast.Global) for name in n.names}
        self.scopes.append(_Scope("class", qual, globals=globs))
        self._mark_docstring(node.body)
        node.body = self._block(node.body)
        self.scopes.pop()
        return node

    def _comprehension(self, node: ast.AST) -> ast.AST:
        self.scopes.append(_Scope("comprehension", self._scope().qualname))
        try:
            return self.generic_visit(node)
        finally:
            self.scopes.pop()

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    def visit_TypeAlias(self, node: ast.AST) -> ast.AST:
        return node  # 3.12+: its value is evaluated lazily in an annotation scope

    # -- returns and yields ----------------------------------------------------------

    def visit_Return(self, node: ast.Return) -> ast.AST:
        self.generic_visit(node)
        if self._scope().rv:
            at = At(node.value if node.value is not None else node)
            node.value = ast.NamedExpr(
                target=at.store(RV), value=node.value or at.const(None), **at.loc
            )
        return node

    def _suspending(self, stmt: ast.Expr | ast.Assign, y: ast.Yield) -> ast.stmt:
        at = At(y)
        value = self.visit(y.value) if y.value is not None else at.const(None)
        y.value = at.rt("suspend", at.load(CALL), value)
        return At(stmt).try_([stmt], [], [at.expr(at.rt("resume", at.load(CALL)))])

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        if isinstance(node.value, ast.Yield) and self._scope().generator:
            return self._suspending(node, node.value)
        self.generic_visit(node)
        return node

    def visit_Yield(self, node: ast.Yield) -> ast.AST:
        self.generic_visit(node)
        if self._scope().generator:  # only sync generators get here (see _function)
            at = At(node)
            value = node.value or at.const(None)
            return ast.YieldFrom(value=at.rt("yield_", at.load(CALL), value), **at.loc)
        return node

    def visit_YieldFrom(self, node: ast.YieldFrom) -> ast.AST:
        self.generic_visit(node)
        if self._scope().generator:
            at = At(node)
            node.value = at.rt("delegate", at.load(CALL), node.value)
        return node

    # -- values: assignments, branches, loops, match -----------------------------------

    def _snapshot(self, node: ast.stmt, names: list[str]) -> list[ast.stmt]:
        if self.level < _VALUES or not names:
            return []
        at = At(node)
        return [at.expr(self._value(at, "snap", node.lineno, self._nid, names))]

    def visit_Assign(self, node: ast.Assign) -> Any:
        if (
            self._scope().generator and isinstance(node.value, ast.Yield)
            and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        ):  # fmt: skip
            first: ast.stmt = self._suspending(node, node.value)
        else:
            self.generic_visit(node)
            first = node
        names: list[str] = []
        for t in node.targets:
            bound_names(t, names)
        return [first, *self._snapshot(node, names)]

    def visit_AugAssign(self, node: ast.AugAssign) -> Any:
        self.generic_visit(node)
        return [node, *self._snapshot(node, bound_names(node.target, []))]

    def visit_AnnAssign(self, node: ast.AnnAssign) -> Any:
        node.target = self.visit(node.target)  # the annotation is never touched
        if node.value is None:
            return node
        node.value = self.visit(node.value)
        return [node, *self._snapshot(node, bound_names(node.target, []))]

    def _with(self, node: ast.With | ast.AsyncWith) -> ast.AST:
        self.generic_visit(node)
        names: list[str] = []
        for item in node.items:
            if item.optional_vars is not None:
                bound_names(item.optional_vars, names)
        node.body[0:0] = self._snapshot(node, names)
        return node

    visit_With = visit_AsyncWith = _with

    def visit_If(self, node: ast.If) -> ast.AST:
        self.generic_visit(node)
        if self.level < _VALUES:
            return node
        nid, line = self._nid, node.lineno
        kind = "elif" if self.src.startswith(node, "elif") else "if"
        cond = self.src.segment(node.test)

        def rep(taken: bool, place: ast.AST) -> ast.stmt:
            at = At(place)
            return at.expr(self._value(at, "branch", line, nid, detail=(kind, cond, taken)))

        node.body.insert(0, rep(True, node.body[0]))
        node.orelse.insert(0, rep(False, node.orelse[0] if node.orelse else node))
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        self.generic_visit(node)
        if self.level < _VALUES:
            return node
        nid, cond = self._nid, self.src.segment(node.test)
        for attr, taken in (("body", True), ("orelse", False)):
            operand = getattr(node, attr)
            at = At(operand)
            detail = ("conditional", cond, taken)
            report = self._value(at, "branch", node.lineno, nid, detail=detail)
            setattr(node, attr, ast.BoolOp(op=ast.Or(), values=[report, operand], **at.loc))
        return node

    def _loop(self, node: ast.For | ast.AsyncFor | ast.While) -> Any:
        self.generic_visit(node)
        scope = self._scope()
        if self.level < _VALUES or scope.kind == "class":
            return node
        scope.loops += 1
        counter = LOOP.format(scope.loops)
        at = At(node.body[0])
        names: list[str] = []
        if isinstance(node, ast.While):
            kind = "while"
        else:
            kind = "async_for" if isinstance(node, ast.AsyncFor) else "for"
            names = bound_names(node.target, [])
        step = at.assign(
            counter,
            self._value(at, "loop", node.lineno, self._nid, names, (kind,), [at.load(counter)]),
        )
        node.body.insert(0, step)
        head = At(node)
        return [head.assign(counter, head.const(0)), node]

    visit_For = visit_AsyncFor = visit_While = _loop

    def visit_Match(self, node: ast.Match) -> ast.AST:
        nid = self._nid
        node.subject = self.visit(node.subject)
        scope = self._scope()
        instrument = self.level >= _VALUES and scope.kind != "class"
        for case in node.cases:
            cnid = self.ids.add(case.pattern, scope.qualname, "match_case", nid)
            self.parents.append(cnid)
            try:
                case.pattern = self.visit(case.pattern)
                if case.guard is not None:
                    case.guard = self.visit(case.guard)
                case.body = self._block(case.body)
            finally:
                self.parents.pop()
            if instrument:
                at = At(case.body[0])
                detail = (self.src.segment(case.pattern), True)
                rep = self._value(
                    at, "match", case.pattern.lineno, cnid, detail=detail, values=[at.load(MATCH)]
                )
                case.body.insert(0, at.expr(rep))
        if not instrument:
            return node
        if not (node.cases and irrefutable(node.cases[-1])):
            at = At(node)
            miss = self._value(
                at, "match", node.lineno, nid, detail=(None, False), values=[at.load(MATCH)]
            )
            wildcard = ast.MatchAs(pattern=None, name=None, **at.loc)
            node.cases.append(ast.match_case(pattern=wildcard, guard=None, body=[at.expr(miss)]))
        at = At(node.subject)
        node.subject = ast.NamedExpr(target=at.store(MATCH), value=node.subject, **at.loc)
        return node


def _handler(at: At, on_exc: ast.stmt) -> ast.ExceptHandler:
    """``except __tidescope_rt__.BaseException: <on_exc>; raise``."""
    return ast.ExceptHandler(
        type=at.attr("BaseException"),
        name=None,  # fail() takes it from sys.exc_info(): one local less per frame
        body=[on_exc, ast.Raise(exc=None, cause=None, **at.loc)],
        **at.loc,
    )


_DEFERRING: Final = (ast.For, ast.AsyncFor, ast.With, ast.AsyncWith, ast.ExceptHandler)


def _deferred_return(body: list[ast.stmt]) -> bool:
    """Whether a ``return`` of ``body``'s own scope can be followed by the program's code
    before the function is left: one inside a ``with`` (``__exit__``), a ``try`` with a
    ``finally`` (which may also replace the value or raise), a ``for`` (dropping the
    iterator may close a generator) or an ``except`` (dropping the exception may free
    objects). Such a function keeps the ``finally`` that reports its exit, so the calls
    made there stay its children and the exit stays the last thing reported."""

    def walk(node: ast.AST, deferring: bool) -> bool:
        if isinstance(node, (*_SCOPES, ast.Lambda)):
            return False
        if isinstance(node, ast.Return):
            return deferring
        deferring = (
            deferring
            or isinstance(node, _DEFERRING)
            or bool(isinstance(node, (ast.Try, *_TRY_STAR)) and getattr(node, "finalbody", None))
        )
        return any(walk(c, deferring) for c in ast.iter_child_nodes(node))

    return any(walk(s, False) for s in body)


_SCOPES: Final = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_TRY_STAR: Final[tuple[type[ast.AST], ...]] = (ast.TryStar,) if hasattr(ast, "TryStar") else ()


# ---------------------------------------------------------------------------------------
# the unreported copy of a function's body

_LOOP_PREFIX: Final = LOOP.split("{")[0]


def _value_call(node: ast.AST | None) -> bool:
    """``node`` is ``__tidescope_value__(...)``."""
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == VALUE


def _rt_call(node: ast.AST | None, helper: str | frozenset[str]) -> bool:
    """``node`` is ``__tidescope_rt__.<helper>(...)``."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == RT
        and (node.func.attr == helper if isinstance(helper, str) else node.func.attr in helper)
    )


def _hoist_declarations(body: list[ast.stmt]) -> list[ast.stmt]:
    """Replace each ``global``/``nonlocal`` of ``body``'s own scope by ``pass`` and return
    them, to be put first: a declaration holds for its whole scope wherever it stands, and
    code that compiled used none of its names before it, so the meaning is the same."""
    hoisted: list[ast.stmt] = []
    for node, parent in scope_nodes(body):
        if not isinstance(node, (ast.Global, ast.Nonlocal)):
            continue
        hoisted.append(node)
        for stmts in (body, *(getattr(parent, f, None) for f in ("body", "orelse", "finalbody"))):
            if isinstance(stmts, list) and any(s is node for s in stmts):
                i = next(i for i, s in enumerate(stmts) if s is node)
                stmts[i] = ast.Pass(**At(node).loc)
                break
    return hoisted


_COPY_DEPTH: Final = 3
"""Enclosing functions past which a function gets no unreported copy (see
:meth:`_Rewriter._copies_allowed`)."""


class _Unreported(ast.NodeTransformer):
    """Takes out of a rewritten body (a copy: it is changed in place) what the rewrite
    injected in its own scope: reports, loop counters, the walrus on returns and on a
    ``match`` subject, the added ``case _``, and the suspension protocol around yields.
    Nested functions, lambdas and classes keep theirs: they are calls of their own.
    """

    def visit_body(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for s in body:
            r = self.visit(s)
            if r is not None:
                out.extend(r if isinstance(r, list) else [r])
        return out

    def visit_FunctionDef(self, node: ast.AST) -> ast.AST:
        return node

    visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = visit_FunctionDef

    def visit_Expr(self, node: ast.Expr) -> ast.AST | None:
        if _value_call(node.value):
            return None
        return self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> ast.AST | None:
        target = node.targets[0]
        if isinstance(target, ast.Name) and target.id.startswith(_LOOP_PREFIX):
            return None
        return self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> Any:
        final = node.finalbody
        if (
            not node.handlers and len(final) == 1 and isinstance(final[0], ast.Expr)
            and _rt_call(final[0].value, "resume")
        ):  # fmt: skip
            return self.visit_body(node.body)  # the try around a statement's yield
        return self.generic_visit(node)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> Any:
        if node.target.id in (RV, MATCH):
            return self.visit(node.value)
        return self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> Any:
        if len(node.values) == 2 and _value_call(node.values[0]):
            return self.visit(node.values[1])
        return self.generic_visit(node)

    def visit_Yield(self, node: ast.Yield) -> ast.AST:
        if isinstance(node.value, ast.Call) and _rt_call(node.value, "suspend"):
            node.value = node.value.args[1]
        return self.generic_visit(node)

    def visit_YieldFrom(self, node: ast.YieldFrom) -> ast.AST:
        value = node.value
        if isinstance(value, ast.Call) and _rt_call(value, "yield_"):
            return self.generic_visit(ast.Yield(value=value.args[1], **At(node).loc))
        if isinstance(value, ast.Call) and _rt_call(value, "delegate"):
            node.value = value.args[1]
        return self.generic_visit(node)

    def visit_match_case(self, node: ast.match_case) -> ast.AST | None:
        self.generic_visit(node)
        return node if node.body else None  # only the added case _ had nothing but a report
