"""SQLAlchemy: engine event listeners that report every cursor execution as a query.

One line per engine::

    from tidescope.integrations.sqlalchemy import instrument_engine
    instrument_engine(engine)          # an Engine or an AsyncEngine

Each statement sent to the database (``executemany`` batches included) becomes a
``db_query_start`` event (statement, bound parameters, ``{"query_id", "executemany"}``,
the repo ``"<dialect>:<database>"``) and a ``db_query_complete`` event (statement,
parameters, ``{"query_id", "rowcount"}`` or ``{"query_id", "error"}``, duration in µs). A
failing statement also gives an ``error`` event; the exception reaches the application
unchanged. Both events carry the surrounding correlation: the request id bound by a web
integration or :func:`~tidescope.capture.context.bind_correlation_id`, else the
outermost traced call. Values go through the bounded snapshot like every other event.

The listeners never change a statement or its parameters and never raise: a failure
inside them is counted in ``tidescope.stats()["internal_errors"]``. With capture off, a
query costs the listeners two calls and one check.
"""

from __future__ import annotations

import contextvars
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tidescope.capture.context import enabled
from tidescope.capture.runtime.core import report_error
from tidescope.integrations import _db, count_error

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["instrument_engine", "is_instrumented", "uninstrument_engine"]

_QUERY_ATTR = "_tidescope_query"  # the running query, on SQLAlchemy's execution context
# a statement run with no execution context (SQLAlchemy allows it for defaults/sequences)
_contextless: contextvars.ContextVar[tuple[Any, _db.Query] | None] = contextvars.ContextVar(
    "tidescope_sqlalchemy_query", default=None
)

_lock = threading.Lock()
_instrumented: weakref.WeakKeyDictionary[Any, _Listeners] = weakref.WeakKeyDictionary()


class _Listeners:
    """The three listeners of one engine, and its repo name."""

    __slots__ = ("after", "before", "handle_error", "repo")

    def __init__(self, repo: str) -> None:
        self.repo = repo
        self.before = self._make_before()
        self.after = _after_cursor_execute
        self.handle_error = self._make_handle_error()

    def by_event(self) -> tuple[tuple[str, Callable[..., Any]], ...]:
        """``(event name, listener)`` pairs, as ``sqlalchemy.event.listen`` takes them."""
        return (
            ("before_cursor_execute", self.before),
            ("after_cursor_execute", self.after),
            ("handle_error", self.handle_error),
        )

    def _make_before(self) -> Callable[..., None]:
        repo = self.repo

        def before_cursor_execute(
            conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, many: Any
        ) -> None:
            try:
                if not enabled():  # capture off here: no redaction work either
                    return
                # a driver with positional parameters gets them in the compiled order
                names = getattr(getattr(context, "compiled", None), "positiontup", None)
                if names and type(parameters) in (tuple, list):
                    parameters = _db.redact_positional(parameters, names, bool(many))
                query = _db.start_query(statement, parameters, bool(many), repo)
                if query is None:  # capture is off here
                    return
                if context is not None:
                    setattr(context, _QUERY_ATTR, query)
                else:
                    _contextless.set((cursor, query))
            except Exception as exc:
                count_error(exc)

        return before_cursor_execute

    def _make_handle_error(self) -> Callable[[Any], None]:
        repo = self.repo

        def handle_error(exception_context: Any) -> None:
            try:
                if not enabled():
                    return
                ec = exception_context
                # the exception the application will get: SQLAlchemy's wrapper of a driver
                # error (not raised yet, so the driver's traceback), or the original itself
                original = ec.original_exception
                error = ec.sqlalchemy_exception
                if error is None:
                    error = original
                trace = getattr(original, "__traceback__", None)
                # SQLAlchemy 2.1 declares but does not set ExceptionContext.cursor
                query = _take_query(ec.execution_context, getattr(ec, "cursor", None))
                if query is not None:
                    _db.fail_query(query, error, trace)
                else:  # no statement of ours ran: connecting, or another listener failed
                    report_error(error, {"repo": repo, "statement": ec.statement}, trace)
            except Exception as exc:
                count_error(exc)
            # returning None keeps SQLAlchemy's own exception

        return handle_error


def _take_query(context: Any, cursor: Any) -> _db.Query | None:
    """The query started on ``context`` (or, without one, on ``cursor``), forgotten here."""
    if context is not None:
        query: _db.Query | None = getattr(context, _QUERY_ATTR, None)
        if query is not None:
            setattr(context, _QUERY_ATTR, None)
        return query
    pending = _contextless.get()
    if pending is None or (cursor is not None and pending[0] is not cursor):
        return None
    _contextless.set(None)
    return pending[1]


def _after_cursor_execute(
    conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, many: Any
) -> None:
    try:
        query = _take_query(context, cursor)
        if query is not None:
            _db.finish_query(query, _db.rowcount_of(cursor))
    except Exception as exc:
        count_error(exc)


def _sync_engine(engine: Any) -> Any:
    from sqlalchemy.engine import Engine  # noqa: PLC0415 - imported only when used

    # an AsyncEngine runs its statements on a sync Engine inside greenlets
    sync = getattr(engine, "sync_engine", engine)
    if not isinstance(sync, Engine):
        raise TypeError(
            f"instrument_engine() takes a SQLAlchemy Engine or AsyncEngine, got "
            f"{type(engine).__name__}"
        )
    return sync


def instrument_engine(engine: Engine | AsyncEngine, *, repo: str | None = None) -> bool:
    """Report every statement ``engine`` runs as a query start and complete.

    Args:
        engine: an ``Engine`` or an ``AsyncEngine`` (its ``sync_engine`` is instrumented).
        repo: the name events give the database; default ``"<dialect>:<database>"``.

    Returns:
        True if the listeners were added now; False if ``engine`` was already instrumented
        or adding them failed (the failure is counted, the engine works as before).

    Raises:
        TypeError: ``engine`` is not a SQLAlchemy engine.
    """
    sync = _sync_engine(engine)
    try:
        from sqlalchemy import event  # noqa: PLC0415

        with _lock:
            if sync in _instrumented:
                return False
            if repo is None:
                dialect, database = sync.dialect.name, sync.url.database
                if not database and dialect == "sqlite":
                    database = ":memory:"
                repo = _db.repo_name(dialect, database)
            listeners = _Listeners(repo)
            added: list[tuple[str, Callable[..., Any]]] = []
            try:
                for name, fn in listeners.by_event():
                    event.listen(sync, name, fn)
                    added.append((name, fn))
            except Exception:
                for name, fn in added:
                    event.remove(sync, name, fn)
                raise
            _instrumented[sync] = listeners
        return True
    except Exception as exc:
        count_error(exc)
        return False


def uninstrument_engine(engine: Engine | AsyncEngine) -> bool:
    """Remove what :func:`instrument_engine` added; True if ``engine`` was instrumented.

    Raises:
        TypeError: ``engine`` is not a SQLAlchemy engine.
    """
    sync = _sync_engine(engine)
    try:
        from sqlalchemy import event  # noqa: PLC0415

        with _lock:
            listeners = _instrumented.pop(sync, None)
            if listeners is None:
                return False
            for name, fn in listeners.by_event():
                event.remove(sync, name, fn)
        return True
    except Exception as exc:
        count_error(exc)
        return False


def is_instrumented(engine: Engine | AsyncEngine) -> bool:
    """True if ``engine`` (or an AsyncEngine's sync engine) reports its queries."""
    return _sync_engine(engine) in _instrumented
