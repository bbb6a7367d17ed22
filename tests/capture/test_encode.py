"""The C trace encoder (_encode.c) against its specification, ``export._tsformat``.

- golden bytes: the format's worked example (docs/trace-format.md) from the C encoder;
- a Hypothesis differential test: random ring records through both encoders give equal
  bytes, and the pure decoder reads the C bytes back to the records' events;
- the ring path: ``RingBuffer.drain_encoded`` on the C ring gives the bytes the pure
  encoder gives for ``drain_records`` of the same ring, with the same accounting;
- never a crash: values nested far past the depth limit, objects of no known type,
  failing ``isoformat()``, CRC-32 equal to zlib's.

These need the C core: they skip when it is not the one loaded (the run with
``TIDESCOPE_CORE=python``), and fail when ``TIDESCOPE_REQUIRE_C=1`` says it must be.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import os
import pathlib
import threading
import uuid
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tidescope
from tidescope.capture import _core, _ring
from tidescope.events import (
    Event,
    EventType,
    ObjectRef,
    ObjectSnapshot,
    Redacted,
    Truncated,
    Unsupported,
)
from tidescope.export import _tsformat

if _core.CORE_NAME != "c":
    if os.environ.get("TIDESCOPE_REQUIRE_C") == "1" and os.environ.get("TIDESCOPE_CORE") != (
        "python"
    ):
        raise AssertionError(f"the C core is required but not loaded: {_core.CORE_REASON}")
    pytest.skip(f"the C core is not loaded ({_core.CORE_REASON})", allow_module_level=True)

from _leaks import assert_keeps_nothing

from tidescope.capture import _speedups  # type: ignore[attr-defined]

ENTRY, EXIT = EventType.FUNCTION_ENTRY, EventType.FUNCTION_EXIT
PID = 7


def counts(**kw: int) -> dict[str, int]:
    return {
        "seq": 1,
        "events_written": 2,
        "dropped_events": 0,
        "internal_errors": 0,
        "wall_offset_ns": -5,
        **kw,
    }


def both(records: list[tuple[Any, ...]], **kw: int) -> tuple[bytes, bytes]:
    return (
        _tsformat.encode_events_chunk(records, **counts(**kw)),
        _speedups.encode_events_chunk(records, **counts(**kw)),
    )


def test_the_c_encoder_writes_the_formats_worked_example() -> None:
    eid1, eid2 = (1 << 22) | PID, (2 << 22) | PID
    records = [
        (0, eid1, 1000, 5, None, eid1, None, eid1, None, ENTRY, ("m", "f", 1, {"n": 3})),
        (1, eid2, 1300, 5, None, eid1, None, eid1, None, EXIT, (6, None, 300, "normal")),
    ]
    chunk = _speedups.encode_events_chunk(records, **counts())
    assert chunk[:12].hex(" ") == "54 53 43 4b 3f 00 00 00 71 4b b9 5c"
    assert chunk[12:19].hex(" ") == "02 01 02 00 00 09 02"
    assert chunk[19:].hex(" ") == (
        "01 3f 33 03 8e 80 80 04 03 d0 0f 85 03 8e 80 80 04 03 8e 80 80 04 "
        "00 00 01 6d 00 01 66 81 0d 00 01 00 01 6e 83 "
        "02 0a 00 02 d8 04 86 00 03 d8 04 00 06 6e 6f 72 6d 61 6c"
    )


class Color(enum.Enum):
    RED = 1


class Tz(datetime.tzinfo):
    def utcoffset(self, dt: datetime.datetime | None) -> datetime.timedelta:
        raise RuntimeError("no offset")


SAMPLES: list[Any] = [
    None, True, False, 0, 127, 128, -1, 300, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64,
    -(2**64), 2**200, -(2**200), "", "hé", "\ud800", 1.5, float("nan"), float("-inf"),
    {}, {"a": 1, "b": "a"}, {1: 2, "x": None}, (), [1, [2]], {3}, frozenset({4}),
    Truncated("list", 100, "items", [1, 2]), Truncated("str", -1, "bad", None),
    ObjectSnapshot("m.C", 123, {"x": 1}, "C()"), Redacted("str"), 3 + 4j, Ellipsis,
    NotImplemented, range(1, 10, 2), datetime.datetime(2020, 1, 2, 3, 4, 5, 6),
    datetime.datetime(2020, 1, 2, tzinfo=Tz()), datetime.date(2020, 1, 2),
    datetime.time(1, 2), datetime.timedelta(days=-3, seconds=5, microseconds=7),
    datetime.timezone(datetime.timedelta(hours=2), "X"), datetime.UTC,
    uuid.UUID(int=12345), EventType.GENERIC, Color.RED, decimal.Decimal("1.5"),
    fractions.Fraction(1, 3), pathlib.PurePosixPath("/a/b"), object(), b"ab",
    bytearray(b"cd"), Unsupported("x.Y", None),
    ObjectRef("m.C", 140_000_000_000_000), ObjectRef("list", 0, 3), ObjectRef("dict", 2**64 - 1, 0),
    ObjectRef("m.C", 2**64), ObjectRef("m.C", -1), ObjectRef("list", 1, 2**64 - 1),
    ObjectRef("list", 1, 2**64 - 2), ObjectRef(5, 1), ObjectRef("list", 1, True),  # type: ignore[arg-type]
]  # fmt: skip


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_every_value_tag_gives_the_pure_encoders_bytes(value: Any) -> None:
    record = (0, 1 << 22, 10, 5, None, None, None, None, None, "generic", {"v": value})
    pure, c = both([record])
    assert c == pure


def test_values_nested_past_the_depth_limit_are_written_as_unsupported() -> None:
    deep: list[Any] = []
    cur = deep
    for _ in range(10_000):  # far past the limit and any C stack
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    record = (0, 1 << 22, 10, 5, None, None, None, None, None, "generic", {"v": deep})
    pure, c = both([record])
    assert c == pure
    (event,) = _tsformat.decode_body(c[12:]).content
    v = event[-1]["v"]
    for _ in range(63):
        (v,) = v
    assert v == Unsupported("builtins.list", None)


def test_a_record_holding_no_event_raises_typeerror_as_the_pure_encoder() -> None:
    with pytest.raises(TypeError):
        _tsformat.encode_events_chunk([(0, "not an event")], **counts())
    with pytest.raises(TypeError):
        _speedups.encode_events_chunk([(0, "not an event")], **counts())
    with pytest.raises(TypeError):
        _speedups.encode_events_chunk([(0, 1, 2)], **counts())


@pytest.mark.parametrize("data", [b"", b"a", b"hello world", bytes(range(256)) * 41])
def test_crc32_is_zlibs(data: bytes) -> None:
    assert _speedups.crc32(data) == zlib.crc32(data)
    assert _speedups.crc32(data[3:], zlib.crc32(data[:3])) == zlib.crc32(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=700), st.integers(0, 2**32 - 1), st.integers(0, 15))
def test_crc32_is_zlibs_at_every_length_start_and_alignment(
    data: bytes, start: int, skip: int
) -> None:
    # the tables' misaligned head, 8-byte steps and tail
    view = memoryview(data)[min(skip, len(data)) :]
    assert _speedups.crc32(view, start) == zlib.crc32(view, start)


# -- the differential test -------------------------------------------------------------

ids = st.one_of(
    st.none(),
    st.integers(0, 2**40).map(lambda s: (s << 22) | PID),
    st.integers(-(2**70), 2**70),
    st.sampled_from(["a", "b", 1.5, True]),
)
clocks = st.one_of(st.integers(0, 2**62), st.integers(-(2**66), 2**66))  # the reader needs ints
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.sampled_from([Ellipsis, 2j, range(3), Color.RED, EventType.ERROR, Redacted("int")]),
    st.builds(
        ObjectRef, st.text(max_size=8), st.integers(0, 2**64), st.none() | st.integers(0, 2**64)
    ),
)
values = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.lists(kids, max_size=4).map(tuple),
        st.dictionaries(st.sampled_from(["n", "x", "y"]), kids, max_size=3),
        st.dictionaries(st.integers(0, 3), kids, max_size=3),
        st.builds(
            Truncated, st.sampled_from(["list", "str"]), st.integers(0, 99), st.just("items"), kids
        ),
    ),
    max_leaves=12,
)
modules = st.sampled_from(["m", "pkg.mod", "é"])
entries = st.tuples(modules, st.sampled_from(["f", "g"]), st.integers(0, 3), values).map(
    lambda d: (ENTRY, d)
)
exits = st.tuples(values, values, st.one_of(st.integers(0, 2**40), st.none()),
                  st.sampled_from(["normal", "exception", 3])).map(lambda d: (EXIT, d))  # fmt: skip
others = st.tuples(st.sampled_from(["generic", EventType.ERROR, ENTRY, EXIT]), values)
bodies = st.one_of(entries, exits, others)
threads = st.one_of(st.integers(0, 2**64 - 1), st.none())
records = st.tuples(ids, clocks, threads, st.one_of(st.none(), st.text(max_size=3)), ids, ids,
                    ids, st.one_of(st.none(), st.integers(0, 9), st.text(max_size=2)),
                    bodies)  # fmt: skip


def as_record(pos: int, r: tuple[Any, ...]) -> tuple[Any, ...]:
    *fields, (etype, data) = r
    return (pos, *fields, etype, data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, max_size=12), st.integers(0, 2**40), st.integers(-(2**40), 2**40))
def test_random_records_give_the_pure_encoders_bytes_and_decode_back(
    rs: list[tuple[Any, ...]], written: int, offset: int
) -> None:
    recs = [as_record(i, r) for i, r in enumerate(rs)]
    kw = {"events_written": written, "wall_offset_ns": offset}
    pure, c = both(recs, **kw)
    assert c == pure
    decoded = _tsformat.decode_body(c[12:], node="n", pid=PID).content
    assert len(decoded) == len(recs)
    for ev, r in zip(decoded, recs, strict=True):
        assert (ev[0], ev[1], *ev[5:11]) == r[1:9]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, max_size=20), st.integers(1, 8))
def test_the_c_rings_encoded_drain_equals_the_pure_encoding_of_its_records(
    rs: list[tuple[Any, ...]], batch: int
) -> None:
    rings = [_core.RingBuffer(16), _core.RingBuffer(16)]
    for ring in rings:
        for r in rs:
            ring._put(as_record(0, r)[1:])
        ring.write(Event(1, 2, 3, "node", PID, 5, None, None, None, None, None, "generic", {}))
        ring.write("not an event")
    seq = 0
    while True:
        blob, n = rings[0].drain_encoded(batch)
        got = rings[1].drain_records(batch)
        assert rings[0].stats() == rings[1].stats()
        expected = [r for r in got if len(r) == 11 or type(r[1]) is Event]
        assert n == len(expected)
        kw = counts(seq=seq)
        assert _speedups.frame_events_chunk(blob, n, **kw) == _tsformat.encode_events_chunk(
            expected, **kw
        )
        seq += 1
        if not got:
            break


def test_the_pure_ring_has_no_encoded_drain() -> None:
    with pytest.raises(NotImplementedError):
        _ring.RingBuffer(8).drain_encoded()


def test_report_path_events_drain_encoded_as_the_pure_encoder_writes_them() -> None:
    tidescope.start(buffer_size=1024)
    try:
        ring = _core.get_buffer()
        assert ring is not None
        for n in range(20):
            cid = _core.report_function_entry("m", "fib", {"n": n})
            _core.report_function_exit(cid, n * 2)
        twin = _core.RingBuffer(1024)
        for r in ring.read_batch(0, 1024)[0]:
            twin.write(r)  # the same events, as whole Events, for the stats below
        blob, count = ring.drain_encoded()
    finally:
        tidescope.stop()
    assert count == 40
    assert ring.stats()["consumed_events"] == 40
    chunk = _speedups.frame_events_chunk(blob, count, **counts())
    decoded = _tsformat.decode_body(chunk[12:], node="n", pid=PID).content
    expected = twin.drain()
    assert [e[-1] for e in decoded] == [e.data for e in expected]
    assert [(e[0], e[1], e[5], e[7], e[8], e[9]) for e in decoded] == [
        (e.event_id, e.timestamp, e.thread_id, e.correlation_id, e.parent_id, e.call_id)
        for e in expected
    ]


def test_encoding_a_hundred_thousand_events_leaks_no_references_and_no_memory() -> None:
    module, function = "leak.module", "leak_function"
    args = {"n": 10**12, "xs": [1, "two", 3.0], "when": datetime.date(2020, 1, 2)}
    odd = Color.RED  # written as 0x1F with its text: a Python call per value
    watched = [module, function, args, odd]

    def burst(n: int) -> None:
        ring = _core.RingBuffer(1 << 12)
        for i in range(n):
            cid = (i + 1) << 22 | PID
            ring._put((cid, i, 5, None, cid, None, cid, None, ENTRY, (module, function, 2, args)))
            ring._put((cid, i + 1, 5, None, cid, None, cid, None, EXIT, (odd, None, 1, "normal")))
            if i % 1000 == 999:
                records, k = ring.drain_encoded()
                _speedups.frame_events_chunk(records, k, **counts())
                _speedups.encode_events_chunk(ring.drain_records(), **counts())

    burst(5_000)  # warm up
    assert_keeps_nothing(burst, 50_000, watched)


def test_encoded_drains_racing_four_writer_threads_keep_the_accounting_identity() -> None:
    ring = _core.RingBuffer(1 << 8)
    per_thread = 5000
    chunks: list[bytes] = []
    done = threading.Event()
    barrier = threading.Barrier(5)

    def writer(n: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            ring._put((i << 22 | PID, i, n, None, None, None, None, None, ENTRY,
                       ("w", f"t{n}", 1, {"i": i})))  # fmt: skip

    def drainer() -> None:
        barrier.wait()
        seq = 0
        while True:
            last = done.is_set()
            records, k = ring.drain_encoded(64)
            chunks.append(_speedups.frame_events_chunk(records, k, **counts(seq=seq)))
            seq += 1
            if last and not k:
                return

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    d = threading.Thread(target=drainer)
    for t in (*threads, d):
        t.start()
    for t in threads:
        t.join()
    done.set()
    d.join()
    stats = ring.stats()
    assert stats["total_writes"] == 4 * per_thread
    assert stats["total_writes"] == stats["consumed_events"] + stats["dropped_events"]
    events = [e for c in chunks for e in _tsformat.decode_body(c[12:]).content]
    assert len(events) == stats["consumed_events"]
    last: dict[Any, int] = {}
    for e in events:  # every event whole, and in its writer's order
        n, i = e[5], e[12]["args"]["i"]
        assert e[12]["function"] == f"t{n}" and e[0] == i << 22 | PID
        assert last.get(n, -1) < i
        last[n] = i


def test_a_value_that_fails_to_encode_is_counted_and_never_wedges_the_drain() -> None:
    broken = Truncated.__new__(Truncated)  # its slots unset: reading type_name raises
    with pytest.raises(AttributeError):
        _tsformat.encode_events_chunk(
            [(0, 1, 2, 3, None, None, None, None, None, "generic", {"v": broken})], **counts()
        )
    ring = _core.RingBuffer(16)
    for i, v in enumerate([1, broken, 3, broken]):
        ring._put((i << 22 | PID, i, 5, None, None, None, None, None, "generic", {"v": v}))
    errors = _core.internal_errors()[0]
    got = []
    for _ in range(6):
        records, n = ring.drain_encoded()
        chunk = _speedups.frame_events_chunk(records, n, **counts())
        got += [e[12]["v"] for e in _tsformat.decode_body(chunk[12:]).content]
    assert got == [1, 3]
    assert _core.internal_errors()[0] == errors + 2
    stats = ring.stats()
    assert stats["consumed_events"] == 4 and stats["available_events"] == 0


# -- the slot encoder's fast paths (int64 deltas, raw durations) ------------------------

INT64_EDGES = [0, 1, -1, 127, 128, 2**31, 2**62, 2**63 - 1, -(2**63), -(2**63) + 1]
edge_ints = st.one_of(
    st.sampled_from(INT64_EDGES),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**64), 2**64),  # past int64: held as objects, or the i128 path
)
edge_ids = st.one_of(
    st.none(),
    st.integers(-(2**41), 2**41).map(lambda s: (s << 22) | PID),  # delta: a multiple of 2**22
    st.sampled_from(INT64_EDGES).map(lambda v: v & ~((1 << 22) - 1)),
    edge_ints,  # low bits that differ: mode 3
)
edge_threads = st.one_of(
    st.sampled_from([0, 2**63 - 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1)
)
edge_records = st.tuples(edge_ids, edge_ints, edge_threads, st.none(), edge_ids, edge_ids, edge_ids,
                         st.sampled_from([None, "f:1", 3]), bodies)  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(edge_records, max_size=24), st.integers(1, 24))
def test_envelope_fields_near_the_int64_edges_encode_from_slots_as_the_pure_encoder(
    rs: list[tuple[Any, ...]], batch: int
) -> None:
    # the C encoder takes deltas of raw slot fields in int64 arithmetic and falls back to
    # the i128 path on overflow: consecutive values at the edges cross both
    ring = _core.RingBuffer(32)
    for r in rs:
        ring._put(as_record(0, r)[1:])
    seq = 0
    while True:
        pos = ring.read_position
        expected, _, _ = ring._scan(pos, batch)
        blob, n = ring.drain_encoded(batch)
        assert n == len(expected)
        kw = counts(seq=seq)
        assert _speedups.frame_events_chunk(blob, n, **kw) == _tsformat.encode_events_chunk(
            expected, **kw
        )
        seq += 1
        if not n:
            break


class Boom(Exception):
    pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(values, st.booleans()), min_size=1, max_size=12), st.integers(1, 12))
def test_report_path_exits_with_raw_durations_encode_as_the_pure_encoder(
    calls: list[tuple[Any, bool]], batch: int
) -> None:
    # an exit written by the report path holds its duration as a raw int in the slot
    tidescope.start(buffer_size=64)
    try:
        ring = _core.get_buffer()
        assert ring is not None
        for n, (value, raises) in enumerate(calls):
            cid = _core.report_function_entry("m", "f", {"n": n})
            if raises:
                _core.report_function_exit(cid, None, Boom(repr(value)))
            else:
                _core.report_function_exit(cid, value)
        seq = 0
        while True:
            expected, _, _ = ring._scan(ring.read_position, batch)
            blob, n = ring.drain_encoded(batch)
            assert n == len(expected)
            kw = counts(seq=seq)
            assert _speedups.frame_events_chunk(blob, n, **kw) == _tsformat.encode_events_chunk(
                expected, **kw
            )
            seq += 1
            if not n:
                break
    finally:
        tidescope.stop()


def test_a_value_whose_text_laps_the_ring_mid_encoding_leaves_the_slot_being_encoded_whole() -> (
    None
):
    # the encoder borrows a slot's objects until something may run Python code; here the
    # text of an unsupported value (a PurePath's str()) overwrites every slot, the one
    # being encoded included, which releases its objects: they must have been taken first
    ring = _core.RingBuffer(8)
    lap = [True]

    class Loud(pathlib.PurePosixPath):
        def __str__(self) -> str:
            if lap[0]:
                lap[0] = False
                for _ in range(20):
                    ring.write("overwrites")
            return "loud"

    args = [10**15 + 7, "only-the-slot-holds-this-" + str(os.getpid())]
    data = ("m", "f", Loud("p"), args)
    ring._put((1 << 22 | PID, 5, 9, None, None, None, None, None, ENTRY, data))
    del data
    del args
    records, n = ring.drain_encoded()
    assert n == 1
    chunk = _speedups.frame_events_chunk(records, n, **counts())
    (event,) = _tsformat.decode_body(chunk[12:]).content
    assert event[12]["args"] == [10**15 + 7, "only-the-slot-holds-this-" + str(os.getpid())]
    assert event[12]["module"] == "m" and event[12]["function"] == "f"
