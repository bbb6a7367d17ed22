"""OTLP protobuf wire encoding of spans, by hand: the bytes of ``opentelemetry.proto`` messages.

OpenTelemetry's generated message classes cost about 9 µs to build and serialize one span
with a few attributes (upb backend, measured in bench/bench_otlp.py); the same bytes
written here cost a fraction of that, and a site's constant fields (name, kind, code
attributes) are encoded once and reused. The field numbers are those of
``opentelemetry/proto/trace/v1/trace.proto`` and ``common/v1/common.proto``; the tests
decode every request with the official ``ExportTraceServiceRequest`` class.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, Final

__all__ = [
    "any_value",
    "field_bytes",
    "key_value",
    "request",
    "span_event",
    "varint",
]

_fixed64: Final = struct.Struct("<Q").pack
_double: Final = struct.Struct("<d").pack

# tags: (field << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited)
SPAN_TRACE_ID: Final = b"\x0a"  # 1
SPAN_SPAN_ID: Final = b"\x12"  # 2
SPAN_PARENT: Final = b"\x22"  # 4
SPAN_NAME: Final = b"\x2a"  # 5
SPAN_KIND: Final = b"\x30"  # 6
SPAN_START: Final = b"\x39"  # 7
SPAN_END: Final = b"\x41"  # 8
SPAN_ATTRIBUTE: Final = b"\x4a"  # 9
SPAN_EVENT: Final = b"\x5a"  # 11
SPAN_DROPPED_EVENTS: Final = b"\x60"  # 12
SPAN_LINK: Final = b"\x6a"  # 13
SPAN_STATUS: Final = b"\x7a"  # 15
STATUS_ERROR: Final = b"\x7a\x02\x18\x02"  # Status{code: STATUS_CODE_ERROR}
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3


def varint(n: int) -> bytes:
    """``n`` (>= 0, or a negative int64 as two's complement) as a protobuf varint."""
    if n < 0:
        n += 1 << 64
    if n < 0x80:
        return bytes((n,))
    if n < 1 << 14:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if 1 << 35 <= n < 1 << 42:  # most event ids: a sequence shifted past the pid's 22 bits
        return bytes((
            n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80,
            n >> 21 & 0x7F | 0x80, n >> 28 & 0x7F | 0x80, n >> 35,
        ))  # fmt: skip
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field_bytes(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: ``tag``, the length, ``payload``."""
    n = len(payload)
    return tag + (bytes((n,)) if n < 0x80 else varint(n)) + payload


def any_value(value: Any) -> bytes:
    """An ``AnyValue`` message for a str, bool, int, float or a list of them."""
    t = type(value)
    if t is str:
        return field_bytes(b"\x0a", value.encode("utf-8", "replace"))
    if t is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if t is int:
        if -(1 << 63) <= value < 1 << 63:
            return b"\x18" + varint(value)
        return field_bytes(b"\x0a", str(value).encode())
    if t is float:
        return b"\x21" + _double(value)
    if t is list or t is tuple:
        array = b"".join(field_bytes(b"\x0a", any_value(v)) for v in value)
        return field_bytes(b"\x2a", array)
    return field_bytes(b"\x0a", str(value).encode("utf-8", "replace"))


def key_value(key: str, value: Any) -> bytes:
    """A ``KeyValue`` message (without its own tag)."""
    return field_bytes(b"\x0a", key.encode()) + field_bytes(b"\x12", any_value(value))


def int_attribute(key: bytes, n: int) -> bytes:
    """An int attribute of a Span; ``key`` is :func:`int_key` of its name."""
    v = varint(n)
    return b"\x4a" + bytes((len(key) + len(v) + 2,)) + key + bytes((len(v) + 1,)) + b"\x18" + v


def int_array_attribute(key: bytes, values: list[int]) -> bytes:
    """An attribute of a Span whose value is an array of ints (as :func:`attribute` writes
    it, for less); ``key`` is :func:`int_key` of its name."""
    if len(values) == 1 and 0 <= values[0] < 1 << 63 and len(key) < 100:  # most spans
        v = varint(values[0])
        n = len(v)  # AnyValue{array: ArrayValue{values: [AnyValue{int: v}]}}, by hand
        head = bytes((len(key) + n + 6,))
        return b"\x4a" + head + key + bytes((n + 5, 0x2A, n + 3, 0x0A, n + 1, 0x18)) + v
    if values and min(values) >= -(1 << 63) and max(values) < 1 << 63:
        items = b"".join(
            [b"\x0a" + bytes((len(b) + 1,)) + b"\x18" + b for b in map(varint, values)]
        )
        any_ = (
            b"\x2a" + bytes((len(items),)) + items
            if len(items) < 0x80
            else field_bytes(b"\x2a", items)
        )
    else:
        any_ = any_value(values)
    body = key + (bytes((len(any_),)) if len(any_) < 0x80 else varint(len(any_))) + any_
    return field_bytes(b"\x4a", body)


def int_key(name: str) -> bytes:
    """The key field of an int attribute, for :func:`int_attribute` (a name under 100
    bytes)."""
    k = name.encode()
    return b"\x0a" + bytes((len(k),)) + k + b"\x12"


def attribute(tag: bytes, key: str, value: Any) -> bytes:
    """An attribute field of a Span (tag 9), Event (3) or Resource (1)."""
    return field_bytes(tag, key_value(key, value))


def span_event(time_ns: int, name: str, attributes: Iterable[tuple[str, Any]]) -> bytes:
    """A Span's ``events`` field (tag 11) holding one ``Span.Event``."""
    body = b"\x09" + _fixed64(time_ns & 0xFFFFFFFFFFFFFFFF) + field_bytes(b"\x12", name.encode())
    body += b"".join(attribute(b"\x1a", k, v) for k, v in attributes)
    return field_bytes(SPAN_EVENT, body)


def span_link(trace_id: bytes, span_id: bytes, attributes: Iterable[tuple[str, Any]]) -> bytes:
    """A Span's ``links`` field (tag 13) holding one ``Span.Link``."""
    body = field_bytes(b"\x0a", trace_id) + field_bytes(b"\x12", span_id)
    body += b"".join(attribute(b"\x22", k, v) for k, v in attributes)
    return field_bytes(SPAN_LINK, body)


def times(start_ns: int, end_ns: int) -> bytes:
    """The start and end fields of a Span."""
    return (
        SPAN_START
        + _fixed64(start_ns & 0xFFFFFFFFFFFFFFFF)
        + SPAN_END
        + _fixed64(end_ns & 0xFFFFFFFFFFFFFFFF)
    )


def request(resource: list[tuple[str, Any]], scope: tuple[str, str], spans: list[bytes]) -> bytes:
    """An ``ExportTraceServiceRequest`` of one resource and one scope holding ``spans`` (each
    the bytes of a ``Span`` message)."""
    res = b"".join(attribute(b"\x0a", k, v) for k, v in resource)
    scope_msg = field_bytes(b"\x0a", scope[0].encode()) + field_bytes(b"\x12", scope[1].encode())
    scope_spans = field_bytes(b"\x0a", scope_msg) + b"".join(field_bytes(b"\x12", s) for s in spans)
    resource_spans = field_bytes(b"\x0a", res) + field_bytes(b"\x12", scope_spans)
    return field_bytes(b"\x0a", resource_spans)
