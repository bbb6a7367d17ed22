"""The binary trace format in pure Python: chunk and value encoder and decoder (the specification).

``docs/trace-format.md`` describes the bytes; this module is its executable form, and the C
encoder gives the same bytes for the same records. Encoding starts from the ring's records
as :meth:`RingBuffer.drain_records` returns them; decoding gives each chunk's kind, counts
and contents. Framing a file (magic, sync, CRC, damage) is the reader's job
(:mod:`tidescope.export.reader`) and the writer's (:mod:`tidescope.export.writer`).
"""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import pathlib
import struct
import uuid
import zlib
from collections.abc import Iterable
from typing import Any, Final, NamedTuple

from tidescope import events as _events
from tidescope.capture._snapshot import type_name as _type_name
from tidescope.events import (
    Event,
    EventType,
    ObjectRef,
    ObjectSnapshot,
    Truncated,
    Unsupported,
)

__all__ = [
    "CHUNK_CLOSE",
    "CHUNK_EVENTS",
    "CHUNK_HEADER",
    "CHUNK_NOTES",
    "FOLDED_CALLS",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_BODY",
    "SYNC",
    "Chunk",
    "FormatError",
    "decode_body",
    "decode_value",
    "encode_close_chunk",
    "encode_events_chunk",
    "encode_header_chunk",
    "encode_value",
    "frame",
    "record_ok",
]

FORMAT_VERSION: Final = 1
MAGIC: Final = b"\x89TSTR\r\n\x1a"
SYNC: Final = b"TSCK"
MAX_BODY: Final = 64 << 20
"""The largest body a chunk may have (bytes)."""
CHUNK_HEADER: Final = 1
CHUNK_EVENTS: Final = 2
CHUNK_CLOSE: Final = 3
CHUNK_NOTES: Final = 4
FOLDED_CALLS: Final = "$folded_calls"
"""The type of a record standing for a run of short calls (``decode_body(fold_ns=...)``);
its data is ``(module, function, calls, total duration ns)``."""
MAX_DEPTH: Final = 64
"""A container or marker nested this deep is written as an unsupported value."""

_ENTRY, _EXIT, _OTHER, _WHOLE = 1, 2, 3, 4
_ID_SHIFT: Final = 22  # ids are (sequence << 22) | pid: see capture/_clock.py
_ID_MASK: Final = (1 << _ID_SHIFT) - 1
_MIN64: Final = -(1 << 63)
_MAX64: Final = (1 << 63) - 1
_ID_FIELDS: Final = (True, False, False, False, True, True, True, False)
_SHIFTS: Final = (0, 2, 4, 6, 8, 10, 12, 14)  # of each field's mode in the u16
_ID_BITS: Final = sum(1 << s for s, is_id in zip(_SHIFTS, _ID_FIELDS, strict=True) if is_id)
_FUNCTION_ENTRY: Final = EventType.FUNCTION_ENTRY
_FUNCTION_EXIT: Final = EventType.FUNCTION_EXIT
_ENTRY_KEYS: Final = ("module", "function", "arity", "args")
_EXIT_KEYS: Final = ("return_value", "exception", "duration_ns", "exit_reason")
_EVENT_TYPES: Final = {m.value: m for m in EventType}
_SCALARS: Final = frozenset({int, str, float, bool, type(None)})
_pack_d = struct.Struct("<d").pack
_pack_dd = struct.Struct("<dd").pack
_unpack_d = struct.Struct("<d").unpack_from
_unpack_dd = struct.Struct("<dd").unpack_from
_pack_head = struct.Struct("<4sII").pack
_crc32 = zlib.crc32
# Redacted is added to tidescope.events by the redaction work; the tag works once it exists.
_Redacted: Any = getattr(_events, "Redacted", None)

# value tags (docs/trace-format.md, "Values")
T_NONE, T_FALSE, T_TRUE, T_INT, T_BIGINT, T_FLOAT, T_STR = range(7)
T_BYTES, T_BYTEARRAY, T_TUPLE, T_LIST, T_SET, T_FROZENSET = range(7, 13)
T_SHAPED, T_DICT, T_TRUNCATED, T_OBJECT, T_REDACTED, T_COMPLEX = range(13, 19)
T_ELLIPSIS, T_NOTIMPLEMENTED, T_RANGE, T_DATETIME, T_DATE, T_TIME = range(19, 25)
T_TIMEDELTA, T_TIMEZONE, T_UUID, T_EVENT_TYPE, T_REF = range(25, 30)
T_UNSUPPORTED: Final = 0x1F
T_SMALL: Final = 0x80
_SEQUENCE_TAGS: Final[dict[type, int]] = {
    tuple: T_TUPLE,
    list: T_LIST,
    set: T_SET,
    frozenset: T_FROZENSET,
}


class FormatError(ValueError):
    """A chunk body that does not decode (the chunk is then counted as damaged)."""


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _uv(out: bytearray, n: int) -> None:
    """Append ``n`` (0 <= n < 2**64) as an unsigned LEB128 varint."""
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _text_of(v: Any, t: type) -> str | None:
    """The text an unsupported value keeps: an enum member's name, a Decimal's, Fraction's
    or path's ``str()``; None for anything else or if reading it fails."""
    try:
        if issubclass(t, enum.Enum):
            name = v._name_
            return name if type(name) is str else None
        if t is decimal.Decimal or t is fractions.Fraction or issubclass(t, pathlib.PurePath):
            text = str(v)
            return text if type(text) is str else None
    except Exception:
        return None
    return None


class _Encoder:
    """One chunk's body being built: its tables and field registers."""

    __slots__ = ("last", "out", "shapes", "sites", "strings")

    def __init__(self, kind: int, seq: int, counts: tuple[int, int, int]) -> None:
        self.out = bytearray((kind,))
        self.strings: dict[str, int] = {}
        self.sites: dict[tuple[str, str], int] = {}
        self.shapes: dict[tuple[str, ...], int] = {}
        self.last: tuple[Any, ...] = (None,) * 8
        for n in (seq, *counts):
            _uv(self.out, n)

    def string(self, s: str) -> None:
        out = self.out
        k = self.strings.get(s)
        if k is not None:
            _uv(out, k)
            return
        b = s.encode("utf-8", "surrogatepass")
        out.append(0)
        _uv(out, len(b))
        out += b
        self.strings[s] = len(self.strings) + 1

    def value(self, v: Any, depth: int = 0) -> None:
        out = self.out
        t = type(v)
        if t is int:
            if 0 <= v < 128:
                out.append(T_SMALL + v)
            elif _MIN64 <= v <= _MAX64:
                out.append(T_INT)
                z = (v << 1) ^ (v >> 63)
                if z < 0x4000:
                    out.append(z & 0x7F | 0x80 if z > 0x7F else z)
                    if z > 0x7F:
                        out.append(z >> 7)
                else:
                    _uv(out, z)
            else:
                b = v.to_bytes(((~v if v < 0 else v).bit_length() + 8) // 8, "little", signed=True)
                out.append(T_BIGINT)
                _uv(out, len(b))
                out += b
        elif t is str:
            out.append(T_STR)
            self.string(v)
        elif v is None:
            out.append(T_NONE)
        elif t is bool:
            out.append(T_TRUE if v else T_FALSE)
        elif t is float:
            out.append(T_FLOAT)
            out += _pack_d(v)
        elif t is tuple or t is list or t is set or t is frozenset or t is dict:
            if depth >= MAX_DEPTH:
                self.unsupported(v, t, with_text=False)
                return
            if t is dict:
                keys = tuple(v)
                shaped = True
                for key in keys:  # a loop, not all(): no generator per dict
                    if type(key) is not str:
                        shaped = False
                        break
                if shaped:
                    out.append(T_SHAPED)
                    k = self.shapes.get(keys)
                    if k is not None:
                        _uv(out, k)
                    else:
                        out.append(0)
                        _uv(out, len(keys))
                        for key in keys:
                            self.string(key)
                        self.shapes[keys] = len(self.shapes) + 1
                    for item in v.values():
                        self.value(item, depth + 1)
                else:
                    out.append(T_DICT)
                    _uv(out, len(v))
                    for key, item in v.items():
                        self.value(key, depth + 1)
                        self.value(item, depth + 1)
                return
            out.append(_SEQUENCE_TAGS[t])
            _uv(out, len(v))
            for item in v:
                self.value(item, depth + 1)
        elif t is Truncated:
            if (
                depth >= MAX_DEPTH
                or type(v.type_name) is not str
                or type(v.size) is not int
                or not 0 <= v.size <= 2 * _MAX64 + 1
                or type(v.reason) is not str
            ):
                self.unsupported(v, t, with_text=False)
                return
            out.append(T_TRUNCATED)
            self.string(v.type_name)
            _uv(out, v.size)
            self.string(v.reason)
            self.value(v.kept, depth + 1)
        elif t is ObjectSnapshot:
            if depth >= MAX_DEPTH or type(v.type_name) is not str:
                self.unsupported(v, t, with_text=False)
                return
            out.append(T_OBJECT)
            self.string(v.type_name)
            self.value(v.object_id, depth + 1)
            self.value(v.attrs, depth + 1)
            self.value(v.repr, depth + 1)
        elif t is _Redacted and type(v.type_name) is str:
            out.append(T_REDACTED)
            self.string(v.type_name)
        elif t is ObjectRef:
            n = v.length
            if (
                type(v.type_name) is not str
                or type(v.object_id) is not int
                or not 0 <= v.object_id <= 2 * _MAX64 + 1
                or not (n is None or (type(n) is int and 0 <= n <= 2 * _MAX64))
            ):
                self.unsupported(v, t, with_text=False)
                return
            out.append(T_REF)
            self.string(v.type_name)
            _uv(out, v.object_id)
            _uv(out, 0 if n is None else n + 1)
        elif t is bytes or t is bytearray:
            out.append(T_BYTES if t is bytes else T_BYTEARRAY)
            _uv(out, len(v))
            out += v
        else:
            self.other(v, t)

    def other(self, v: Any, t: type) -> None:
        """The rarer tags: complex, singletons, range, dates, uuid, EventType, unsupported."""
        out = self.out
        if t is complex:
            out.append(T_COMPLEX)
            out += _pack_dd(v.real, v.imag)
        elif v is Ellipsis:
            out.append(T_ELLIPSIS)
        elif v is NotImplemented:
            out.append(T_NOTIMPLEMENTED)
        elif t is range:
            out.append(T_RANGE)
            self.value(v.start)
            self.value(v.stop)
            self.value(v.step)
        elif t is datetime.datetime or t is datetime.date or t is datetime.time:
            try:  # a user tzinfo's utcoffset() runs here, and may fail
                text = v.isoformat()
            except Exception:
                text = None
            if type(text) is not str:
                self.unsupported(v, t, with_text=False)
                return
            out.append(
                T_DATETIME if t is datetime.datetime else T_DATE if t is datetime.date else T_TIME
            )
            self.string(text)
        elif t is datetime.timedelta:
            out.append(T_TIMEDELTA)
            self.timedelta(v)
        elif t is datetime.timezone:
            out.append(T_TIMEZONE)
            self.timedelta(v.utcoffset(None))
            self.value(v.tzname(None))
        elif t is uuid.UUID:
            out.append(T_UUID)
            out += v.bytes
        elif t is EventType:
            out.append(T_EVENT_TYPE)
            self.string(v._value_)
        else:
            self.unsupported(v, t, with_text=True)

    def timedelta(self, v: datetime.timedelta) -> None:
        for n in (v.days, v.seconds, v.microseconds):
            _uv(self.out, _zigzag(n))

    def unsupported(self, v: Any, t: type, *, with_text: bool) -> None:
        self.out.append(T_UNSUPPORTED)
        self.string(_type_name(t))
        self.value(_text_of(v, t) if with_text else None)

    # -- records ------------------------------------------------------------------------

    def fields(self, kind: int, f: tuple[Any, ...]) -> None:
        """The record's kind, its field modes and payloads, for the 8 envelope fields ``f``."""
        out = self.out
        out.append(kind)
        at = len(out)
        out += b"\0\0"
        last = self.last
        self.last = f
        modes = 0
        for v, prev, shift in zip(f, last, _SHIFTS):  # noqa: B905 - 8 each
            if v is None:
                if prev is not None:
                    modes |= 1 << shift
                continue
            t = type(v)
            if t is int and type(prev) is int:
                d = v - prev
                if not d:
                    continue
                if _ID_BITS >> shift & 1:  # an id: whole steps of the sequence, or in full
                    fits = not d & _ID_MASK
                    d >>= _ID_SHIFT
                else:
                    fits = True
                if fits and _MIN64 <= d <= _MAX64:
                    z = (d << 1) ^ (d >> 63)
                    if z < 0x80:
                        out.append(z)
                    elif z < 0x4000:  # a timestamp's step, mostly
                        out.append(z & 0x7F | 0x80)
                        out.append(z >> 7)
                    else:
                        _uv(out, z)
                    modes |= 2 << shift
                    continue
            elif t is str and type(prev) is str and v == prev:
                continue
            modes |= 3 << shift
            self.value(v)
        out[at] = modes & 0xFF
        out[at + 1] = modes >> 8

    def record(self, r: tuple[Any, ...]) -> None:
        if len(r) != 11:
            if len(r) != 2:
                raise TypeError(f"a ring record of {len(r)} items")
            ev = r[1]
            if type(ev) is not Event:
                raise TypeError(f"a ring record holding a {type(ev).__name__}, not an Event")
            self.fields(
                _WHOLE,
                (ev.event_id, ev.timestamp, ev.thread_id, ev.task_id, ev.correlation_id,
                 ev.parent_id, ev.call_id, ev.ast_node_id),
            )  # fmt: skip
            self.value(ev.node)
            self.value(ev.pid)
            self.value(ev.wall_time)
            self.event_type(ev.event_type)
            self.value(ev.data)
            return
        etype = r[9]
        data = r[10]
        if type(data) is tuple and len(data) == 4:
            a, b, c, d = data
            if etype is _FUNCTION_ENTRY and type(a) is str and type(b) is str:
                self.fields(_ENTRY, r[1:9])
                out = self.out
                site = (a, b)
                k = self.sites.get(site)
                if k is not None:
                    _uv(out, k)
                else:
                    out.append(0)
                    self.string(a)
                    self.string(b)
                    self.sites[site] = len(self.sites) + 1
                self.value(c)
                self.value(d)
                return
            if etype is _FUNCTION_EXIT and type(d) is str:
                self.fields(_EXIT, r[1:9])
                self.value(a)
                self.value(b)
                self.value(c)
                self.string(d)
                return
            # as the ring's reader builds it (capture/_ring.py, _event_from_record)
            keys = _ENTRY_KEYS if etype is _FUNCTION_ENTRY else _EXIT_KEYS
            data = dict(zip(keys, data, strict=True))
        self.fields(_OTHER, r[1:9])
        self.event_type(etype)
        self.value(data)

    def event_type(self, etype: Any) -> None:
        self.string(etype if type(etype) is str else str(etype))


def frame(body: bytes | bytearray) -> bytes:
    """A whole chunk: sync, length, CRC-32, then ``body``."""
    if not 1 <= len(body) <= MAX_BODY:
        raise ValueError(f"a chunk body of {len(body)} bytes (at most {MAX_BODY})")
    return _pack_head(SYNC, len(body), _crc32(body)) + body


def encode_events_chunk(
    records: Iterable[tuple[Any, ...]],
    *,
    seq: int,
    events_written: int,
    dropped_events: int,
    internal_errors: int,
    wall_offset_ns: int,
) -> bytes:
    """One EVENTS chunk, framed, of ring records (:meth:`RingBuffer.drain_records`).

    ``events_written``, ``dropped_events`` and ``internal_errors`` are the process's running
    totals after this chunk (``events_written`` includes its records).

    Raises:
        TypeError: a record is ``(position, x)`` with ``x`` not an ``Event``.
        ValueError: the body would pass :data:`MAX_BODY` (write fewer records a chunk).
    """
    if type(records) is not list:
        records = list(records)
    enc = _Encoder(CHUNK_EVENTS, seq, (events_written, dropped_events, internal_errors))
    _uv(enc.out, _zigzag(wall_offset_ns))
    _uv(enc.out, len(records))
    record = enc.record
    for r in records:
        record(r)
    return frame(enc.out)


def encode_header_chunk(
    header: dict[str, Any],
    *,
    seq: int = 0,
    events_written: int = 0,
    dropped_events: int = 0,
    internal_errors: int = 0,
) -> bytes:
    """The HEADER chunk, framed: ``header`` as one value (``format`` is set first)."""
    enc = _Encoder(CHUNK_HEADER, seq, (events_written, dropped_events, internal_errors))
    enc.value({"format": FORMAT_VERSION, **header})
    return frame(enc.out)


def encode_close_chunk(
    stats: dict[str, Any],
    *,
    seq: int,
    events_written: int,
    dropped_events: int,
    internal_errors: int,
) -> bytes:
    """The CLOSE chunk, framed: the session's final ``stats`` as one value."""
    enc = _Encoder(CHUNK_CLOSE, seq, (events_written, dropped_events, internal_errors))
    enc.value(stats)
    return frame(enc.out)


def encode_notes_chunk(
    notes: list[dict[str, Any]],
    *,
    seq: int,
    events_written: int,
    dropped_events: int,
    internal_errors: int,
) -> bytes:
    """A NOTES chunk, framed: thread and task notes (``take_notes``) as one list value."""
    enc = _Encoder(CHUNK_NOTES, seq, (events_written, dropped_events, internal_errors))
    enc.value(notes)
    return frame(enc.out)


def encode_value(v: Any) -> bytes:
    """``v`` as a value on its own (fresh tables): for tests and the format's examples."""
    enc = _Encoder(0, 0, (0, 0, 0))
    start = len(enc.out)
    enc.value(v)
    return bytes(enc.out[start:])


# -- decoding ---------------------------------------------------------------------------


class Chunk(NamedTuple):
    """A decoded chunk body.

    ``content`` is the header dict (HEADER), the stats dict (CLOSE), or for EVENTS the list
    of its events, each a tuple of the 13 envelope fields in ``ENVELOPE_FIELDS`` order with
    ``node``, ``pid`` and ``wall_time`` filled in from ``node``, ``pid`` and the chunk's
    offset. For a kind this reader does not know, ``content`` is None.
    """

    kind: int
    seq: int
    counts: tuple[int, int, int]
    content: Any


class _Decoder:
    __slots__ = ("buf", "pos", "shapes", "sites", "strings")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0
        self.strings: list[str] = []
        self.sites: list[tuple[str, str]] = []
        self.shapes: list[tuple[str, ...]] = []

    def uv(self) -> int:
        buf = self.buf
        p = self.pos
        x = buf[p]
        p += 1
        if x < 0x80:
            self.pos = p
            return x
        n = x & 0x7F
        shift = 7
        while True:
            x = buf[p]
            p += 1
            n |= (x & 0x7F) << shift
            if x < 0x80:
                break
            shift += 7
            if shift > 63:
                raise FormatError("a varint longer than 10 bytes")
        self.pos = p
        if n >> 64:
            raise FormatError("a varint past 64 bits")
        return n

    def sv(self) -> int:
        n = self.uv()
        return (n >> 1) ^ -(n & 1)

    def take(self, n: int) -> bytes:
        p = self.pos
        end = p + n
        if end > len(self.buf):
            raise FormatError("a length past the end of the chunk")
        self.pos = end
        return self.buf[p:end]

    def string(self) -> str:
        k = self.uv()
        if k:
            return self.strings[k - 1]
        s = self.take(self.uv()).decode("utf-8", "surrogatepass")
        self.strings.append(s)
        return s

    def shape(self) -> tuple[str, ...]:
        k = self.uv()
        if k:
            return self.shapes[k - 1]
        keys = tuple(self.string() for _ in range(self.count()))
        self.shapes.append(keys)
        return keys

    def site(self) -> tuple[str, str]:
        k = self.uv()
        if k:
            return self.sites[k - 1]
        site = (self.string(), self.string())
        self.sites.append(site)
        return site

    def count(self) -> int:
        n = self.uv()
        if n > len(self.buf) - self.pos:  # every item takes a byte at least
            raise FormatError("a count past the end of the chunk")
        return n

    def value(self, depth: int = 0) -> Any:
        tag = self.buf[self.pos]
        self.pos += 1
        if tag >= T_SMALL:
            return tag - T_SMALL
        if tag == T_STR:
            return self.string()
        if tag == T_INT:
            return self.sv()
        if tag == T_NONE:
            return None
        if T_TUPLE <= tag <= T_OBJECT and depth >= MAX_DEPTH:
            raise FormatError("a value nested too deep")
        if tag == T_SHAPED:
            keys = self.shape()
            return {k: self.value(depth + 1) for k in keys}
        if tag == T_FALSE:
            return False
        if tag == T_TRUE:
            return True
        if tag == T_FLOAT:
            (f,) = _unpack_d(self.take(8))
            return f
        if T_TUPLE <= tag <= T_FROZENSET:
            items = [self.value(depth + 1) for _ in range(self.count())]
            if tag == T_LIST:
                return items
            return (tuple, list, set, frozenset)[tag - T_TUPLE](items)
        if tag == T_DICT:
            n = self.count()
            return {self.value(depth + 1): self.value(depth + 1) for _ in range(n)}
        if tag == T_BIGINT:
            return int.from_bytes(self.take(self.uv()), "little", signed=True)
        if tag == T_BYTES:
            return self.take(self.uv())
        if tag == T_BYTEARRAY:
            return bytearray(self.take(self.uv()))
        if tag == T_TRUNCATED:
            name = self.string()
            size = self.uv()
            return Truncated(name, size, self.string(), self.value(depth + 1))
        if tag == T_OBJECT:
            name = self.string()
            oid = self.value(depth + 1)
            attrs = self.value(depth + 1)
            return ObjectSnapshot(name, oid, attrs, self.value(depth + 1))
        if tag == T_REDACTED:
            name = self.string()
            if _Redacted is None:
                return Unsupported("tidescope.events.Redacted", name)
            return _Redacted(name)
        if tag == T_REF:
            name = self.string()
            oid = self.uv()
            n = self.uv()
            return ObjectRef(name, oid, None if n == 0 else n - 1)
        return self.other(tag)

    def other(self, tag: int) -> Any:
        if tag == T_COMPLEX:
            return complex(*_unpack_dd(self.take(16)))
        if tag == T_ELLIPSIS:
            return Ellipsis
        if tag == T_NOTIMPLEMENTED:
            return NotImplemented
        if tag == T_RANGE:
            return range(self.value(), self.value(), self.value())
        if tag == T_DATETIME:
            return datetime.datetime.fromisoformat(self.string())
        if tag == T_DATE:
            return datetime.date.fromisoformat(self.string())
        if tag == T_TIME:
            return datetime.time.fromisoformat(self.string())
        if tag == T_TIMEDELTA:
            return self.timedelta()
        if tag == T_TIMEZONE:
            offset = self.timedelta()
            name = self.value()
            return datetime.timezone(offset) if name is None else datetime.timezone(offset, name)
        if tag == T_UUID:
            return uuid.UUID(bytes=self.take(16))
        if tag == T_EVENT_TYPE:
            return _event_type(self.string())
        if tag == T_UNSUPPORTED:
            name = self.string()
            text = self.value()
            if type(text) not in (str, type(None)):
                raise FormatError("an unsupported value with a text that is no str")
            return Unsupported(name, text)
        raise FormatError(f"an unknown value tag 0x{tag:02x}")

    def timedelta(self) -> datetime.timedelta:
        return datetime.timedelta(self.sv(), self.sv(), self.sv())

    def events(
        self, node: Any, pid: Any, lean: bool = False, folding: _Folding | None = None
    ) -> list[tuple[Any, ...]]:
        offset = self.sv()
        n = self.count()
        last: list[Any] = [None] * 8
        out: list[tuple[Any, ...]] = []
        buf = self.buf
        site: Any = None
        for _ in range(n):
            kind = buf[self.pos]
            modes = buf[self.pos + 1] | buf[self.pos + 2] << 8
            self.pos += 3
            for i in range(8):
                mode = (modes >> (2 * i)) & 3
                if mode == 1:
                    last[i] = None
                elif mode == 2:
                    prev = last[i]
                    if type(prev) is not int:
                        raise FormatError("a delta from a field that is no int")
                    d = self.sv()
                    last[i] = prev + (d << _ID_SHIFT if _ID_FIELDS[i] else d)
                elif mode == 3:
                    last[i] = self.value()
            eid, ts, thread, task, corr, parent, call, ast_id = last
            if kind == _ENTRY:
                module, function = site = self.site()
                arity = self.value()
                args = self.value()
                data: Any = {
                    "module": module, "function": function, "arity": arity,
                    "args": None if lean else args,
                }  # fmt: skip
                etype: Any = _FUNCTION_ENTRY
            elif kind == _EXIT:
                rv = self.value()
                if lean:
                    rv = None
                exc = self.value()
                dur = self.value()
                data = {
                    "return_value": rv, "exception": exc, "duration_ns": dur,
                    "exit_reason": self.string(),
                }  # fmt: skip
                etype = _FUNCTION_EXIT
            elif kind == _OTHER:
                etype = _event_type(self.string())
                data = self.value()
            elif kind == _WHOLE:
                ev_node = self.value()
                ev_pid = self.value()
                wall = self.value()
                etype = _event_type(self.string())
                data = self.value()
                rec = (eid, ts, wall, ev_node, ev_pid, thread, task, corr, parent, call, ast_id,
                       etype, data)  # fmt: skip
            else:
                raise FormatError(f"an unknown record kind {kind}")
            if kind != _WHOLE:
                if type(ts) is not int:
                    raise FormatError("a timestamp that is no int")
                rec = (eid, ts, ts + offset, node, pid, thread, task, corr, parent, call,
                       ast_id, etype, data)  # fmt: skip
            if folding is None:
                out.append(rec)
            else:
                folding.take(out, rec, kind, site)
        if folding is not None:
            folding.end(out)
        return out


def record_ok(t: tuple[Any, ...]) -> bool:
    """The reader's check of one envelope tuple: scalar ids (a correlation id may be any
    value), int clocks, a str type and a dict of data."""
    return (
        type(t[1]) is int
        and type(t[2]) is int
        and isinstance(t[11], str)
        and type(t[12]) is dict
        and {type(t[0]), type(t[3]), type(t[4]), type(t[5]), type(t[6]), type(t[8]),
             type(t[9]), type(t[10])} <= _SCALARS
    )  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    return a is b or bool(a == b)


_RUN_KEY: Final = (3, 4, 5, 6, 7, 8, 10)  # a run's calls share these fields (and the site)


class _Folding:
    """``decode_body(fold_ns=...)``: checks each record (``record_ok``) as it is decoded
    and folds the short calls: a call whose exit follows its entry, lasted less than
    ``fold_ns`` (an int duration) and did not raise is no record; a run of them of one
    site with the same envelope but for ids and clocks is one record of type
    :data:`FOLDED_CALLS`: the first entry's envelope with the last exit's timestamp and
    wall time, the data ``(module, function, calls, total ns)``. The C decoder's
    ``mode 13`` (``_decode.c``) is its twin."""

    def __init__(self, fold_ns: int) -> None:
        self.fold_ns = fold_ns
        self.bad = False
        self.pend: tuple[tuple[Any, ...], Any] | None = None  # an entry, its site
        self.run: list[Any] | None = None  # first entry, site, calls, total ns, last exit

    def take(self, out: list[tuple[Any, ...]], rec: tuple[Any, ...], kind: int, site: Any) -> None:
        if self.bad:
            return  # past a bad record, the rest is decoded only to find damage
        if not record_ok(rec):
            self.bad = True
            return
        pend = self.pend
        if kind == _EXIT and pend is not None:
            data = rec[12]
            dur = data["duration_ns"]
            if (
                type(dur) is int
                and _MIN64 <= dur < self.fold_ns
                and data["exit_reason"] != "exception"
                and _same(rec[9], pend[0][9])
            ):
                self.pend = None
                run = self.run
                if (
                    run is not None
                    and _same(run[1][0], pend[1][0])
                    and _same(run[1][1], pend[1][1])
                    and all(_same(run[0][k], pend[0][k]) for k in _RUN_KEY)
                    and _MIN64 <= run[3] + dur <= _MAX64
                ):
                    run[2] += 1
                    run[3] += dur
                    run[4] = rec
                else:
                    self.flush(out)
                    self.run = [pend[0], pend[1], 1, dur, rec]
                return
        if pend is not None:
            self.flush(out)
            out.append(pend[0])
            self.pend = None
        if kind == _ENTRY:
            self.pend = (rec, site)
        else:
            self.flush(out)
            out.append(rec)

    def flush(self, out: list[tuple[Any, ...]]) -> None:
        run = self.run
        if run is not None:
            e, (module, function), n, ns, x = run
            out.append((e[0], x[1], x[2], *e[3:11], FOLDED_CALLS, (module, function, n, ns)))
            self.run = None

    def end(self, out: list[tuple[Any, ...]]) -> None:
        if not self.bad:
            self.flush(out)
            if self.pend is not None:
                out.append(self.pend[0])


def decode_value(data: bytes) -> Any:
    """The value :func:`encode_value` wrote.

    Raises:
        FormatError: ``data`` is not one whole value.
    """
    dec = _Decoder(data)
    try:
        value = dec.value()
    except FormatError:
        raise
    except (IndexError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise FormatError(f"{type(exc).__name__}: {exc}") from None
    if dec.pos != len(data):
        raise FormatError(f"{len(data) - dec.pos} bytes after the value")
    return value


def _event_type(value: str) -> EventType | str:
    return _EVENT_TYPES.get(value, value)


def decode_body(
    body: bytes,
    *,
    node: Any = None,
    pid: Any = None,
    lean: bool = False,
    fold_ns: int | None = None,
) -> Chunk:
    """Decode one chunk body (the CRC already checked); ``node`` and ``pid`` (from the
    file's header) fill in the events that do not carry them. ``lean``: each call's
    arguments and return value are None (read past, not kept), for consumers that never
    use them (OTLP export); the C decoder's ``mode | 4`` builds nothing for them (and
    gives a site's entries one shared data dict, equal to these). ``fold_ns`` (implies
    ``lean``): each record is checked as the reader checks it, and the calls shorter than
    ``fold_ns`` that made no call, reported nothing and did not raise are folded into
    records of type :data:`FOLDED_CALLS` (see ``_Folding``; the C decoder's mode 13).

    Raises:
        FormatError: the body does not decode, or holds bytes past its contents, or
            (``fold_ns``) a record of bad types.
    """
    dec = _Decoder(body)
    folding = None if fold_ns is None else _Folding(fold_ns)
    try:
        kind = dec.buf[0]
        dec.pos = 1
        seq = dec.uv()
        counts = (dec.uv(), dec.uv(), dec.uv())
        content: Any
        if kind == CHUNK_EVENTS:
            content = dec.events(node, pid, lean or folding is not None, folding)
        elif kind in (CHUNK_HEADER, CHUNK_CLOSE):
            content = dec.value()
            if type(content) is not dict:
                raise FormatError("a header or stats that is no dict")
        elif kind == CHUNK_NOTES:
            content = dec.value()
            if type(content) is not list or any(type(n) is not dict for n in content):
                raise FormatError("notes that are not a list of dicts")
        else:
            return Chunk(kind, seq, counts, None)
    except FormatError:
        raise
    except (IndexError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # past the end, bad UTF-8, a bad date, an unhashable key...
        raise FormatError(f"{type(exc).__name__}: {exc}") from None
    if dec.pos != len(body):
        raise FormatError(f"{len(body) - dec.pos} bytes after the chunk's contents")
    if folding is not None and folding.bad:
        raise FormatError("a record of bad types")
    return Chunk(kind, seq, counts, content)
