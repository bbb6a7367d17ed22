"""The C chunk decoder (capture/_decode.c) against the pure one, the specification: equal
results for every body the pure encoder writes, and for random and mutated bodies either
equal results or a FormatError from both; the reader picks it through one choice point."""

from __future__ import annotations

import datetime
import gc
import os
import struct
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_tsformat import PID, ring_records, values, whole_events

from tidescope.capture import _core
from tidescope.events import ENVELOPE_FIELDS, Event, EventType, ObjectSnapshot, Truncated
from tidescope.export import reader
from tidescope.export._tsformat import (
    FOLDED_CALLS,
    FormatError,
    decode_body,
    encode_close_chunk,
    encode_events_chunk,
    encode_header_chunk,
    encode_value,
)
from tidescope.export.reader import TraceFile

pytestmark = pytest.mark.skipif(
    _core.decode_body is None, reason="the chosen core has no C decoder"
)
c_decode = _core.decode_body
NODE = "node"
FOLD_NS = 1000  # the calls shorter than this fold (mode 13)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 is not True, NaN is its bits)."""
    t = type(a)
    if t is not type(b):
        return False
    if t is float:
        return struct.pack("<d", a) == struct.pack("<d", b)
    if t is complex:
        return same(a.real, b.real) and same(a.imag, b.imag)
    if t in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if t is dict:
        return len(a) == len(b) and all(
            same(k, j) and same(a[k], b[j]) for k, j in zip(a, b, strict=True)
        )
    if t in (set, frozenset):
        return a == b and sorted(map(repr, a)) == sorted(map(repr, b))
    if t is Event:
        return all(same(getattr(a, f), getattr(b, f)) for f in ENVELOPE_FIELDS)
    if hasattr(t, "__slots__") and t.__module__ == "tidescope.events":  # the markers
        return all(same(getattr(a, f), getattr(b, f)) for f in t.__slots__)
    return bool(a == b) and repr(a) == repr(b)


def both(body: bytes, node: Any = NODE, pid: Any = PID) -> Any:
    """Decode ``body`` with both decoders; assert they agree; the pure result or None."""
    try:
        want = tuple(decode_body(body, node=node, pid=pid))
    except FormatError:
        want = None
    try:
        got = c_decode(body, node, pid, 0)
    except FormatError:
        got = None
    assert (want is None) == (got is None), (body.hex(), want, got)
    if want is not None:
        assert same(want, got), (body.hex(), want, got)
    try:  # lean (the OTLP exporter's): calls' arguments and return values read past
        want_lean = tuple(decode_body(body, node=node, pid=pid, lean=True))
    except FormatError:
        want_lean = None
    try:
        got_lean = c_decode(body, node, pid, 4)
    except FormatError:
        got_lean = None
    assert (want_lean is None) == (want is None) == (got_lean is None), (body.hex(), got_lean)
    if want_lean is not None:
        assert same(want_lean, got_lean), (body.hex(), want_lean, got_lean)
    try:  # folded (the OTLP exporter's): checked, short calls as runs
        want_fold = tuple(decode_body(body, node=node, pid=pid, fold_ns=FOLD_NS))
    except FormatError:
        want_fold = None
    try:
        got_fold = c_decode(body, node, pid, 13, FOLD_NS)
    except FormatError:
        got_fold = None
    try:
        checked = c_decode(body, node, pid, 5)
    except FormatError:
        checked = None
    assert (want_fold is None) == (got_fold is None) == (checked is None), body.hex()
    if want_fold is not None:
        assert same(want_fold, got_fold), (body.hex(), want_fold, got_fold)
    for form in (reader._AS_EVENTS, reader._AS_RECORDS):  # the reader's two paths
        try:
            want_r = reader._decode_pure(body, node, pid, form)
        except FormatError:
            want_r = None
        try:
            got_r = reader._decode_c(body, node, pid, form)
        except FormatError:
            got_r = None
        assert (want_r is None) == (got_r is None), (body.hex(), want_r, got_r)
        if want_r is not None:
            assert same(tuple(want_r), tuple(got_r)), (body.hex(), want_r, got_r)
    return want


def events_body(records: list[tuple[Any, ...]], offset: int = 0) -> bytes:
    chunk = encode_events_chunk(
        records, seq=3, events_written=len(records), dropped_events=1, internal_errors=2,
        wall_offset_ns=offset,
    )  # fmt: skip
    return chunk[12:]


@given(st.lists(ring_records | whole_events, max_size=12), st.integers(-(2**62), 2**62))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_the_c_decoder_reads_every_events_chunk_as_the_pure_one(
    records: list[tuple[Any, ...]], offset: int
) -> None:
    assert both(events_body(records, offset)) is not None


def short_call(
    call: int, parent: Any, corr: Any, ast: Any, site: tuple[str, str], dur: Any, reason: str
) -> list[tuple[Any, ...]]:
    """A call's entry and its exit, right after it (a call the fold mode may fold)."""
    return [
        (0, call, 100, 5, None, corr, parent, call, ast, EventType.FUNCTION_ENTRY,
         (*site, 1, ("arg",))),
        (0, call + (1 << 22), 100 + (dur if type(dur) is int else 3), 5, None, corr, parent,
         call, ast, EventType.FUNCTION_EXIT, ("rv", None, dur, reason)),
    ]  # fmt: skip


short_calls = st.builds(
    short_call,
    st.integers(1, 3).map(lambda k: k << 22 | PID),
    st.sampled_from([None, 7 << 22 | PID, 8 << 22 | PID]),
    st.sampled_from([None, "req-1", 2]),
    st.sampled_from([None, "a:f:1:0:Call"]),
    st.sampled_from([("m", "f"), ("m", "g")]),
    st.sampled_from([0, 5, FOLD_NS - 1, FOLD_NS, -(2**63), 2**63 - 1, 2**63, None, True]),
    st.sampled_from(["normal", "exception"]),
)


@given(
    st.lists(short_calls | ring_records.map(lambda r: [r]), max_size=10).map(
        lambda parts: [r for part in parts for r in part]
    ),
    st.integers(-(2**62), 2**62),
)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_the_c_decoder_folds_short_calls_as_the_pure_one(
    records: list[tuple[Any, ...]], offset: int
) -> None:
    assert both(events_body(records, offset)) is not None


def test_short_calls_fold_into_runs_of_one_site_and_caller() -> None:
    """Mode 13 / fold_ns: a call whose exit follows its entry, shorter than fold_ns, that
    did not raise, is no record; a run of them (one site, one caller) is one record with
    the first entry's envelope, the last exit's clocks and the calls' count and total."""
    p = 7 << 22 | PID
    calls = [(k + 10) << 22 | PID for k in range(10)]
    records = [
        (0, p, 10, 5, None, "c", None, p, None, EventType.FUNCTION_ENTRY, ("m", "main", 0, ())),
        *short_call(calls[0], p, "c", None, ("m", "f"), 5, "normal"),
        *short_call(calls[1], p, "c", None, ("m", "f"), 6, "normal"),
        *short_call(calls[2], p, "c", None, ("m", "f"), 7, "normal"),
        *short_call(calls[3], p, "c", None, ("m", "g"), 8, "normal"),  # another site
        *short_call(calls[4], p, "c", None, ("m", "g"), 9, "exception"),  # raised
        *short_call(calls[5], p, "c", None, ("m", "g"), FOLD_NS, "normal"),  # long
        *short_call(calls[6], p, "d", None, ("m", "g"), 1, "normal"),  # another correlation
        short_call(calls[7], p, "c", None, ("m", "g"), 1, "normal")[0],
        (0, 3, 50, 5, None, "c", None, None, None, "custom", {}),  # between entry and exit
        short_call(calls[7], p, "c", None, ("m", "g"), 1, "normal")[1],
        (0, p + (1 << 22), 60, 5, None, "c", None, p, None, EventType.FUNCTION_EXIT,
         (None, None, 50, "normal")),
        short_call(calls[8], p, "c", None, ("m", "f"), 1, "normal")[0],  # open at the end
    ]  # fmt: skip
    body = events_body(records, offset=1000)
    out = c_decode(body, NODE, PID, 13, FOLD_NS)[3]
    assert same(out, list(decode_body(body, node=NODE, pid=PID, fold_ns=FOLD_NS).content))
    full = c_decode(body, NODE, PID, 5)[3]
    kinds = [(r[11], r[12] if r[11] == FOLDED_CALLS else None) for r in out]
    assert kinds == [
        (EventType.FUNCTION_ENTRY, None),
        (FOLDED_CALLS, ("m", "f", 3, 18)),
        (FOLDED_CALLS, ("m", "g", 1, 8)),
        *[(EventType.FUNCTION_ENTRY, None), (EventType.FUNCTION_EXIT, None)] * 2,
        (FOLDED_CALLS, ("m", "g", 1, 1)),
        (EventType.FUNCTION_ENTRY, None), ("custom", None), (EventType.FUNCTION_EXIT, None),
        (EventType.FUNCTION_EXIT, None),
        (EventType.FUNCTION_ENTRY, None),
    ]  # fmt: skip
    run = out[1]
    assert same(run[:1] + run[3:11], full[1][:1] + full[1][3:11])  # the first entry's
    assert same(run[1:3], full[6][1:3])  # the last exit's clocks
    assert same(out[0], full[0]) and same(out[3:7], full[9:13]) and same(out[8:], full[15:])
    assert not any(gc.is_tracked(r) or gc.is_tracked(r[12]) for r in out[1:3])
    with pytest.raises(TypeError):
        c_decode(body, NODE, PID, 12, FOLD_NS)  # fold_ns goes with mode 13 only
    with pytest.raises(TypeError):
        c_decode(body, NODE, PID, 13)


@given(st.dictionaries(st.text(max_size=5), values, max_size=5))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_the_c_decoder_reads_every_header_and_stats_chunk_as_the_pure_one(
    d: dict[str, Any],
) -> None:
    assert both(encode_header_chunk(d)[12:]) is not None
    close = encode_close_chunk(d, seq=9, events_written=1, dropped_events=2, internal_errors=3)
    assert both(close[12:]) is not None


# Bodies like a drain's: calls with scalars, containers and every marker; a header; stats.
_call = 5 << 22 | PID
_records: list[tuple[Any, ...]] = []
for _i, _v in enumerate(
    [3, -1, 2**70, 1.5, "hé\udc80", b"\x00b", bytearray(b"x"), (1, [2]), {1, 2},
     frozenset({3}), {"k": None}, {1: "a"}, Truncated("str", 99, "length", "ab"),
     ObjectSnapshot("m.C", 12, {"a": 1}, None), complex(1, 2), ..., NotImplemented,
     range(1, 9, 2), datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.UTC),
     datetime.date(2026, 1, 2), datetime.time(1, 2), datetime.timedelta(3, 4, 5),
     datetime.timezone(datetime.timedelta(hours=1), "X"), uuid.UUID(int=7),
     EventType.ERROR, True]
):  # fmt: skip
    _ts = 1000 + 10 * _i
    _records.append((0, _call + (2 * _i << 22), _ts, 5, None, _call, None, _call, None,
                     EventType.FUNCTION_ENTRY, ("m", "f", 1, {"n": _v})))  # fmt: skip
    _records.append((0, _call + ((2 * _i + 1) << 22), _ts + 5, 5, 77, _call, None, _call,
                     "a:f:1", EventType.FUNCTION_EXIT, (_v, None, 5, "normal")))  # fmt: skip
_records.append((0, 1, 2, 3, None, "req-1", None, None, None, "custom", {"x": [1]}))
_records.append((0, Event(9, 9, 9, "other", 8, 1, None, 9, None, 9, None, "t", {})))
CORPUS = [
    events_body(_records[:8]),
    events_body(_records, offset=-5),
    encode_header_chunk({"pid": PID, "node": NODE, "argv": ["a"]})[12:],
    encode_close_chunk(
        {"dropped_events": 0}, seq=2, events_written=3, dropped_events=0, internal_errors=0
    )[12:],
]
mutations = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "insert", "delete"]), st.integers(0, 10**6),
              st.integers(0, 255)),
    min_size=1, max_size=4,
)  # fmt: skip


def mutate(body: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    b = bytearray(body)
    for op, at, byte in ops:
        at %= len(b) + 1
        if op == "insert":
            b[at:at] = bytes((byte,))
        elif at < len(b):
            if op == "flip":
                b[at] ^= 1 << (byte & 7)
            elif op == "set":
                b[at] = byte
            else:
                del b[at]
    return bytes(b)


@given(st.sampled_from(CORPUS), mutations, st.none() | st.integers(1, 4000))
@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_bodies_fail_in_both_decoders_or_read_the_same(
    body: bytes, ops: list[tuple[str, int, int]], cut: int | None
) -> None:
    both(mutate(body, ops)[:cut])


@given(st.sampled_from([1, 2, 3, 9]), st.binary(max_size=200))
@settings(max_examples=1000)
def test_random_bodies_fail_in_both_decoders_or_read_the_same(kind: int, rest: bytes) -> None:
    both(bytes((kind,)) + rest)


HOSTILE = [
    b"\x03\x01\x00\x00\x00" + b"\x0a\x01" * 100_000 + b"\x00",  # lists 100,000 deep
    b"\x03\x01\x00\x00\x00" + (b"\x15\x09\x01") * 10_000 + b"\x00",  # ranges of tuples
    b"\x03\x01\x00\x00\x00" + (b"\x1a\x00\x00\x00") * 10_000 + b"\x00",  # timezones' names
    b"\x03\x01\x00\x00\x00" + (b"\x1f\x00\x01a") * 10_000 + b"\x00",  # unsupported's texts
    b"\x02\x01\x00\x00\x00\x00" + b"\xff" * 11,  # a varint of 11 bytes
    b"\x02\x01\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02",  # past 64 bits
    b"\x03\x01\x00\x00\x00\x07\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # bytes of 2**64-1
    b"\x03\x01\x00\x00\x00\x06\x05",  # a string ref past the table
    b"\x03\x01\x00\x00\x00\x0d\x03",  # a shape ref past the table
    b"\x02\x01\x00\x00\x00\x00\x01\x01\x00\x00\x05",  # a site ref past the table
    b"\x02\x01\x00\x00\x00\x00\x01\x03\x08\x00",  # a delta from None
    b"\x03\x01\x00\x00\x00\x06\x00\x02\xed\xa0",  # UTF-8 cut short
    b"\x03\x01\x00\x00\x00\x0e\x01\x0a\x00\x00",  # an unhashable key
    b"\x03\x01\x00\x00\x00\x16\x00\x01x",  # a date that is no date
    b"\x03\x01\x00\x00\x00\x19\xfe\xff\xff\xff\x0f\x00\x00",  # a timedelta out of range
    b"\x03\x01\x00\x00\x00\x15\x80\x81\x80",  # a range of step 0
]


@pytest.mark.parametrize("body", HOSTILE)
def test_hostile_bodies_are_format_errors_in_both_decoders(body: bytes) -> None:
    assert both(body) is None


def test_lean_decoding_leaves_only_arguments_and_return_values_out() -> None:
    """Mode 4 (and lean=True): a call's ``args`` and ``return_value`` are None, everything
    else as decoded in full, the strings first met inside them still found later; the
    records are untracked by the collector; the reader's check (mode 5) passes them."""
    records = [
        (0, _call, 1000, 5, None, _call, None, _call, None, EventType.FUNCTION_ENTRY,
         ("m", "f", 1, {"n": ["shared text", (1.5, {"k": None})]})),
        (0, _call + (1 << 22), 1005, 5, 77, _call, None, _call, "a:f:1",
         EventType.FUNCTION_EXIT, ({"r": "shared text"}, {"type": "E"}, 5, "exception")),
        (0, 1, 1010, 3, None, "req-1", None, None, None, "custom", {"x": "shared text"}),
    ]  # fmt: skip
    body = events_body(records)
    full = c_decode(body, NODE, PID, 1)[3]
    lean = both(body)
    assert lean is not None
    lean = c_decode(body, NODE, PID, 5)[3]
    assert same(lean, list(decode_body(body, node=NODE, pid=PID, lean=True).content))
    assert full[0][12]["args"] == {"n": ["shared text", (1.5, {"k": None})]}
    assert lean[0][12] == {**full[0][12], "args": None}
    assert lean[1][12] == {**full[1][12], "return_value": None}
    assert lean[1][12]["exception"] == {"type": "E"}
    assert same(lean[2], full[2]) and lean[2][12] == {"x": "shared text"}
    assert all(same(a[:12], b[:12]) for a, b in zip(lean, full, strict=True))
    assert not any(gc.is_tracked(r) for r in lean)
    again = c_decode(events_body(records[:1] * 3), NODE, PID, 5)[3]
    assert again[0][12] is again[1][12] is again[2][12]  # one site's entries: one dict


def test_values_past_64_bits_and_deltas_past_them_read_the_same() -> None:
    big = 2**63 - 1
    records = [
        (0, big, big, 1, None, big, None, big, None, "t", {}),
        (0, big + (1 << 22), big + 1, 1, None, big, None, big, None, "t", {}),  # past int64
        (0, -(2**63), -(2**63), 1, None, None, None, None, None, "t", {}),
        (0, -(2**63) + (5 << 22), -(2**63) + 3, 1, None, None, None, None, None, "t", {}),
    ]
    assert both(events_body(records, offset=2**62)) is not None
    assert both(encode_header_chunk({"v": 2**64 + 5, "w": encode_value(1)})[12:]) is not None


def test_a_trace_reads_to_the_same_events_and_records_on_both_paths(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(
        "import datetime\n"
        "def f(n, x):\n    return {'n': n, 'x': x}\n"
        "for i in range(300):\n    f(i, [i, str(i), datetime.date(2026, 1, 1 + i % 28)])\n"
    )
    out = tmp_path / "trace"
    subprocess.run(
        [sys.executable, "-m", "tidescope", "run", "-o", str(out), "--level", "calls",
         str(script)],
        check=True, capture_output=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    (path,) = reader.trace_files(out)
    chosen = reader._decode
    try:
        reader._decode = reader._decode_pure  # type: ignore[misc]
        want_events = list(TraceFile(path).events())
        want_records = list(TraceFile(path).records())
    finally:
        reader._decode = chosen  # type: ignore[misc]
    assert chosen is reader._decode_c
    events = list(TraceFile(path).events())
    assert len(events) >= 600
    assert same(events, want_events)
    assert same(list(TraceFile(path).records()), want_records)
    for body in _bodies(path):
        assert both(body) is not None


def _bodies(path: Path) -> list[bytes]:
    return [body for status, _, body in reader._chunks(path, reader.MAX_CHUNK) if status == 0]


def test_tidescope_core_python_reads_with_the_pure_decoder() -> None:
    code = "from tidescope.export import reader; print(reader._decode.__name__)"
    for core, name in (("python", "_decode_pure"), ("c", "_decode_c")):
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={**os.environ, "TIDESCOPE_CORE": core},
        )  # fmt: skip
        assert proc.stdout.strip() == name


def test_the_c_decoder_leaks_nothing_on_good_or_bad_bodies() -> None:
    bodies = [*CORPUS, *HOSTILE[4:], *(b[: len(b) // 2] for b in CORPUS)]

    def decode_all() -> None:
        for body in bodies:
            for mode in range(8):  # and each lean (mode | 4)
                try:
                    c_decode(body, NODE, PID, mode)
                except FormatError:
                    pass
            try:  # and folded
                c_decode(body, NODE, PID, 13, FOLD_NS)
            except FormatError:
                pass

    for _ in range(100):  # warm up: caches, free lists, the first imports
        decode_all()
    gc.collect()
    before = sys.getallocatedblocks()
    for _ in range(600):
        decode_all()
    gc.collect()
    # a leak of one block a decode of one body would be 600 or more; the rest is noise
    assert sys.getallocatedblocks() - before < 300
