"""Query reporting shared by the database integrations: a start, then a complete or an error.

Each query gets a ``query_id`` (from the event id sequence, so unique in the process) that
its start event carries in ``metadata`` and its complete event in ``result``; both carry
the surrounding correlation (a bound request id, else the outermost traced call). Every
function here fails open: a failure is counted and the query runs on as if unobserved.
"""

from __future__ import annotations

from time import perf_counter_ns
from typing import Any, TypeAlias

from tidescope.capture._core import next_id
from tidescope.capture._redact import on_configure, redacted, secret_name, strip_url
from tidescope.capture.context import enabled
from tidescope.capture.runtime.core import report_error
from tidescope.capture.runtime.database import report_db_query_complete, report_db_query_start
from tidescope.integrations import count_error

__all__ = [
    "Query",
    "capturing",
    "fail_query",
    "finish_query",
    "redact_positional",
    "repo_name",
    "rowcount_of",
    "secret_places",
    "start_query",
]

Query: TypeAlias = tuple[int, Any, Any, Any, int]
"""A started query: ``(query_id, statement, params, repo, start_ns)``."""


def capturing() -> bool:
    """True if a query reported here now would be recorded (the cheap check to make first)."""
    try:
        return enabled()
    except Exception as exc:
        count_error(exc)
        return False


def start_query(statement: Any, params: Any, executemany: bool, repo: Any) -> Query | None:
    """Report ``statement`` about to run; returns what :func:`finish_query` or
    :func:`fail_query` takes, or None when capture is off here (report nothing more)."""
    try:
        if not enabled():
            return None
        qid = next_id()
        report_db_query_start(
            None, statement, params, {"query_id": qid, "executemany": executemany}, repo
        )
        # timed after the report, so the duration is the database's, not ours
        return qid, statement, params, repo, perf_counter_ns()
    except Exception as exc:
        count_error(exc)
        return None


def finish_query(query: Query, rowcount: Any) -> None:
    """Report that ``query`` completed with ``rowcount`` (the cursor's, -1 when unknown)."""
    end = perf_counter_ns()
    try:
        qid, statement, params, _, start = query
        report_db_query_complete(
            None, statement, params, {"query_id": qid, "rowcount": rowcount}, (end - start) / 1000
        )
    except Exception as exc:
        count_error(exc)


def fail_query(query: Query, error: BaseException, stacktrace: Any = None) -> None:
    """Report that ``query`` raised ``error``: its complete event and an error event
    (``stacktrace``: a traceback, when ``error`` has not been raised yet)."""
    end = perf_counter_ns()
    try:
        qid, statement, params, repo, start = query
        report_db_query_complete(
            None, statement, params, {"query_id": qid, "error": error}, (end - start) / 1000
        )
        report_error(error, {"query_id": qid, "repo": repo}, stacktrace)
    except Exception as exc:
        count_error(exc)


_MASKS_LIMIT = 1024
_masks: dict[int, tuple[Any, tuple[bool, ...] | None]] = {}
"""id(names) -> (names, which places are secret, or None when none is): the names of a
compiled statement are asked once per statement, not once per query. The names object is
held, so its id cannot be reused while its entry lives; forgotten when the pattern changes."""
on_configure(_masks.clear)


def secret_places(names: Any) -> tuple[bool, ...] | None:
    """Which of ``names`` (SQLAlchemy's ``positiontup``, the same object for every run of a
    compiled statement) are secret, or None when none is; remembered per ``names`` object."""
    got = _masks.get(id(names))
    if got is not None and got[0] is names:
        return got[1]
    secret = tuple(type(n) is str and secret_name(n) for n in names)
    mask = secret if any(secret) else None
    if len(_masks) >= _MASKS_LIMIT:
        _masks.clear()
    _masks[id(names)] = (names, mask)
    return mask


def redact_positional(params: Any, names: Any, many: bool) -> Any:
    """Positional ``params`` (a sequence, or a list of them when ``many``) whose places
    are named ``names`` (SQLAlchemy's ``positiontup``), with the values of secret names
    replaced by the redaction marker: a copy for the trace, the driver gets the original.
    Returned as it is when no name is secret or the places do not line up."""
    secret = secret_places(names)
    if secret is None:
        return params

    def one(row: Any) -> Any:
        if type(row) not in (tuple, list) or len(row) != len(secret):
            return row
        return tuple(redacted(v) if s else v for v, s in zip(row, secret, strict=True))

    if many:
        return [one(row) for row in params] if type(params) in (tuple, list) else params
    return one(params)


def repo_name(dialect: Any, database: Any) -> str:
    """``"postgresql:shop"``: the dialect and the database, the repo every event names.

    A database given as a URL or DSN loses its credentials (``user:password@``, ``?key=``).
    """
    name = str(dialect)
    return f"{name}:{strip_url(str(database))}" if database else name


def rowcount_of(cursor: Any) -> Any:
    """``cursor.rowcount``, or None if reading it fails (counted)."""
    try:
        return cursor.rowcount
    except Exception as exc:
        count_error(exc)
        return None
