"""Reading trace files: a streaming reader with bounded memory that skips damage and says so.

:func:`open_trace` opens a run's directory (or the latest run of an output directory);
each :class:`TraceFile` gives the process's header, its latest running counts, whether it
closed normally, how many chunks were skipped as damaged and whether its tail was torn,
and iterates its events as :class:`tidescope.Event` objects. :func:`read_trace` yields
the same file as dict records (the form ``show`` and the exports consume). Memory is
bounded by one chunk (at most :data:`MAX_CHUNK` bytes, then the chunk is skipped as
damaged), whatever the file's length.

Nothing in a file makes the reader raise anything but :class:`TraceError`, and only when
the file cannot be read or is not a trace at all: a damaged chunk is skipped and counted,
and the next whole chunk reads (``docs/trace-format.md``, "Chunk").
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final

from tidescope.capture import _core
from tidescope.events import Event, EventType, jsonable
from tidescope.export import _tsformat
from tidescope.export._runs import run_directory
from tidescope.export._tsformat import MAGIC, MAX_BODY, SYNC, Chunk, FormatError, decode_body

__all__ = [
    "COUNT_FIELDS",
    "MAX_CHUNK",
    "Trace",
    "TraceError",
    "TraceFile",
    "open_trace",
    "read_trace",
    "trace_files",
]

MAX_CHUNK: Final = MAX_BODY
"""Bytes a chunk's body may hold for the reader; a larger chunk is skipped as damaged
without being held in memory."""
COUNT_FIELDS: Final = ("events_written", "dropped_events", "internal_errors")
"""The running totals every chunk carries (keys as in ``$counts`` and ``$stats``)."""
_BLOCK: Final = 1 << 20
_HEAD: Final = struct.Struct("<4sII")
_SCALARS: Final = frozenset({int, str, float, bool, type(None)})
_JSON_AS_IS: Final = _SCALARS  # what jsonable() returns as it is
_EVENTS_CHUNK: Final = _tsformat.CHUNK_EVENTS
# what a decoded chunk's events become (_decode.c's modes): checked tuples, Events, records
_AS_TUPLES, _AS_EVENTS, _AS_RECORDS = 1, 2, 3
_OK, _EOF, _BAD, _TORN, _BIG = range(5)


class TraceError(ValueError):
    """A file that cannot be read as a trace at all; the message names it and says why."""


def trace_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The trace files of a run, in a stable order: of the latest run when ``directory``
    is the output directory ``tidescope run`` makes run directories in
    (:func:`~tidescope.export._runs.run_directory`)."""
    return sorted(run_directory(directory).glob("events-*.tstrace"))


def open_trace(directory: str | os.PathLike[str]) -> Trace:
    """Open a run's trace directory for reading: given the output directory of
    ``tidescope run`` (``tidescope-trace``), its latest run; :attr:`Trace.directory` says
    which. Two runs are never read as one.

    Raises:
        TraceError: ``directory`` is not a directory.
    """
    path = Path(directory)
    if not path.is_dir():
        raise TraceError(f"{directory}: not a trace directory")
    return Trace(run_directory(path))


class Trace:
    """A run's trace directory: one :class:`TraceFile` per process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files = [TraceFile(p) for p in trace_files(directory)]

    def events(self) -> Iterator[Event]:
        """Every event of every file, a file at a time.

        Raises:
            TraceError: a file cannot be read, or is not a trace.
        """
        for f in self.files:
            yield from f.events()

    def __repr__(self) -> str:
        return f"<Trace {str(self.directory)!r}: {len(self.files)} file(s)>"


class TraceFile:
    """One process's trace file, read as a stream.

    :attr:`header` reads the first chunk; :attr:`counts`, :attr:`stats`, :attr:`complete`,
    :attr:`damaged`, :attr:`torn` and :attr:`unknown` are known once the file has been read
    through, and reading them first reads it through (without keeping its events).

    Args:
        path: the file.
        max_chunk: the largest chunk body read into memory (default :data:`MAX_CHUNK`).
    """

    def __init__(self, path: str | os.PathLike[str], *, max_chunk: int | None = None) -> None:
        self.path = Path(path)
        self.max_chunk = MAX_CHUNK if max_chunk is None else max_chunk
        self._header: dict[str, Any] | None = None
        self._header_read = False
        self._done = False
        self._reset()

    def _reset(self) -> None:
        self._counts: dict[str, int] = dict.fromkeys(COUNT_FIELDS, 0)
        self._stats: dict[str, Any] | None = None
        self._damaged = 0
        self._torn = False
        self._unknown = 0
        self.first_damaged: dict[str, Any] | None = None
        """``{"offset": N, "reason": "..."}`` for the first chunk skipped as damaged."""

    @property
    def header(self) -> dict[str, Any] | None:
        """The HEADER chunk's dict, or None if the first chunk is not a whole header.

        Raises:
            TraceError: the file cannot be read, or is not a trace.
        """
        if not self._header_read:
            for item in _chunks(self.path, self.max_chunk):
                if item[0] == _OK:
                    self._take_header(item[2])
                break
            self._header_read = True
        return self._header

    def _take_header(self, body: bytes) -> None:
        if body[:1] != bytes((_tsformat.CHUNK_HEADER,)):
            return
        try:
            chunk = decode_body(body)
            _check(chunk)
        except FormatError:
            return
        fmt = chunk.content.get("format")
        if type(fmt) is int and fmt > _tsformat.FORMAT_VERSION:
            raise TraceError(
                f"{self.path}: trace format {fmt} is newer than this tidescope reads"
                f" ({_tsformat.FORMAT_VERSION}); upgrade tidescope"
            )
        self._header = chunk.content

    def _finish(self) -> None:
        if not self._done:
            for _ in self.records():
                pass

    @property
    def counts(self) -> dict[str, int]:
        """The running totals of the last whole chunk (``events_written``, ``dropped_events``,
        ``internal_errors``): the truth for a file its process did not close."""
        self._finish()
        return dict(self._counts)

    @property
    def stats(self) -> dict[str, Any] | None:
        """The session's final stats from the CLOSE chunk, or None if the file has none."""
        self._finish()
        return self._stats

    @property
    def complete(self) -> bool:
        """True if the process closed the file (it ends with a CLOSE chunk)."""
        self._finish()
        return self._stats is not None

    @property
    def damaged(self) -> int:
        """Chunks (or runs of bytes) skipped as damaged."""
        self._finish()
        return self._damaged

    @property
    def torn(self) -> bool:
        """True if the file ends in a chunk cut short (a process killed mid-write, or one
        still writing)."""
        self._finish()
        return self._torn

    @property
    def unknown(self) -> int:
        """Chunks of a kind this reader does not know, skipped."""
        self._finish()
        return self._unknown

    def events(self) -> Iterator[Event]:
        """The file's events, streaming.

        Raises:
            TraceError: the file cannot be read, or is not a trace.
        """
        for item in self._scan(_AS_EVENTS):
            if type(item) is list:
                yield from item

    def records(self) -> Iterator[dict[str, Any]]:
        """The file's records as dicts (see :func:`read_trace`), streaming."""
        for item in self._scan(_AS_RECORDS):
            if type(item) is list:
                yield from item
            else:
                yield item  # type: ignore[misc]  # a list is events, anything else a record

    def batches(self) -> Iterator[list[tuple[Any, ...]] | dict[str, Any]]:
        """The file as :meth:`records` gives it, except that each chunk's events come as one
        list of envelope tuples (:class:`tidescope.Event`'s fields in order, values as
        decoded, not made JSON-ready): the cheapest form for a consumer that takes events
        in bulk (the query index)."""
        return self._scan(_AS_TUPLES)

    def _scan(self, form: int) -> Iterator[list[Any] | dict[str, Any]]:
        """Each chunk's events (a list of Events or of event records, as ``form`` says) and
        the other records, in file order; updates the file's counts and state as it goes."""
        self._reset()
        node: Any = None
        pid: Any = None
        first = True
        for item in _chunks(self.path, self.max_chunk):
            status, offset, body = item
            if status == _TORN:
                self._torn = True
                break
            if status != _OK:
                yield self._damage(offset, body.decode())
                first = False
                continue
            if first and not self._header_read:
                self._take_header(body)
                self._header_read = True
            first = False
            try:
                chunk = _decode(body, node, pid, form)
            except FormatError as exc:
                yield self._damage(offset, f"a chunk that does not decode ({exc})")
                continue
            kind = chunk.kind
            self._counts = dict(zip(COUNT_FIELDS, chunk.counts, strict=True))
            if kind == _tsformat.CHUNK_EVENTS:
                if chunk.content:
                    yield chunk.content
                yield {"$counts": dict(self._counts)}
            elif kind == _tsformat.CHUNK_HEADER:
                header = chunk.content
                node, pid = header.get("node"), header.get("pid")
                yield {"$header": jsonable(header)}
            elif kind == _tsformat.CHUNK_CLOSE:
                self._stats = chunk.content
                yield {"$stats": jsonable(chunk.content)}
            elif kind == _tsformat.CHUNK_NOTES:
                for note in chunk.content:
                    yield {"$note": jsonable(note)}
            else:
                self._unknown += 1
        self._done = True

    def _damage(self, offset: int, reason: str) -> dict[str, Any]:
        self._damaged += 1
        damage = {"offset": offset, "reason": reason}
        if self.first_damaged is None:
            self.first_damaged = damage
        return {"$damaged": damage}

    def __repr__(self) -> str:
        return f"<TraceFile {str(self.path)!r}>"


def tally(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, dict[str, int], bool]:
    """A file's header, the counts of its last whole chunk and whether its process closed
    it, reading every chunk's head but decoding no event (cheap on a big trace).

    Raises:
        TraceError: the file cannot be read, or is not a trace.
    """
    header: dict[str, Any] | None = None
    counts = dict.fromkeys(COUNT_FIELDS, 0)
    complete = False
    for status, _offset, body in _chunks(Path(path), MAX_CHUNK):
        if status != _OK:
            continue
        kind = body[0]
        if kind == _tsformat.CHUNK_EVENTS:
            pos, values = 1, []
            for _ in range(4):  # seq, then the three running counts
                n = shift = 0
                while pos < len(body):
                    b = body[pos]
                    pos += 1
                    n |= (b & 0x7F) << shift
                    shift += 7
                    if b < 0x80:
                        break
                values.append(n)
            counts = dict(zip(COUNT_FIELDS, values[1:], strict=True))
            continue
        try:
            chunk = decode_body(body)
            _check(chunk)
        except FormatError:
            continue
        counts = dict(zip(COUNT_FIELDS, chunk.counts, strict=True))
        if kind == _tsformat.CHUNK_HEADER and header is None:
            header = chunk.content
        elif kind == _tsformat.CHUNK_CLOSE:
            complete = True
    return header, counts, complete


def read_trace(
    path: str | os.PathLike[str], *, max_chunk: int | None = None
) -> Iterator[dict[str, Any]]:
    """Yield every record of a trace file as a dict, streaming.

    The records are ``{"$header": {...}}``, each event as its full envelope (as
    :meth:`tidescope.Event.to_dict` gives it: values in their JSON form), after each
    chunk of events ``{"$counts": {...}}`` (the running totals ``events_written``,
    ``dropped_events``, ``internal_errors``), ``{"$note": {...}}`` for each thread or task
    noted (``docs/trace-format.md``, NOTES; before that thread's or task's events),
    ``{"$stats": {...}}`` if the process closed the file, and
    ``{"$damaged": {"offset": N, "reason": "..."}}`` for each chunk (or run of bytes)
    skipped as damaged, ``N`` its byte offset. Events have an ``event_type``; every
    other record is a dict of one key starting with ``$``. A torn tail is skipped
    without a record (:attr:`TraceFile.torn` tells it).

    Raises:
        TraceError: the file cannot be opened or read, or it is not a trace (its magic
            differs, or its format is newer than this reader); the message is one line
            naming the file.
    """
    return TraceFile(path, max_chunk=max_chunk).records()


def _decode_pure(body: bytes, node: Any, pid: Any, form: int) -> Chunk:
    """A chunk body decoded and checked (:func:`_check`), its events as envelope tuples
    (``_AS_TUPLES``), Events (``_AS_EVENTS``) or records (``_AS_RECORDS``: :func:`_record`)."""
    chunk = decode_body(body, node=node, pid=pid)
    _check(chunk)
    if chunk.kind == _EVENTS_CHUNK and form != _AS_TUPLES:
        make = _record if form == _AS_RECORDS else _event
        return chunk._replace(content=[make(t) for t in chunk.content])
    return chunk


def _event(t: tuple[Any, ...]) -> Event:
    return Event(*t)


def _decode_c(body: bytes, node: Any, pid: Any, form: int) -> Chunk:
    """:func:`_decode_pure` by the C decoder, which checks events as :func:`_check` does."""
    chunk = Chunk._make(_c_decode_body(body, node, pid, form))
    if chunk.kind != _EVENTS_CHUNK:
        _check(chunk)
    return chunk


_c_decode_body: Any = _core.decode_body
# the one choice point: the C decoder when the chosen core has it (TIDESCOPE_CORE=python
# never does), else the pure one, the specification
_decode: Final = _decode_pure if _c_decode_body is None else _decode_c


def _record(t: tuple[Any, ...]) -> dict[str, Any]:
    """An envelope tuple as the dict :meth:`Event.to_dict` gives (``_check`` has made
    every id but the correlation id a scalar)."""
    eid, ts, wall, node, pid, thread, task, corr, parent, call, ast_id, etype, data = t
    return {
        "event_id": eid,
        "timestamp": ts,
        "wall_time": wall,
        "node": node,
        "pid": pid,
        "thread_id": thread,
        "task_id": task,
        "correlation_id": corr if type(corr) in _SCALARS else jsonable(corr),
        "parent_id": parent,
        "call_id": call,
        "ast_node_id": ast_id,
        "event_type": etype._value_ if type(etype) is EventType else etype,
        "data": _jsonable_data(data),
    }


def _jsonable_data(data: dict[str, Any]) -> dict[str, Any]:
    """``jsonable(data)`` for an event's data dict, without a call per scalar value."""
    out = {}
    for k, v in data.items():
        if type(k) is not str:
            return jsonable(data)  # type: ignore[no-any-return]
        out[k] = v if type(v) in _JSON_AS_IS else jsonable(v)
    return out


def _check(chunk: _tsformat.Chunk) -> None:
    """Raise FormatError unless the chunk holds what every consumer can read: events with
    scalar ids (a correlation id may be any value), int clocks, a str type and a dict of
    data; a header with a scalar node and pid; stats whose counts are counts."""
    if chunk.kind == _tsformat.CHUNK_HEADER:
        if not {type(chunk.content.get("node")), type(chunk.content.get("pid"))} <= _SCALARS:
            raise FormatError("a header with a node or pid that is no scalar")
        return
    if chunk.kind == _tsformat.CHUNK_CLOSE:
        for f in COUNT_FIELDS:
            v = chunk.content.get(f, 0)
            if type(v) is not int or v < 0:
                raise FormatError(f"stats whose {f} is no count")
        return
    if chunk.kind != _tsformat.CHUNK_EVENTS:
        return
    for t in chunk.content:
        if not _tsformat.record_ok(t):
            raise FormatError("a record of bad types")


def _chunks(path: Path, cap: int) -> Iterator[tuple[int, int, bytes]]:
    """``(status, offset, body)`` for each chunk of the file, in order: ``_OK`` with its
    body; ``_BAD`` with the reason (as bytes) for damage skipped up to the next whole
    chunk; ``_TORN`` (last) for a chunk cut short by the end of the file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(MAGIC))
            if head != MAGIC:
                if len(head) < len(MAGIC) and MAGIC.startswith(head):
                    return  # cut before its first chunk: an empty trace
                raise TraceError(f"{path}: not a tidescope trace (no trace file magic)")
            pos = len(MAGIC)
            while True:
                status, length, body = _chunk_at(fh, pos, cap)
                if status == _OK:
                    yield _OK, pos, body
                    pos += _HEAD.size + length
                    continue
                if status == _EOF:
                    return
                if status == _BIG:
                    yield _BAD, pos, f"a chunk of {length} bytes, over the cap of {cap}".encode()
                    pos += _HEAD.size + length
                    continue
                # a chunk running past the end may be a damaged length: is anything whole after?
                after = _resync(fh, pos + 1, cap)
                if after is None and status == _TORN:
                    yield _TORN, pos, b""
                    return
                yield _BAD, pos, body
                if after is None:
                    return
                pos = after
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _chunk_at(fh: IO[bytes], pos: int, cap: int) -> tuple[int, int, bytes]:
    """The chunk at ``pos``: ``(status, length, body or the reason it is bad)``."""
    fh.seek(pos)
    head = fh.read(_HEAD.size)
    if not head:
        return _EOF, 0, b""
    if len(head) < _HEAD.size:
        if SYNC.startswith(head[: len(SYNC)]):
            return _TORN, 0, b"a chunk cut short"
        return _BAD, 0, b"bytes that are no chunk"
    sync, length, crc = _HEAD.unpack(head)
    if sync != SYNC:
        return _BAD, 0, b"bytes that are no chunk"
    if not 1 <= length <= MAX_BODY:
        return _BAD, 0, b"a chunk of an impossible length"
    if length > cap:  # check it without holding it
        got, left = 0, length
        while left:
            piece = fh.read(min(left, _BLOCK))
            if not piece:
                return _TORN, length, b"a chunk cut short"
            got = zlib.crc32(piece, got)
            left -= len(piece)
        return (_BIG, length, b"") if got == crc else (_BAD, length, b"a chunk with a wrong CRC")
    body = fh.read(length)
    if len(body) < length:
        return _TORN, length, b"a chunk cut short"
    if zlib.crc32(body) != crc:
        return _BAD, length, b"a chunk with a wrong CRC"
    return _OK, length, body


def _resync(fh: IO[bytes], pos: int, cap: int) -> int | None:
    """The offset of the next whole chunk at or after ``pos``, or None."""
    while True:
        fh.seek(pos)
        block = fh.read(_BLOCK)
        i = block.find(SYNC)
        if i < 0:
            if len(block) < _BLOCK:
                return None
            pos += len(block) - len(SYNC) + 1
            continue
        at = pos + i
        if _chunk_at(fh, at, cap)[0] in (_OK, _BIG):
            return at
        pos = at + 1
