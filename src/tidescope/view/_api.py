"""The viewer's JSON answers: each a few bounded queries over the trace's index."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from tidescope.query import TraceIndex

__all__ = ["Api", "NotFound"]

MAX_SLICES: Final = 4000  # slices one timeline answer holds; the rest is aggregated
MAX_BUCKETS: Final = 2000  # aggregation buckets across the visible window
MAX_TRACKS: Final = 500
PAGE: Final = 50  # rows of a list (exceptions, search, requests)
MAX_CALL_EVENTS: Final = 2000  # recorded values shown on one call's page
MAX_CHILDREN: Final = 200
MAX_CHAIN: Final = 64  # frames of an exception's call chain
MAX_FUNCTIONS: Final = 200_000  # function names a search by name looks through
MAX_NAMES: Final = 500  # functions one search by name returns calls of

_CALL_COLUMNS: Final = (
    "call_id, parent_id, pid, thread, task, module, qualname, ast_node_id, start_ns, end_ns, "
    "duration_ns, args, return_value, exception_type, exception_message, exit_reason, "
    "correlation_id"
)
_JSON_FIELDS: Final = frozenset({"args", "return_value", "value", "data", "argv"})
_ID_FIELDS: Final = frozenset(
    {"call_id", "parent_id", "correlation_id", "thread", "task", "thread_id", "task_id"}
    | {"event_id", "seed"}
)
_REQUEST_EVENTS: Final = (
    "http_request_start",
    "http_request_complete",
    "controller_entry",
    "controller_exit",
    "db_query_start",
    "db_query_complete",
    "remote_call_send",
    "remote_call_receive",
    "error",
)


class NotFound(LookupError):
    """The thing asked for is not in the trace."""


def _jsonable(name: str, value: Any) -> Any:
    """A column's value as the page gets it: JSON text parsed, ids as strings (a JavaScript
    number holds integers exactly only up to 2**53)."""
    if value is None:
        return None
    if name in _JSON_FIELDS and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if name in _ID_FIELDS:
        return str(value)
    return value


class Api:
    """Answers the viewer's questions from one trace index (``tidescope.query``).

    The index runs each query on its own cursor, so the server's threads ask at once.
    """

    def __init__(self, index: TraceIndex, directory: str | os.PathLike[str]) -> None:
        self._index = index
        self._directory = Path(directory)
        self._summary: dict[str, Any] | None = None
        self._summary_lock = threading.Lock()
        self._names: list[tuple[Any, Any]] | None = None

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        columns, rows = self._index.sql(query, params)
        return [{c: _jsonable(c, v) for c, v in zip(columns, row, strict=True)} for row in rows]

    # -- summary -------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Processes with their loss (drops, internal errors, damage), the trace's time span
        and its tracks (process, thread, task) with their call counts."""
        with self._summary_lock:  # made once, by whichever thread asks first
            if self._summary is None:
                self._summary = self._make_summary()
            return self._summary

    def _make_summary(self) -> dict[str, Any]:
        processes = self._rows(
            "SELECT file, pid, header -> 'argv' AS argv, complete, torn, damaged, "
            "events_written, dropped_events, internal_errors FROM files "
            "WHERE kind = 'events' ORDER BY file"
        )
        span = self._rows(
            "SELECT min(start_ns) AS t0, max(coalesce(end_ns, start_ns)) AS t1, "
            "count(*) AS calls, count(exception_type) AS raised FROM calls"
        )[0]
        tracks = self._rows(
            "SELECT pid, thread, task, count(*) AS calls, min(start_ns) AS t0, "
            "max(coalesce(end_ns, start_ns)) AS t1 FROM calls GROUP BY pid, thread, task "
            f"ORDER BY pid, t0, thread, task NULLS FIRST LIMIT {MAX_TRACKS}"
        )
        return {
            "directory": str(self._directory),
            "processes": processes,
            "dropped_events": sum(p.get("dropped_events") or 0 for p in processes),
            "internal_errors": sum(p.get("internal_errors") or 0 for p in processes),
            "damaged_chunks": sum(p.get("damaged") or 0 for p in processes),
            **span,
            "tracks": tracks,
        }

    # -- timeline ------------------------------------------------------------------------

    def slices(self, t0: int, t1: int, width: int) -> dict[str, Any]:
        """Calls overlapping ``[t0, t1)`` that last at least a pixel of ``width``, the
        longest first (so a slice's callers are always there too), and per track and pixel
        bucket how many shorter calls start there."""
        width = max(1, min(width, MAX_BUCKETS))
        t1 = max(t1, t0 + 1)
        min_ns = max(1, (t1 - t0) // width)
        slices = self._rows(
            "SELECT call_id, parent_id, pid, thread, task, module, qualname, start_ns, "
            "end_ns, duration_ns, exception_type FROM calls "
            "WHERE start_ns < ? AND coalesce(end_ns, 9223372036854775807) > ? "
            "AND coalesce(duration_ns, 9223372036854775807) >= ? "
            f"ORDER BY coalesce(duration_ns, 9223372036854775807) DESC LIMIT {MAX_SLICES}",
            (t1, t0, min_ns),
        )
        hidden = self._rows(
            "SELECT pid, thread, task, (start_ns - ?) // ? AS bucket, count(*) AS calls "
            "FROM calls WHERE start_ns >= ? AND start_ns < ? AND duration_ns < ? "
            f"GROUP BY ALL ORDER BY calls DESC LIMIT {MAX_BUCKETS * 4}",
            (t0, min_ns, t0, t1, min_ns),
        )
        return {"t0": t0, "t1": t1, "min_ns": min_ns, "slices": slices, "hidden": hidden}

    # -- one call ------------------------------------------------------------------------

    def _call(self, call_id: int) -> dict[str, Any]:
        rows = self._rows(
            f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_id = ? LIMIT 1", (call_id,)
        )
        if not rows:
            raise NotFound(f"no call {call_id}")
        return rows[0]

    def call(self, call_id: int) -> dict[str, Any]:
        """One call: its row, the function's source with the values recorded in this call
        at their nodes, its caller, its first callees and the previous and next calls of the
        same function."""
        call = self._call(call_id)
        node = self._node(call.get("ast_node_id"))
        events = self._rows(
            "SELECT event_type, ast_node_id, timestamp, data FROM events "
            "WHERE call_id = ? AND event_type NOT IN ('function_entry', 'function_exit') "
            f"ORDER BY timestamp LIMIT {MAX_CALL_EVENTS + 1}",
            (call_id,),
        )
        truncated = len(events) > MAX_CALL_EVENTS
        same = "module IS NOT DISTINCT FROM ? AND qualname IS NOT DISTINCT FROM ?"
        key = (call["module"], call["qualname"])
        prev = self._rows(
            f"SELECT call_id FROM calls WHERE {same} AND (start_ns, call_id) < (?, ?) "
            "ORDER BY start_ns DESC, call_id DESC LIMIT 1",
            (*key, call["start_ns"], call_id),
        )
        nxt = self._rows(
            f"SELECT call_id FROM calls WHERE {same} AND (start_ns, call_id) > (?, ?) "
            "ORDER BY start_ns, call_id LIMIT 1",
            (*key, call["start_ns"], call_id),
        )
        position = self._rows(
            f"SELECT count(*) FILTER (WHERE start_ns < ?) + 1 AS n, count(*) AS of "
            f"FROM calls WHERE {same}",
            (call["start_ns"], *key),
        )[0]
        parent = None
        if call.get("parent_id") is not None:
            found = self._rows(
                "SELECT call_id, module, qualname FROM calls WHERE call_id = ? LIMIT 1",
                (int(call["parent_id"]),),
            )
            parent = found[0] if found else None
        children = self._rows(
            "SELECT call_id, module, qualname, duration_ns, exception_type FROM calls "
            f"WHERE parent_id = ? ORDER BY start_ns LIMIT {MAX_CHILDREN}",
            (call_id,),
        )
        return {
            "call": call,
            "source": node,
            "events": events[:MAX_CALL_EVENTS],
            "events_truncated": truncated,
            "prev": prev[0]["call_id"] if prev else None,
            "next": nxt[0]["call_id"] if nxt else None,
            "position": position,
            "parent": parent,
            "children": children,
        }

    def _node(self, node_id: Any) -> dict[str, Any] | None:
        """The node ``node_id`` (a function's), with its source text from the node table, or
        from its file's text in the index when the table has none."""
        if node_id is None:
            return None
        rows = self._rows("SELECT * FROM nodes WHERE id = ? LIMIT 1", (node_id,))
        if not rows:
            return None
        node = rows[0]
        source = node.get("source")
        if not isinstance(source, str):
            source = self._source_lines(node.get("file"), node.get("line"), node.get("end_line"))
        elif isinstance(node.get("column"), int):
            source = " " * node["column"] + source  # the span starts at the node's column
        node["source"] = source
        return node

    def _source_lines(self, file: Any, first: Any, last: Any) -> str | None:
        """Lines ``first``..``last`` of ``file`` as the index keeps it (``sources``)."""
        if type(first) is not int:
            return None
        rows = self._rows("SELECT text FROM sources WHERE file = ? LIMIT 1", (file,))
        if not rows or not isinstance(rows[0]["text"], str):
            return None
        last = last if type(last) is int else first
        return "\n".join(rows[0]["text"].splitlines()[first - 1 : last])

    # -- exceptions ----------------------------------------------------------------------

    def exceptions(self, offset: int = 0) -> dict[str, Any]:
        """Each raise, once: the innermost call that ended with an exception none of its
        callees ended with, with its call chain and the arguments at each frame."""
        # a callee that ended with the same exception is itself among the raised calls,
        # so the anti-join looks there, not through every call
        raised = self._rows(
            f"WITH raised AS (SELECT {_CALL_COLUMNS}, exception FROM calls "
            "WHERE exception_type IS NOT NULL) "
            "SELECT * FROM raised c WHERE NOT EXISTS (SELECT 1 FROM raised k "
            "WHERE k.parent_id = c.call_id AND k.pid = c.pid "
            "AND k.exception_type IS NOT DISTINCT FROM c.exception_type "
            "AND k.exception_message IS NOT DISTINCT FROM c.exception_message) "
            f"ORDER BY start_ns LIMIT {PAGE + 1} OFFSET ?",
            (offset,),
        )
        more = len(raised) > PAGE
        raised = raised[:PAGE]
        chains: dict[str, list[dict[str, Any]]] = {r["call_id"]: [] for r in raised}
        if raised:
            seeds = ", ".join("(?::BIGINT)" for _ in raised)
            frames = self._rows(
                f"WITH RECURSIVE seeds(id) AS (VALUES {seeds}), "
                "chain(seed, call_id, parent_id, depth) AS ("
                "SELECT id, id, (SELECT parent_id FROM calls WHERE call_id = id LIMIT 1), 0 "
                "FROM seeds UNION ALL "
                "SELECT chain.seed, c.call_id, c.parent_id, chain.depth + 1 "
                "FROM chain JOIN calls c ON c.call_id = chain.parent_id "
                f"WHERE chain.depth < {MAX_CHAIN}) "
                "SELECT chain.seed, chain.depth, c.call_id, c.module, c.qualname, c.args, "
                "c.ast_node_id FROM chain JOIN calls c ON c.call_id = chain.call_id "
                "WHERE chain.depth > 0 ORDER BY chain.seed, chain.depth",
                [int(r["call_id"]) for r in raised],
            )
            for f in frames:
                chains.setdefault(f.pop("seed"), []).append(f)
        places = self._places({r["ast_node_id"] for r in raised})
        for r in raised:
            r["chain"] = chains.get(r["call_id"], [])
            # the raise's own line when the trace has it, else the function's
            r["place"] = _raised_at(r.pop("exception", None)) or places.get(r["ast_node_id"])
        return {"offset": offset, "more": more, "exceptions": raised}

    def _places(self, node_ids: set[Any]) -> dict[Any, dict[str, Any]]:
        ids = sorted(i for i in node_ids if i is not None)
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        rows = self._rows(f"SELECT id, file, line FROM nodes WHERE id IN ({marks})", ids)
        return {r["id"]: {"file": r["file"], "line": r["line"]} for r in rows}

    # -- search --------------------------------------------------------------------------

    def search(self, kind: str, text: str, offset: int = 0) -> dict[str, Any]:
        """Calls whose function name (``kind`` "function"), argument or return value
        ("value") or exception type or message ("exception") contains ``text``, any case."""
        where = {
            "function": "",
            "value": "(contains(lower(CAST(args AS VARCHAR)), lower(?)) "
            "OR contains(lower(CAST(return_value AS VARCHAR)), lower(?)))",
            "exception": "exception_type IS NOT NULL AND (contains(lower(exception_type), "
            "lower(?)) OR contains(lower(exception_message), lower(?)))",
        }.get(kind)
        if where is None:
            raise NotFound(f"no search by '{kind}'")
        params: list[Any] = [text] * where.count("?")
        if kind == "function":  # the names are matched once each, not once per call
            names = [n for n in self._functions() if text.lower() in f"{n[0]}.{n[1]}".lower()]
            names = names[:MAX_NAMES] or [(None, None)]
            # plain equalities: DuckDB filters a row IN list far slower
            where = (
                "("
                + " OR ".join(
                    "(module IS NULL AND qualname = ?)"
                    if m is None
                    else "(module = ? AND qualname = ?)"
                    for m, _ in names
                )
                + ")"
            )
            params = [part for m, q in names for part in ((q,) if m is None else (m, q))]
        found = self._rows(
            f"SELECT {_CALL_COLUMNS} FROM calls WHERE {where} "
            f"ORDER BY start_ns LIMIT {PAGE + 1} OFFSET ?",
            (*params, offset),
        )
        return {
            "kind": kind,
            "q": text,
            "offset": offset,
            "more": len(found) > PAGE,
            "calls": found[:PAGE],
        }

    def _functions(self) -> list[tuple[Any, Any]]:
        """Every function with calls in the trace (module, qualname), read once."""
        if self._names is None:
            _, rows = self._index.sql(
                f"SELECT DISTINCT module, qualname FROM calls LIMIT {MAX_FUNCTIONS}"
            )
            self._names = [(m, q) for m, q in rows]
        return self._names

    # -- requests ------------------------------------------------------------------------

    def requests(self, offset: int = 0) -> dict[str, Any]:
        """HTTP requests received, each with what happened under its correlation id in any
        process: its response, database queries, outgoing calls and errors."""
        starts = self._rows(
            "SELECT event_id, pid, thread_id, correlation_id, timestamp, data FROM events "
            "WHERE event_type = 'http_request_start' "
            f"ORDER BY timestamp LIMIT {PAGE + 1} OFFSET ?",
            (offset,),
        )
        more = len(starts) > PAGE
        starts = starts[:PAGE]
        keys: dict[str, str] = {}
        for s in starts:
            for form in _correlation_forms(s["correlation_id"]):
                keys[form] = s["correlation_id"]
        related: dict[str, list[dict[str, Any]]] = {}
        if keys:
            marks = ", ".join("?" for _ in keys)
            kinds = ", ".join(f"'{k}'" for k in _REQUEST_EVENTS if k != "http_request_start")
            for e in self._rows(
                "SELECT event_id, pid, event_type, correlation_id, call_id, timestamp, data "
                f"FROM events WHERE correlation_id IN ({marks}) "
                f"AND event_type IN ({kinds}) ORDER BY timestamp LIMIT {PAGE * 40}",
                list(keys),
            ):
                related.setdefault(keys[str(e["correlation_id"])], []).append(e)
        for s in starts:
            s["related"] = related.get(s["correlation_id"], [])
        return {"offset": offset, "more": more, "requests": starts}


def _correlation_forms(cid: Any) -> list[str]:
    """The spellings one correlation has across processes: tidescope's own ids (ints) travel
    as the 32-hex-digit trace id of ``traceparent`` (integrations/_propagation.py)."""
    if cid is None:
        return []
    text = str(cid)
    forms = [text]
    if len(text) == 32:  # a trace id (which may be all decimal digits too)
        try:
            forms.append(str(int(text, 16)))
        except ValueError:
            pass
    elif text.isdigit():
        forms.append(format(int(text), "032x"))
    return forms


def _raised_at(exception: Any) -> dict[str, Any] | None:
    """The file and line an exception exit recorded as its raise's place (``where``)."""
    try:
        where = json.loads(exception).get("where") if isinstance(exception, str) else None
    except (ValueError, AttributeError):
        return None
    if isinstance(where, dict) and isinstance(where.get("line"), int):
        return {"file": where.get("file"), "line": where["line"]}
    return None
