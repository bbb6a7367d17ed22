"""Building the query index: a trace directory bulk-loaded into a DuckDB file, then derived.

The reader's C decoder gives each chunk's events as envelope tuples; a batch of them is
turned into Arrow columns (the data as JSON text, one C call per event with orjson) and
appended to ``events`` in one statement, so no Python code runs per field of an event.
Everything else (``calls`` pairs entries with exits by a join, ``values`` unnests the
recorded variables) is SQL over ``events``, which DuckDB runs in bounded memory, spilling
to its temporary directory: a call whose exit never came stays a row with a NULL exit.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from tidescope.events import jsonable
from tidescope.export._output import FILE_MODE
from tidescope.export.reader import Trace, TraceFile

__all__ = ["INDEX_VERSION", "build", "fingerprint"]

INDEX_VERSION: Final = 1
"""The schema of the index; an index of another version is rebuilt."""
BATCH: Final = 1 << 18
"""Events appended to ``events`` in one statement (bounds the builder's own memory)."""
MEMORY_LIMIT: Final = "1GB"
"""DuckDB's memory while building; past it, joins and sorts spill to a private directory."""
SOURCE_LIMIT: Final = 4 << 20
"""Bytes of a source file kept in ``sources``; a larger file is left out."""

_EVENT_COLUMNS: Final = (
    ("event_id", "BIGINT"),
    ("timestamp", "BIGINT"),
    ("wall_time", "BIGINT"),
    ("node", "VARCHAR"),
    ("pid", "BIGINT"),
    ("thread_id", "BIGINT"),
    ("task_id", "BIGINT"),
    ("correlation_id", "VARCHAR"),
    ("parent_id", "BIGINT"),
    ("call_id", "BIGINT"),
    ("ast_node_id", "VARCHAR"),
    ("event_type", "VARCHAR"),
    ("data", "JSON"),
)
_INT_COLUMNS: Final = frozenset(i for i, (_, kind) in enumerate(_EVENT_COLUMNS) if kind == "BIGINT")
_NODE_COLUMNS: Final = (
    ("id", "VARCHAR"),
    ("module", "VARCHAR"),
    ("file", "VARCHAR"),
    ("line", "BIGINT"),
    ("column", "BIGINT"),
    ("end_line", "BIGINT"),
    ("end_column", "BIGINT"),
    ("node_type", "VARCHAR"),
    ("parent_id", "VARCHAR"),
    ("source", "VARCHAR"),
)
_INT64: Final = (-(1 << 63), (1 << 63) - 1)

# calls: one row per entry, its exit joined by (node, pid, call_id) (each side's data parsed
# once: a path at a time parsed it 7 times, 2.8x the cost, measured); self time is the
# duration less the durations of the calls it made in its own thread and task (a task a
# call started runs beside it, not inside it).
_CALLS_SQL: Final = """
CREATE TABLE calls AS
WITH en AS (
    SELECT *, json_extract(data, ['$.module', '$.function', '$.args']) AS j
    FROM events WHERE event_type = 'function_entry'
), ex AS (
    SELECT *,
        json_extract(data, ['$.return_value', '$.exception', '$.duration_ns', '$.exit_reason'])
        AS j
    FROM events WHERE event_type = 'function_exit'
), c AS (
    SELECT
        en.call_id, en.parent_id, en.node, en.pid, en.thread_id AS thread, en.task_id AS task,
        en.j[1] ->> '$' AS module, en.j[2] ->> '$' AS qualname, en.ast_node_id,
        en.timestamp AS start_ns, ex.timestamp AS end_ns,
        coalesce(TRY_CAST(ex.j[3] AS BIGINT), ex.timestamp - en.timestamp) AS duration_ns,
        en.j[3] AS args, ex.j[1] AS return_value,
        CASE WHEN json_type(ex.j[2]) = 'OBJECT' THEN ex.j[2] END AS exception,
        ex.j[4] ->> '$' AS exit_reason, en.correlation_id,
        en.event_id AS entry_event_id, ex.event_id AS exit_event_id
    FROM en LEFT JOIN ex
        ON ex.call_id = en.call_id AND ex.pid = en.pid AND ex.node IS NOT DISTINCT FROM en.node
), kids AS (
    SELECT node, pid, thread, task, parent_id, sum(duration_ns) AS child_ns
    FROM c WHERE parent_id IS NOT NULL GROUP BY ALL
)
SELECT
    c.call_id, c.parent_id, c.node, c.pid, c.thread, c.task, c.module, c.qualname,
    c.ast_node_id, c.start_ns, c.end_ns, c.duration_ns,
    c.duration_ns - coalesce(kids.child_ns, 0) AS self_ns,
    c.args, c.return_value,
    c.exception ->> 'type' AS exception_type,
    CASE
        WHEN c.exception IS NULL THEN NULL
        WHEN json_array_length(c.exception, 'args') = 1
            AND json_type(c.exception, '$.args[0]') = 'VARCHAR'
            THEN c.exception ->> '$.args[0]'
        ELSE CAST(c.exception -> 'args' AS VARCHAR)
    END AS exception_message,
    c.exception, c.exit_reason, c.correlation_id, c.entry_event_id, c.exit_event_id
FROM c LEFT JOIN kids
    ON kids.parent_id = c.call_id AND kids.pid = c.pid
    AND kids.node IS NOT DISTINCT FROM c.node AND kids.thread IS NOT DISTINCT FROM c.thread
    AND kids.task IS NOT DISTINCT FROM c.task
ORDER BY c.start_ns
"""

# values: one row per recorded name and value. A snapshot's variables and a loop's current
# value (a dict of the loop's targets) give a row per key; an expression, a branch's
# condition and a match's pattern give one row, named by their source text.
_VALUES_SQL: Final = """
CREATE TABLE "values" AS
WITH v AS (
    SELECT event_id, timestamp, node, pid, thread_id, task_id, call_id, ast_node_id,
        event_type AS kind, TRY_CAST(data ->> 'line' AS BIGINT) AS line,
        CASE event_type
            WHEN 'local_variable_snapshot' THEN data -> 'variables'
            WHEN 'loop_iteration' THEN data -> 'current_value'
        END AS bag,
        data
    FROM events
    WHERE event_type IN ('local_variable_snapshot', 'loop_iteration', 'expression_value',
        'branch_execution', 'pattern_match', 'variable_assignment')
), keyed AS (
    SELECT *, unnest(json_keys(bag)) AS name FROM v WHERE json_type(bag) = 'OBJECT'
)
SELECT call_id, ast_node_id, name, bag -> ('$."' || replace(name, '"', '\\"') || '"') AS value,
    timestamp, kind, line, event_id, node, pid, thread_id, task_id
FROM keyed
UNION ALL
SELECT call_id, ast_node_id,
    CASE kind
        WHEN 'expression_value' THEN data ->> 'expression'
        WHEN 'branch_execution' THEN data ->> 'condition'
        WHEN 'pattern_match' THEN data ->> 'pattern'
        WHEN 'variable_assignment' THEN coalesce(data ->> 'variable', data ->> 'name')
        ELSE '<' || kind || '>'
    END AS name,
    CASE kind
        WHEN 'branch_execution' THEN data -> 'branch_taken'
        WHEN 'loop_iteration' THEN data -> 'current_value'
        ELSE data -> 'value'
    END AS value,
    timestamp, kind, line, event_id, node, pid, thread_id, task_id
FROM v WHERE bag IS NULL OR json_type(bag) <> 'OBJECT'
ORDER BY timestamp
"""


def fingerprint(trace: Trace) -> list[tuple[str, int, int]]:
    """``(name, size, mtime_ns)`` of every file the index is built from, in a stable order:
    the index is current while this stays the same."""
    out = []
    for path in [*(f.path for f in trace.files), *_node_files(trace.directory)]:
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((path.name, st.st_size, st.st_mtime_ns))
    return sorted(out)


def _node_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("nodes-*.jsonl"))


def build(trace: Trace, target: Path, duckdb: Any) -> None:
    """Build the index of ``trace`` as a new file and rename it to ``target`` when complete.

    The database is written in a private temporary directory beside ``target`` (DuckDB's
    spill files go there too), made mode 0600, and renamed over ``target``: a reader of
    the old index keeps reading it, and a failed build leaves nothing behind.

    Raises:
        TraceError: a trace file cannot be read, or is not a trace.
        OSError: the index cannot be written.
    """
    work = Path(tempfile.mkdtemp(prefix=".index-", dir=target.parent))
    try:
        path = work / target.name
        prints = fingerprint(trace)  # before reading: a file that grows meanwhile rebuilds
        con = duckdb.connect(
            str(path), config={"temp_directory": str(work / "spill"), "memory_limit": MEMORY_LIMIT}
        )
        try:
            # no enclosing transaction: one cost 12% more CPU (measured), each append in
            # its own writes its row groups straight to the file
            _load(con, trace, prints)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.chmod(path, FILE_MODE)
        os.replace(path, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _load(con: Any, trace: Trace, prints: list[tuple[str, int, int]]) -> None:
    import pyarrow as pa  # noqa: PLC0415

    columns = ", ".join(f'"{name}" {kind}' for name, kind in _EVENT_COLUMNS)
    con.execute(f"CREATE TABLE events ({columns})")
    enabled = gc.isenabled()
    # a batch is hundreds of thousands of new tuples and dicts that all live until it is
    # appended: the collector's passes over them found nothing and cost more than the load
    gc.disable()
    appender = _Appender(con)
    try:
        files = [_load_file(appender, pa, tf) for tf in trace.files]
    finally:
        appender.close()
        if enabled:
            gc.enable()
    stamp = {name: (size, mtime) for name, size, mtime in prints}
    for f in files:
        f["size"], f["mtime_ns"] = stamp.get(f["file"], (None, None))
    nodes, bad_lines = _load_nodes(con, pa, trace.directory, stamp, files)
    con.execute(_CALLS_SQL)
    con.execute(_VALUES_SQL)
    _load_sources(con, pa)
    _table(
        con, pa, "files",
        [("file", "VARCHAR"), ("kind", "VARCHAR"), ("size", "BIGINT"), ("mtime_ns", "BIGINT"),
         ("node", "VARCHAR"), ("pid", "BIGINT"), ("events", "BIGINT"), ("chunks", "BIGINT"),
         ("damaged", "BIGINT"), ("first_damaged_offset", "BIGINT"),
         ("first_damaged_reason", "VARCHAR"), ("torn", "BOOLEAN"), ("complete", "BOOLEAN"),
         ("events_written", "BIGINT"), ("dropped_events", "BIGINT"),
         ("internal_errors", "BIGINT"), ("header", "JSON"), ("stats", "JSON")],
        files,
    )  # fmt: skip
    meta = {
        "index_version": INDEX_VERSION,
        "directory": str(trace.directory),
        "built_wall_ns": time.time_ns(),
        "nodes": nodes,
        "bad_node_lines": bad_lines,
    }
    _table(
        con, pa, "meta", [("key", "VARCHAR"), ("value", "JSON")],
        [{"key": k, "value": json.dumps(v)} for k, v in meta.items()],
    )  # fmt: skip
    con.execute(
        "CREATE VIEW stats AS SELECT count(*) AS files, sum(events) AS events,"
        " sum(events_written) AS events_written, sum(dropped_events) AS dropped_events,"
        " sum(internal_errors) AS internal_errors, sum(damaged) AS damaged_chunks,"
        " count(*) FILTER (WHERE torn) AS torn_files,"
        " count(*) FILTER (WHERE NOT complete) AS incomplete_files"
        " FROM files WHERE kind = 'events'"
    )


def _load_file(appender: _Appender, pa: Any, tf: TraceFile) -> dict[str, Any]:
    """Append one trace file's events to ``events``; returns its row of ``files``."""
    row: dict[str, Any] = {
        "file": tf.path.name, "kind": "events", "events": 0, "chunks": 0, "damaged": 0,
        "torn": False, "complete": False, "events_written": 0, "dropped_events": 0,
        "internal_errors": 0,
    }  # fmt: skip
    pending: list[tuple[Any, ...]] = []
    for item in tf.batches():
        if type(item) is list:
            pending.extend(item)
            row["events"] += len(item)
            if len(pending) >= BATCH:
                appender.append(_arrow(pa, pending))
                pending = []
            continue
        rec: dict[str, Any] = item  # type: ignore[assignment]  # not a list: a record
        if "$counts" in rec:
            row["chunks"] += 1
            row.update(rec["$counts"])
        elif "$header" in rec:
            header = rec["$header"]
            row.update(node=_text(header.get("node")), pid=_int(header.get("pid")))
            row["header"] = json.dumps(header)
        elif "$stats" in rec:
            row["stats"] = json.dumps(rec["$stats"])
            row["complete"] = True
            for key in ("dropped_events", "internal_errors"):
                if type(rec["$stats"].get(key)) is int:
                    row[key] = rec["$stats"][key]
        elif "$damaged" in rec:
            row["damaged"] += 1
            if row["damaged"] == 1:
                row["first_damaged_offset"] = rec["$damaged"]["offset"]
                row["first_damaged_reason"] = rec["$damaged"]["reason"]
    if pending:
        appender.append(_arrow(pa, pending))
    row["torn"] = tf.torn
    return row


def _arrow(pa: Any, batch: list[tuple[Any, ...]]) -> Any:
    """Envelope tuples as an Arrow table of ``events``' columns."""
    cols = list(zip(*batch, strict=True))
    arrays = []
    for i, (name, _) in enumerate(_EVENT_COLUMNS):
        col = cols[i]
        if i in _INT_COLUMNS:
            arrays.append(_ints(pa, col))
        elif name == "correlation_id":
            arrays.append(_ids_as_text(pa, col))
        elif name == "data":
            arrays.append(pa.array(_dump_all(col), pa.string()))
        else:
            arrays.append(_texts(pa, col))
    return pa.Table.from_arrays(arrays, names=[name for name, _ in _EVENT_COLUMNS])


class _Appender:
    """Appends Arrow tables to ``events`` on a thread of its own, in order.

    DuckDB lets go of the GIL while it inserts, so the next batch is decoded and encoded
    meanwhile (a second core, or a second share of a busy one). One table waits at most;
    an insert's error is raised by the next :meth:`append` or by :meth:`close`.
    """

    def __init__(self, con: Any) -> None:
        self._cursor = con.cursor()  # a connection for this thread alone
        self._tables: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tidescope-index", daemon=True)
        self._thread.start()

    def append(self, table: Any) -> None:
        self._check()
        self._tables.put(table)

    def close(self) -> None:
        """Wait for every table to be appended; raise the first insert's error."""
        self._tables.put(None)
        self._thread.join()
        self._cursor.close()
        self._check()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (table := self._tables.get()) is not None:
            if self._error is not None:
                continue  # drain what is queued; close() says why
            try:
                self._cursor.register("_batch", table)
                self._cursor.execute("INSERT INTO events SELECT * FROM _batch")
                self._cursor.unregister("_batch")
            except BaseException as exc:
                self._error = exc


def _ints(pa: Any, col: tuple[Any, ...]) -> Any:
    """An int64 array of ``col``; a value that is no int of 64 bits becomes NULL."""
    try:
        return pa.array(col, pa.int64())
    except (TypeError, ValueError, OverflowError, pa.ArrowException):
        return pa.array([_int(v) for v in col], pa.int64())


def _int(v: Any) -> int | None:
    return v if type(v) is int and _INT64[0] <= v <= _INT64[1] else None


def _texts(pa: Any, col: tuple[Any, ...]) -> Any:
    try:
        return pa.array(col, pa.string())
    except (TypeError, ValueError, pa.ArrowException):
        return pa.array([_text(v) for v in col], pa.string())


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = v if isinstance(v, str) else str(v)
    return s.encode("utf-8", "replace").decode("utf-8")


def _ids_as_text(pa: Any, col: tuple[Any, ...]) -> Any:
    """Correlation ids as text: an int's digits, a str as it is, anything else as JSON."""
    try:
        return pa.array(col, pa.int64()).cast(pa.string())
    except (TypeError, ValueError, OverflowError, pa.ArrowException):
        return pa.array(
            [v if v is None or type(v) is str else _text(v) if type(v) is int else
             _dump(v).decode() for v in col],
            pa.string(),
        )  # fmt: skip


def _no_nan(v: Any) -> Any:
    """A JSON-ready value with NaN and the infinities as None (JSON has no such numbers)."""
    t = type(v)
    if t is float:
        return v if math.isfinite(v) else None
    if t is dict:
        return {k: _no_nan(x) for k, x in v.items()}
    if t is list:
        return [_no_nan(x) for x in v]
    return v


def _dump_json(v: Any) -> bytes:
    """``v`` as the JSON text of ``jsonable(v)`` in UTF-8, always valid for DuckDB: no
    NaN (null, as orjson writes it) and no lone surrogate (each is ``?``)."""
    j = jsonable(v)
    try:
        text = json.dumps(j, ensure_ascii=False, allow_nan=False)
    except ValueError:
        text = json.dumps(_no_nan(j), ensure_ascii=False)
    return text.encode("utf-8", "replace")


def _orjson() -> Callable[..., bytes] | None:
    try:
        import orjson  # noqa: PLC0415
    except ImportError:
        return None
    dumps: Callable[..., bytes] = orjson.dumps
    return dumps


_orjson_dumps: Final = _orjson()
_PASSTHROUGH: Final = 1 << 9  # orjson.OPT_PASSTHROUGH_DATETIME: datetimes as jsonable has them


def _dump(v: Any) -> bytes:
    """One value as JSON: orjson when it gives what ``jsonable`` would (markers and the
    types it does not know go through ``jsonable``), the standard library otherwise."""
    if _orjson_dumps is not None:
        try:
            return _orjson_dumps(v, default=jsonable, option=_PASSTHROUGH)
        except TypeError:  # a key that is no str, an int past 64 bits, a lone surrogate
            pass
    return _dump_json(v)


def _dump_all(col: tuple[Any, ...]) -> list[str]:
    # each value's bytes are made text at once: a list of orjson's bytes objects keeps
    # their over-allocated buffers, and the page faults cost 8x the encoding (measured)
    dumps = _orjson_dumps
    if dumps is not None:
        try:
            return [dumps(v, default=jsonable, option=_PASSTHROUGH).decode() for v in col]
        except TypeError:
            pass
    return [_dump(v).decode() for v in col]


def _table(
    con: Any, pa: Any, name: str, columns: list[tuple[str, str]], rows: list[dict[str, Any]]
) -> None:
    """Create table ``name`` of ``columns`` holding ``rows`` (dicts; a missing key is NULL)."""
    arrays = []
    for col, kind in columns:
        values = [r.get(col) for r in rows]
        arrays.append(
            pa.array([_int(v) for v in values], pa.int64()) if kind == "BIGINT"
            else pa.array([v if type(v) is bool else None for v in values], pa.bool_())
            if kind == "BOOLEAN"
            else pa.array([_text(v) for v in values], pa.string())
        )  # fmt: skip
    table = pa.Table.from_arrays(arrays, names=[c for c, _ in columns])
    cols = ", ".join(f'"{c}" {k}' for c, k in columns)
    con.execute(f'CREATE TABLE "{name}" ({cols})')
    con.register("_rows", table)
    try:
        con.execute(f'INSERT INTO "{name}" SELECT * FROM _rows')
    finally:
        con.unregister("_rows")


def _load_nodes(
    con: Any,
    pa: Any,
    directory: Path,
    stamp: dict[str, tuple[int, int]],
    files: list[dict[str, Any]],
) -> tuple[int, int]:
    """Create ``nodes`` from the node tables (``nodes-<pid>.jsonl``); the first record of
    an id wins. Returns the nodes kept and the lines that were no node record."""
    rows: dict[str, dict[str, Any]] = {}
    bad = 0
    for path in _node_files(directory):
        size, mtime = stamp.get(path.name, (None, None))
        files.append({"file": path.name, "kind": "nodes", "size": size, "mtime_ns": mtime})
        for line in _lines(path):
            try:
                rec = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if type(rec) is not dict or type(rec.get("id")) is not str:
                bad += 1
                continue
            rows.setdefault(rec["id"], rec)
    _table(con, pa, "nodes", list(_NODE_COLUMNS), list(rows.values()))
    return len(rows), bad


def _lines(path: Path) -> Iterator[str]:
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as f:
        yield from f


def _load_sources(con: Any, pa: Any) -> None:
    """Create ``sources``: the text of each file the node table names, as it is now (read
    while indexing; NULL when it cannot be read or is over :data:`SOURCE_LIMIT`)."""
    rows = []
    for (name,) in con.execute("SELECT DISTINCT file FROM nodes ORDER BY file").fetchall():
        text = None
        try:
            with open(name, "rb") as f:
                data = f.read(SOURCE_LIMIT + 1)
            if len(data) <= SOURCE_LIMIT:
                text = data.decode("utf-8", "replace")
        except (OSError, TypeError, ValueError):
            pass
        rows.append({"file": name, "text": text})
    _table(con, pa, "sources", [("file", "VARCHAR"), ("text", "VARCHAR")], rows)
