"""SQL over a trace: an index of a trace directory in a DuckDB file, built on first use.

:func:`open_index` opens the index of a trace directory, building it when it is missing or
the trace has changed since (a trace file's size or modification time differs, a file
came or went), and reusing it otherwise. Its tables (``docs/query.md``):

- ``calls``: one row per call (entry and exit paired), arguments and return values as JSON;
- ``events``: every event, its envelope and its data (JSON);
- ``values``: one row per recorded variable or expression value;
- ``nodes``: the instrumented modules' AST nodes; ``sources``: their files' text;
- ``files``, ``stats``, ``meta``: each trace file's counts (drops, internal errors, damaged
  chunks), their totals, and the index's own facts.

DuckDB and pyarrow are the optional extra ``tidescope[query]``, imported only here.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from tidescope.export.reader import Trace, TraceError, open_trace

__all__ = ["INDEX_NAME", "QueryError", "TraceIndex", "open_index"]

INDEX_NAME: Final = "index.duckdb"
"""The index's file name in the trace directory."""
EXTRA_HINT: Final = "tidescope query needs duckdb and pyarrow: pip install 'tidescope[query]'"


class QueryError(Exception):
    """A query that failed, or a missing dependency; the message is one line."""


def _duckdb() -> Any:
    """The duckdb module; pyarrow is only looked for (importing it costs a query a tenth
    of a second or more, and only a build uses it)."""
    try:
        import duckdb  # noqa: PLC0415
    except ImportError:
        raise QueryError(EXTRA_HINT) from None
    if importlib.util.find_spec("pyarrow") is None:
        raise QueryError(EXTRA_HINT)
    return duckdb


def open_index(
    path: str | os.PathLike[str], *, rebuild: bool = False, memory_limit: str | None = None
) -> TraceIndex:
    """Open the query index of the trace directory ``path``, building it if it is missing,
    stale (the trace changed since) or ``rebuild`` is true.

    ``memory_limit`` (DuckDB's form, e.g. ``"256MB"``) caps what its queries may hold,
    DuckDB's cache of the index included (its default is 80% of RAM): a long-lived reader
    such as ``tidescope view`` stays flat in the trace's length; a query that needs more
    fails with DuckDB's out-of-memory error.

    Raises:
        QueryError: duckdb or pyarrow is missing (the message names the extra).
        TraceError: ``path`` is no trace directory, or a trace file cannot be read.
        OSError: the index cannot be written beside the trace.
    """
    duckdb = _duckdb()
    trace = open_trace(path)
    target = trace.directory / INDEX_NAME
    if not rebuild:
        con = _open_current(duckdb, trace, target, memory_limit=memory_limit)
        if con is not None:
            return TraceIndex(target, con)
    from tidescope.query import _build  # noqa: PLC0415

    _build.build(trace, target, duckdb)
    con = _open_current(duckdb, trace, target, fresh=True, memory_limit=memory_limit)
    if con is None:  # pragma: no cover - replaced between our rename and our open
        raise TraceError(f"{trace.directory}: the trace changed while it was indexed")
    return TraceIndex(target, con)


def _open_current(
    duckdb: Any, trace: Trace, target: Path, *, fresh: bool = False, memory_limit: str | None
) -> Any:
    """A read-only connection to ``target`` if it is a regular file (never a symlink) and
    the index of the trace as it is now (``fresh``: just built, only its version checked)."""
    from tidescope.query import _build  # noqa: PLC0415

    try:
        if not stat.S_ISREG(os.lstat(target).st_mode):
            return None
        con = _connect(duckdb, target, memory_limit)
    except (OSError, duckdb.Error):
        return None
    try:
        version = con.execute("SELECT value FROM meta WHERE key = 'index_version'").fetchall()
        if version != [(str(_build.INDEX_VERSION),)]:
            raise LookupError
        if not fresh:
            have = con.execute("SELECT file, size, mtime_ns FROM files ORDER BY file").fetchall()
            if have != _build.fingerprint(trace):
                raise LookupError
    except (LookupError, duckdb.Error):
        con.close()
        return None
    return con


def _connect(duckdb: Any, target: Path, memory_limit: str | None = None) -> Any:
    """A connection of its own to ``target``, read-only, that can reach nothing else.

    DuckDB's Python ``connect(path)`` shares one database per path in a process, and keeps
    serving the file it first opened after that file was replaced by a rebuild; a fresh
    in-memory database that attaches the file opens it anew. Then user SQL can read the
    index's tables, not change them, nor read or write other files (``read_csv``, ``COPY
    ... TO``, ``ATTACH``), nor turn those settings back on.
    """
    config = {"temp_directory": ""}
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(":memory:", config=config)
    try:
        quoted = str(target).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS {_ALIAS} (READ_ONLY)")
        con.execute(f"USE {_ALIAS}")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


_ALIAS: Final = "trace"


class TraceIndex:
    """An open query index; use :meth:`sql`, then :meth:`close` (or a ``with`` block).

    One index may serve several threads: each :meth:`sql` call runs on its own cursor.
    """

    def __init__(self, path: Path, con: Any) -> None:
        self.path = path
        """The index file."""
        self._con = con
        self._lock = threading.Lock()

    def sql(
        self, query: str, params: Sequence[object] = ()
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run ``query`` (``?`` or ``$1`` placeholders take ``params``) and return its
        column names and rows. JSON columns come back as their text.

        Raises:
            QueryError: the query failed (the message is DuckDB's first line), or the
                index is closed.
        """
        import duckdb  # noqa: PLC0415

        with self._lock:
            if self._con is None:
                raise QueryError("the index is closed")
            cur = self._con.cursor()
        try:
            cur.execute(f"USE {_ALIAS}")  # a cursor is a connection of its own
            cur.execute(query, list(params))
            names = [d[0] for d in cur.description or ()]
            rows = cur.fetchall() if cur.description else []
        except duckdb.Error as exc:
            raise QueryError(_one_line(str(exc))) from None
        finally:
            cur.close()
        return names, rows

    def close(self) -> None:
        """Close the index (again is harmless)."""
        with self._lock:
            con, self._con = self._con, None
        if con is not None:
            con.close()

    def __enter__(self) -> TraceIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TraceIndex {str(self.path)!r}>"


def _one_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if lines else "the query failed"
