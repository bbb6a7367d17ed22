"""The Perfetto export's wire level: varints, fields and debug annotation values.

Protobuf encoded by hand (``perfetto.py`` explains why), with the bounds on annotation
values: :data:`MAX_DEPTH` levels, :data:`MAX_ITEMS` items per container, :data:`MAX_STRING`
characters per string.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, Final

MAX_DEPTH: Final = 8
MAX_ITEMS: Final = 64
MAX_STRING: Final = 1024

# TrackEvent.Type and TracePacket.SequenceFlags (protos/perfetto/trace/track_event/)
_BEGIN: Final = b"\x48\x01"  # type (9) = TYPE_SLICE_BEGIN
_END: Final = b"\x48\x02"  # TYPE_SLICE_END
_INSTANT: Final = b"\x48\x03"  # TYPE_INSTANT
_CLEARED: Final = 1  # SEQ_INCREMENTAL_STATE_CLEARED
_NEEDS: Final = 2  # SEQ_NEEDS_INCREMENTAL_STATE
_MASK64: Final = (1 << 64) - 1
_INT64: Final = 1 << 63
_fixed64 = struct.Struct("<Q").pack
_double = struct.Struct("<d").pack
# Varints by table, 14 bits at a time: a timestamp (41 bits) is three lookups, not six
# rounds of shifts (the loop was a quarter of the export's time).
_V14: Final = [
    bytes((v,)) if v < 0x80 else bytes(((v & 0x7F) | 0x80, v >> 7)) for v in range(1 << 14)
]
_C14: Final = [bytes(((v & 0x7F) | 0x80, (v >> 7) | 0x80)) for v in range(1 << 14)]
_SMALL: Final = _V14[:128]


def _varint(value: int) -> bytes:
    """``value`` (an unsigned, or an int64 as two's complement) as a protobuf varint."""
    if value < 0x4000:
        if value >= 0:
            return _V14[value]
        value &= _MASK64
    if value < 0x10000000:
        return _C14[value & 0x3FFF] + _V14[value >> 14]
    if value < 0x40000000000:
        return _C14[value & 0x3FFF] + _C14[(value >> 14) & 0x3FFF] + _V14[value >> 28]
    return _C14[value & 0x3FFF] + _C14[(value >> 14) & 0x3FFF] + _varint_tail(value >> 28)


def _varint_tail(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes | bytearray) -> bytes:
    """A length-delimited field: ``tag``, the length, ``payload``."""
    return tag + _varint(len(payload)) + payload


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate (JSON allows them); protobuf strings can't
        return text.encode(errors="backslashreplace")


def _str(text: str) -> bytes:
    if len(text) > MAX_STRING:
        text = f"{text[:MAX_STRING]}... ({len(text)} chars)"
    return _utf8(text)


def _key(key: Any) -> bytes:
    """A dict entry's ``name`` field (10); the first keys seen are kept encoded."""
    field = _KEYS.get(key)
    if field is None:
        field = _field(b"\x52", _str(str(key)))
        if len(_KEYS) < _MAX_KEYS and type(key) is str:
            _KEYS[key] = field
    return field


_KEYS: dict[Any, bytes] = {}
_MAX_KEYS: Final = 1 << 12


def _value(value: Any, depth: int = 0) -> bytes:
    """The value fields of a ``DebugAnnotation`` for a trace value (JSON-like data)."""
    t = type(value)
    if t is dict:
        return _dict(value, depth)
    if t is int:
        if 0 <= value < 0x4000:
            small: int = value
            return b"\x20" + _V14[small]  # int_value (4)
        if -_INT64 <= value < _INT64:
            return b"\x20" + _varint(value)
        return _field(b"\x32", _str(str(value)))
    if t is str:
        if len(value) < 0x80:
            try:
                text: bytes = value.encode()
                return b"\x32" + _V14[len(text)] + text  # string_value (6)
            except UnicodeEncodeError:
                pass
        return _field(b"\x32", _str(value))
    if t is bool:
        return b"\x10\x01" if value else b"\x10\x00"  # bool_value (2)
    if t is float:
        return b"\x29" + _double(value)  # double_value (5)
    if value is None:
        return b"\x32\x04None"
    if t is list or t is tuple:
        if depth >= MAX_DEPTH:
            return _field(b"\x32", _str(f"[... {len(value)} items]"))
        out = bytearray()
        for item in value[:MAX_ITEMS]:
            out += _field(b"\x62", _value(item, depth + 1))  # array_values (12)
        if len(value) > MAX_ITEMS:
            out += _field(b"\x62", _field(b"\x32", b"... %d more" % (len(value) - MAX_ITEMS)))
        return bytes(out) if out else b"\x32\x02[]"
    return _field(b"\x32", _str(repr(value)))


def _dict(value: dict[Any, Any], depth: int) -> bytes:
    """A dict's ``dict_entries`` (11), each named by its key."""
    if depth >= MAX_DEPTH:
        return _field(b"\x32", _str(f"{{... {len(value)} items}}"))
    if not value:
        return b"\x32\x02{}"
    out = b""
    items: Iterable[tuple[Any, Any]] = value.items()
    if len(value) > MAX_ITEMS:
        items = list(items)[:MAX_ITEMS]
    for key, item in items:
        # small ints and short ASCII strings inline: the arguments of most calls
        ti = type(item)
        if ti is int and 0 <= item < 0x4000:
            entry = (_KEYS.get(key) or _key(key)) + b"\x20" + _V14[item]
        elif ti is str and len(item) < 0x80 and item.isascii():
            entry = (_KEYS.get(key) or _key(key)) + b"\x32" + _V14[len(item)] + item.encode()
        else:
            entry = (_KEYS.get(key) or _key(key)) + _value(item, depth + 1)
        out += b"\x5a" + _varint(len(entry)) + entry  # dict_entries (11)
    if len(value) > MAX_ITEMS:
        more = b"\x52\x03..." + _field(b"\x32", b"%d more" % (len(value) - MAX_ITEMS))
        out += _field(b"\x5a", more)
    return out


def _flow(kind: str, data: dict[str, Any]) -> bytes:
    """``flow_ids`` (47, fixed64) joining the two ends of a message, remote call or spawn."""
    if kind == "m":
        key: Any = data.get("message_id")
    elif kind == "r":
        key = (data.get("trace_id"), data.get("span_id"))
        if key[0] is None:
            return b""
    else:
        key = data.get("spawn_id")
    if key is None:
        return b""
    try:
        fid = hash((kind, key)) & _MASK64 or 1
    except TypeError:  # an unhashable id: no flow
        return b""
    return b"\xf9\x02" + _fixed64(fid)
