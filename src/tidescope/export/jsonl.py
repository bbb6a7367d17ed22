"""The trace file: JSON lines, one file per process, readable after a crash.

A file starts with a ``{"$header": {...}}`` line: format version, pid, node, start time and
``fields``, the order of the compact records. Then one line per event: a compact record,
the JSON array ``[event_id, timestamp, thread_id, task_id, correlation_id, parent_id,
call_id, ast_node_id, event_type, data]`` (``data`` an object, or for function entries and
exits the array of their four values), or a full envelope object for an event written as
an ``Event``. A ``{"$clock": {"wall_offset_ns": N}}`` line precedes records whenever the
offset that turns their monotonic timestamps into wall time changes. When the process ends
normally a ``{"$stats": {...}}`` line closes the file.

Compact records hold no key names, no node, pid or wall time: the writer turns the ring's
records into lines without building an object per event, which is what keeps the drain
thread from taking more of the GIL than the program it records. :func:`read_trace`
restores full envelopes.

Lines are written a batch at a time, one ``write`` per batch, so a process killed with
SIGKILL leaves a file missing at most its last batch; a torn last line is skipped by the
reader. The writer uses ``orjson`` when it is installed (the ``fast`` extra); a line that
only the standard library can encode exactly (an int past 64 bits, a tuple dict key) is
written with a leading space, and the reader parses such lines with the standard library.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Final

from tidescope.capture import _clock
from tidescope.events import ENVELOPE_FIELDS, Event, EventType, jsonable

__all__ = [
    "COUNT_FIELDS",
    "FORMAT_VERSION",
    "MAX_LINE",
    "RECORD_FIELDS",
    "TraceError",
    "TraceWriter",
    "encode_line",
    "read_trace",
    "trace_files",
]

FORMAT_VERSION: Final = 2
RECORD_FIELDS: Final = (
    "event_id", "timestamp", "thread_id", "task_id", "correlation_id", "parent_id", "call_id",
    "ast_node_id", "event_type", "data",
)  # fmt: skip
_ENTRY_KEYS: Final = ("module", "function", "arity", "args")
_EXIT_KEYS: Final = ("return_value", "exception", "duration_ns", "exit_reason")


def _default(value: Any) -> Any:
    # called by the encoder only for values JSON has no form for: markers, bytes, sets...
    return jsonable(value)


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), default=_default)

try:  # optional: several times faster than the standard library's encoder
    import orjson

    _ORJSON_OPTIONS: Final = orjson.OPT_NON_STR_KEYS

    def _encode(value: Any) -> bytes:
        # bytes() of bytes is the object itself; it keeps mypy quiet with or without orjson
        return bytes(orjson.dumps(value, default=_default, option=_ORJSON_OPTIONS))

    _loads: Any = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment

    def _encode(value: Any) -> bytes:
        return _ENCODER.encode(value).encode()

    _loads = json.loads


def _line(value: Any) -> bytes:
    """One JSON line; the fast encoder first, the full conversion if it balks."""
    try:
        return _encode(value)
    except (TypeError, ValueError):  # a tuple as a dict key, an int past 64 bits...
        # The leading space tells the reader to parse this line with the standard library:
        # orjson would read an int past 64 bits as a float and change a captured value.
        return b" " + _ENCODER.encode(jsonable(value)).encode()


def encode_line(value: Any) -> bytes:
    """``value`` (captured data included) as one line of JSON, without the newline."""
    return _line(value)


def _dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode()


class TraceWriter:
    """Appends batches of events to one process's trace file.

    Raises:
        OSError: the file cannot be created (an unwritable directory, say).
    """

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any]) -> None:
        self.path = Path(path)
        self._fh: IO[bytes] | None = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self.events_written = 0
        self._offset: int | None = None
        head = {"format": FORMAT_VERSION, "fields": RECORD_FIELDS, **header}
        self._write_lines([_dumps({"$header": head})])

    def _write_lines(self, lines: list[bytes]) -> None:
        if self._fh is None:
            return
        self._fh.write(b"\n".join(lines) + b"\n")  # one write per batch: torn at most once

    def write_records(self, records: Iterable[tuple[Any, ...]]) -> int:
        """Write and flush a batch of ring records (``RingBuffer.drain_records``)."""
        # One bytearray per batch, each line appended and released at once: keeping
        # thousands of small encoded bytes objects alive until a join made every encode
        # cost 4 µs instead of 0.7 µs (measured in bench/RESULTS.md).
        out = bytearray()
        offset = _clock.wall_offset
        if offset != self._offset:
            out += _dumps({"$clock": {"wall_offset_ns": offset}})
            out += b"\n"
            self._offset = offset
        n = 0
        for r in records:
            if len(r) == 2:  # an Event written as such: its own envelope, as it is
                ev = r[1]
                if type(ev) is not Event:
                    continue
                out += _line({f: getattr(ev, f) for f in ENVELOPE_FIELDS})
            else:
                etype = r[9]
                out += _line([
                    r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8],
                    etype._value_ if type(etype) is not str else etype, r[10],
                ])  # fmt: skip
            out += b"\n"
            n += 1
        if n and self._fh is not None:
            self._fh.write(out)  # one write per batch: a kill tears at most its last line
            self.events_written += n
        return n

    def abandon(self) -> None:
        """Close the descriptor without writing (a forked child's copy of the parent's file)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def close(self, stats: dict[str, Any] | None = None) -> None:
        """Write the closing stats line (if given) and close the file."""
        if self._fh is None:
            return
        if stats is not None:
            self._write_lines([_dumps({"$stats": stats})])
        self._fh.close()
        self._fh = None


def trace_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The trace files of a run, in a stable order."""
    return sorted(Path(directory).glob("events-*.jsonl"))


MAX_LINE: Final = 64 << 20
"""Bytes a line may hold; a longer line is skipped as damaged, read a chunk at a time."""
_CHUNK: Final = 1 << 20
COUNT_FIELDS: Final = ("events_written", "dropped_events", "internal_errors")
"""The running totals of a ``$counts`` record (and of ``$stats``)."""


class TraceError(ValueError):
    """A file that cannot be read as a trace at all; the message names it and says why."""


class _Damaged:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def read_trace(
    path: str | os.PathLike[str], *, max_line: int | None = None
) -> Iterator[dict[str, Any]]:
    """Yield every record of a trace file as a dict, streaming.

    The records are the ``$header``, each event as its full envelope (see
    :meth:`tidescope.Event.to_dict`), the ``$counts`` written with each batch (running
    totals: ``events_written``, ``dropped_events``, ``internal_errors``), ``$stats`` if
    the process closed the file, and ``{"$damaged": {"line": N, "reason": "..."}}`` for
    each line skipped as damaged: not JSON, binary, a record of the wrong shape or types,
    or longer than ``max_line`` bytes (default :data:`MAX_LINE`; memory stays bounded by
    it). Every record but an event is an object with one key starting with ``$``; events
    have an ``event_type``. ``$clock`` lines are consumed. A torn last line (a process
    killed mid-write, or one still writing) is skipped without a count.

    Raises:
        TraceError: the file cannot be opened or read, or it does not start with a
            ``$header`` (it is not a trace); the message is one line naming the file.
    """
    cap = MAX_LINE if max_line is None else max_line
    node: Any = None
    pid: Any = None
    offset = 0
    for lineno, rec in _lines(path, cap):
        reason: str | None
        if type(rec) is list:
            event = _record_event(rec, node, pid, offset)
            if type(event) is dict:
                yield event
                continue
            reason = str(event)
        elif type(rec) is dict:
            key, reason = _meta(rec)
            if key is None:  # an event written whole
                reason = _envelope(rec)
            if reason is None:
                if key == "$clock":
                    offset = rec["$clock"]["wall_offset_ns"]
                    continue
                if key == "$header":
                    node, pid = rec["$header"].get("node"), rec["$header"].get("pid")
                elif lineno == 1:
                    reason = "not a $header"
                if reason is None:
                    yield rec  # an event, $header, $counts, $stats, or a kind added later
                    continue
        elif type(rec) is _Damaged:
            reason = rec.reason
        else:
            reason = "neither a record nor an object"
        if lineno == 1:
            raise TraceError(f"{path}: not a tidescope trace (line 1: {reason})")
        yield {"$damaged": {"line": lineno, "reason": reason}}


_SCALARS: Final = frozenset({int, str, float, bool, type(None)})


def _record_event(rec: list[Any], node: Any, pid: Any, offset: int) -> dict[str, Any] | str:
    """A compact record as its full envelope, or why it is damaged."""
    if len(rec) != len(RECORD_FIELDS):
        return f"a record of {len(rec)} fields, not {len(RECORD_FIELDS)}"
    eid, ts, thread, task, corr, parent, call, ast_id, etype, data = rec
    if type(data) is list and len(data) == 4:
        if etype == EventType.FUNCTION_ENTRY:
            data = dict(zip(_ENTRY_KEYS, data, strict=True))
        elif etype == EventType.FUNCTION_EXIT:
            data = dict(zip(_EXIT_KEYS, data, strict=True))
    if (
        type(ts) is not int
        or type(etype) is not str
        or type(data) is not dict
        or not {type(eid), type(thread), type(task), type(corr), type(parent), type(call),
                type(ast_id)} <= _SCALARS
    ):  # fmt: skip
        fields = dict(zip(RECORD_FIELDS, rec, strict=True), wall_time=0, node=None, pid=None)
        return _envelope(fields) or "a record of bad types"
    return {
        "event_id": eid, "timestamp": ts, "wall_time": ts + offset, "node": node,
        "pid": pid, "thread_id": thread, "task_id": task, "correlation_id": corr,
        "parent_id": parent, "call_id": call, "ast_node_id": ast_id,
        "event_type": etype, "data": data,
    }  # fmt: skip


def _envelope(event: dict[str, Any]) -> str | None:
    """Why ``event`` is not an event every consumer can read, or None if it is."""
    for f in ENVELOPE_FIELDS:
        if f not in event:
            return f"an object without {f!r}"
        v = event[f]
        if f == "data":
            if type(v) is not dict:
                return "data is not an object"
        elif f in ("timestamp", "wall_time"):
            if type(v) is not int:
                return f"{f} is not an integer"
        elif f == "event_type":
            if type(v) is not str:
                return "event_type is not a string"
        elif type(v) not in _SCALARS:
            return f"{f} is not a scalar"
    return None


def _meta(rec: dict[str, Any]) -> tuple[str | None, str | None]:
    """A ``$`` record's key and why it is damaged (None if it is not); ``(None, None)``
    for an object that is no ``$`` record."""
    if not any(k.startswith("$") for k in rec):
        return None, None
    if len(rec) != 1:
        return "$", "an object mixing $ records"
    ((key, value),) = rec.items()
    if type(value) is not dict:
        return key, f"{key} is not an object"
    if key == "$header" and not {type(value.get("node")), type(value.get("pid"))} <= _SCALARS:
        return key, "$header with a node or pid that is not a scalar"
    if key == "$clock" and type(value.get("wall_offset_ns")) is not int:
        return key, "$clock without an integer wall_offset_ns"
    if key in ("$counts", "$stats"):
        for f in COUNT_FIELDS:
            if key == "$counts" or f in value:
                v = value.get(f)
                if type(v) is not int or v < 0:
                    return key, f"{key} {f} is not a count"
    return key, None


def _lines(path: str | os.PathLike[str], cap: int) -> Iterator[tuple[int, Any]]:
    """Each line parsed (or a ``_Damaged``), numbered from 1, read at most ``cap`` bytes
    at a time; a torn last line that does not parse is left out, unless it is line 1
    and not the start of a header."""
    try:
        with open(path, "rb") as fh:
            lineno = 0
            while True:
                raw = fh.readline(cap + 1)
                if not raw:
                    return
                lineno += 1
                if raw.endswith(b"\n"):
                    yield lineno, _parse(raw)
                    continue
                if len(raw) > cap:  # over the cap: skip to the end of the line, a chunk at a time
                    while raw and not raw.endswith(b"\n"):
                        raw = fh.readline(_CHUNK)
                    yield lineno, _Damaged(f"a line longer than {cap} bytes")
                    continue
                value = _parse(raw)  # the last line, without its newline
                if type(value) is not _Damaged:
                    yield lineno, value
                elif lineno == 1 and not raw.startswith(b'{"$header"'):
                    yield lineno, value  # not a torn header: not a trace
                return
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _parse(raw: bytes) -> Any:
    try:
        return (json.loads if raw[:1] == b" " else _loads)(raw)
    except (ValueError, RecursionError):  # orjson.JSONDecodeError and bad UTF-8 are ValueErrors
        return _Damaged("not a JSON line")
