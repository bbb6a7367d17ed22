"""The trace file: JSON lines, one file per process, readable after a crash.

A file starts with a ``{"$header": {...}}`` line: format version, pid, node, start time and
``fields``, the order of the compact records. Then one line per event: a compact record,
the JSON array ``[event_id, timestamp, thread_id, task_id, correlation_id, parent_id,
call_id, ast_node_id, event_type, data]`` (``data`` an object, or for function entries and
exits the array of their four values), or a full envelope object for an event written as
an ``Event``. A ``{"$clock": {"wall_offset_ns": N}}`` line precedes records whenever the
offset that turns their monotonic timestamps into wall time changes. Every batch ends with
a ``{"$counts": {"events_written": W, "dropped_events": D, "internal_errors": E}}`` line: the
process's running totals when the batch was written (keys as in ``$stats``), so a file cut
short by a kill still says what was lost; a ``$counts`` line also stands alone when the
totals changed with no events to write. When the process ends normally a
``{"$stats": {...}}`` line closes the file; a writer that hit an output fault adds
``write_error`` and ``events_not_written`` to it.

Compact records hold no key names, no node, pid or wall time: the writer turns the ring's
records into lines without building an object per event, which is what keeps the drain
thread from taking more of the GIL than the program it records. :func:`read_trace`
restores full envelopes.

Lines are written a batch at a time, one ``write`` per batch (its ``$counts`` line
included), so a process killed with SIGKILL leaves a file missing at most its last batch;
a torn last line is skipped by the reader. A write that fails or comes up short is cut back
to the end of the last whole batch, and the writer stops: a record is never torn in the
middle of a file. Files are created new, mode 0600, never through a symlink.

The writer uses ``orjson`` when it is installed (the ``fast`` extra); a line that
only the standard library can encode exactly (an int past 64 bits, a tuple dict key) is
written with a leading space, and the reader parses such lines with the standard library.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from tidescope.capture import _clock
from tidescope.events import ENVELOPE_FIELDS, Event, EventType, jsonable
from tidescope.export import _output

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

    The file is created new, mode 0600, never through a symlink: if ``path`` is taken (by
    a file or a planted symlink) the writer uses ``<stem>-1.jsonl`` and so on; :attr:`path`
    is the name used. Each batch is one write, whole or not at all: a failed or short
    write is truncated back to the end of the last whole batch. After such a fault the
    writer stops writing, says so once on stderr, and counts what it was handed in
    :attr:`events_not_written`; :attr:`write_error` says why. The closing ``$stats`` line
    still goes in if it fits.

    Raises:
        OSError: the file cannot be created (an unwritable directory, say).
    """

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any]) -> None:
        self._fd: int | None
        self._fd, self.path = _output.create_file(path)
        self._init_counters()
        head = {"format": FORMAT_VERSION, "fields": RECORD_FIELDS, **header}
        self._write(_dumps({"$header": head}) + b"\n")

    @classmethod
    def unopened(cls, path: str | os.PathLike[str], error: OSError) -> TraceWriter:
        """A writer whose file could not be created: it counts what it is handed as not
        written (and says why, once); for a forked child whose directory is gone."""
        self = cls.__new__(cls)
        self._fd, self.path = None, Path(path)
        self._init_counters()
        self._fault(error, f"cannot create {self.path}", consequence="this process is not recorded")
        return self

    def _init_counters(self) -> None:
        self.events_written = 0
        self.events_not_written = 0
        self.write_error: str | None = None
        self._size = 0  # where the last whole write ends
        self._torn = False  # a failed write could not be cut back: never write again
        self._offset: int | None = None
        self._counts = (0, 0, 0)  # the totals of the last $counts line

    def _write(self, data: bytes | bytearray, *, closing: bool = False) -> bool:
        """Append ``data`` whole or not at all; True if it went in."""
        fd = self._fd
        if fd is None or self._torn or (self.write_error is not None and not closing):
            return False
        try:
            _output.append(fd, data)
        except OSError as exc:
            try:
                os.ftruncate(fd, self._size)
            except OSError:
                self._torn = True
            if self.write_error is None:
                if closing:
                    self._fault(exc, f"{self.path}", consequence="its closing stats are lost")
                else:
                    self._fault(
                        exc,
                        f"stopped writing {self.path}",
                        consequence="the events that follow are not recorded",
                    )
            return False
        self._size += len(data)
        return True

    def _fault(self, exc: OSError, what: str, *, consequence: str) -> None:
        self.write_error = _output.describe(exc)
        _output.notice(f"{what}: {self.write_error}; {consequence}")

    def write_records(
        self, records: Iterable[tuple[Any, ...]], *, dropped_events: int, internal_errors: int
    ) -> int:
        """Write a batch of ring records (``RingBuffer.drain_records``) and a ``$counts``
        line with the totals after it, in one write; returns the events written.

        ``dropped_events`` and ``internal_errors`` are this process's running totals now.
        An empty batch writes the ``$counts`` line alone if the totals changed.
        """
        if self.write_error is not None:  # stopped: count what is lost, encode nothing
            self.events_not_written += sum(1 for _ in records)
            return 0
        # One bytearray per batch, each line appended and released at once: keeping
        # thousands of small encoded bytes objects alive until a join made every encode
        # cost 4 µs instead of 0.7 µs (measured in bench/RESULTS.md).
        out = bytearray()
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
        counts = (self.events_written + n, dropped_events, internal_errors)
        if not n and counts == self._counts:
            return 0
        offset = _clock.wall_offset
        if n and offset != self._offset:  # rare: the one copy it costs does not matter
            out[:0] = _dumps({"$clock": {"wall_offset_ns": offset}}) + b"\n"
        out += _counts_line(counts)
        # one write per batch, its counts included: a kill tears at most its last line
        if not self._write(out):
            self.events_not_written += n
            return 0
        self.events_written += n
        if n:
            self._offset = offset
        self._counts = counts
        return n

    def abandon(self) -> None:
        """Close the descriptor without writing (a forked child's copy of the parent's file)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self, stats: dict[str, Any] | None = None) -> None:
        """Write the closing stats line (if given) and close the file; never raises.

        After a write fault the line, with ``events_not_written`` and ``write_error``, is
        still tried once. A file deleted while it was written counts its events as lost.
        """
        fd = self._fd
        if fd is None:
            return
        try:
            if os.fstat(fd).st_nlink == 0 and self.write_error is None:
                self.write_error = "the trace file was deleted during the run"
                self.events_not_written += self.events_written
                self.events_written = 0
                _output.notice(f"{self.path}: {self.write_error}; its events are lost")
        except OSError:
            pass
        if stats is not None:
            stats = {**stats, "events_not_written": self.events_not_written}
            if self.write_error is not None:
                stats["write_error"] = self.write_error
            self._write(_dumps({"$stats": stats}) + b"\n", closing=True)
        self._fd = None
        try:
            os.close(fd)
        except OSError:
            pass


def _counts_line(counts: tuple[int, int, int]) -> bytes:
    written, dropped, errors = counts
    return b'{"$counts":{"events_written":%d,"dropped_events":%d,"internal_errors":%d}}\n' % (
        written,
        dropped,
        errors,
    )


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
