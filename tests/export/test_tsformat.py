"""The binary trace format's pure encoder and decoder (docs/trace-format.md): values, records
and field modes round-trip; the spec's worked examples are byte-exact; bad bodies fail as
FormatError only."""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import math
import pathlib
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidescope import events
from tidescope.capture._ring import _event_from_record
from tidescope.events import Event, EventType, ObjectRef, ObjectSnapshot, Truncated, Unsupported
from tidescope.export import _tsformat
from tidescope.export._tsformat import (
    FormatError,
    decode_body,
    decode_value,
    encode_close_chunk,
    encode_events_chunk,
    encode_header_chunk,
    encode_value,
)

Redacted: Any = getattr(events, "Redacted", None)
PID = 7
ID = 1 << 22


def roundtrip(v: Any) -> Any:
    return decode_value(encode_value(v))


# -- values -------------------------------------------------------------------------------

texts = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)  # surrogates too
hashables = st.one_of(st.none(), st.integers(), texts, st.tuples(st.integers(), texts))
offsets = st.timedeltas(
    min_value=datetime.timedelta(hours=-23, minutes=-59),
    max_value=datetime.timedelta(hours=23, minutes=59),
).map(lambda d: datetime.timedelta(minutes=d // datetime.timedelta(minutes=1)))
zones = st.builds(datetime.timezone, offsets)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=False),
    texts,
    st.binary(max_size=20),
    st.binary(max_size=20).map(bytearray),
    st.complex_numbers(allow_nan=False),
    st.just(Ellipsis),
    st.just(NotImplemented),
    st.builds(range, st.integers(), st.integers(), st.integers().filter(bool)),
    st.datetimes(timezones=st.none() | zones),
    st.dates(),
    st.times(timezones=st.none() | zones),
    st.timedeltas(),
    zones,
    st.uuids(),
    st.sampled_from(EventType),
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.sets(hashables, max_size=5),
        st.frozensets(hashables, max_size=5),
        st.dictionaries(texts, children, max_size=5),
        st.dictionaries(hashables, children, max_size=5),
        st.builds(Truncated, texts, st.integers(0, 2**64 - 1), texts, children),
        st.builds(ObjectSnapshot, texts, st.integers(), children, st.none() | texts),
        st.builds(Redacted, texts) if Redacted is not None else st.nothing(),
        st.builds(
            ObjectRef, texts, st.integers(0, 2**64 - 1), st.none() | st.integers(0, 2**64 - 2)
        ),
    )


values = st.recursive(scalars, containers, max_leaves=30)


@given(values)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_every_value_round_trips(v: Any) -> None:
    back = roundtrip(v)
    assert back == v
    assert type(back) is type(v)


@pytest.mark.skipif(Redacted is None, reason="Redacted is not in tidescope.events yet")
def test_redacted_round_trips() -> None:
    assert encode_value(Redacted("str")) == bytes.fromhex("11 00 03") + b"str"
    assert roundtrip({"password": Redacted("str")}) == {"password": Redacted("str")}


def test_object_refs_round_trip_and_odd_ones_are_unsupported() -> None:
    assert encode_value(ObjectRef("m.C", 300)) == bytes.fromhex("1d 00 03 6d 2e 43 ac 02 00")
    assert encode_value(ObjectRef("list", 1, 2)) == bytes.fromhex("1d 00 04 6c 69 73 74 01 03")
    for ref in (ObjectRef("m.C", 7), ObjectRef("list", 2**64 - 1, 0), ObjectRef("d", 0, 2**64 - 2)):
        assert roundtrip(ref) == ref
    for odd in (ObjectRef("m.C", -1), ObjectRef("m.C", 2**64), ObjectRef("l", 1, 2**64 - 1)):
        assert roundtrip(odd) == Unsupported("tidescope.events.ObjectRef")


def test_floats_keep_their_bits() -> None:
    for f in (math.nan, -math.nan, math.inf, -0.0):
        (back,) = roundtrip((f,))
        assert math.copysign(1, back) == math.copysign(1, f)
        assert (math.isnan(back) and math.isnan(f)) or back == f


class Colour(enum.Enum):
    RED = 1


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Colour.RED, "RED"),
        (decimal.Decimal("1.50"), "1.50"),
        (fractions.Fraction(1, 3), "1/3"),
        (pathlib.PurePosixPath("/tmp/x"), "/tmp/x"),
        (object(), None),
        (type("Sub", (dict,), {})(), None),  # a subclass never takes its base's tag
    ],
)
def test_other_values_read_back_as_unsupported_with_their_text(value: Any, text: Any) -> None:
    t = type(value)
    assert roundtrip(value) == Unsupported(f"{t.__module__}.{t.__qualname__}", text)
    assert events.jsonable(Unsupported("decimal.Decimal", "1.5")) == {
        "$repr": "<decimal.Decimal>",
        "text": "1.5",
    }


def test_values_nested_past_the_depth_limit_are_cut_and_read_back() -> None:
    v: Any = 1
    for _ in range(100):
        v = [v]
    back = roundtrip(v)
    for _ in range(64):
        back = back[0]
    assert back == Unsupported("builtins.list")


def test_odd_markers_and_dates_are_written_as_unsupported() -> None:
    class BadZone(datetime.tzinfo):
        def utcoffset(self, dt: Any) -> datetime.timedelta:
            raise RuntimeError("no")

    bad = datetime.datetime(2026, 1, 1, tzinfo=BadZone())
    assert roundtrip(bad) == Unsupported("datetime.datetime")
    assert roundtrip(Truncated("str", -1, "length")) == Unsupported("tidescope.events.Truncated")
    assert roundtrip(ObjectSnapshot(5, 1)) == Unsupported(  # type: ignore[arg-type]
        "tidescope.events.ObjectSnapshot"
    )


# -- worked examples (docs/trace-format.md, "Examples") -----------------------------------


@pytest.mark.parametrize(
    ("value", "hexed"),
    [
        (None, "00"),
        (True, "02"),
        (5, "85"),
        (300, "03 d8 04"),
        (-1, "03 01"),
        (2**64, "04 09 00 00 00 00 00 00 00 00 01"),
        (-(2**63) - 1, "04 09 ff ff ff ff ff ff ff 7f ff"),
        ("hé", "06 00 03 68 c3 a9"),
        ({"a": 1, "b": "a"}, "0d 00 02 00 01 61 00 01 62 81 06 01"),
        (1.5, "05 00 00 00 00 00 00 f8 3f"),
        ({}, "0d 00 00"),
        ({1: None}, "0e 01 81 00"),
        (Truncated("str", 300, "length", "ab"),
         "0f 00 03 73 74 72 ac 02 00 06 6c 65 6e 67 74 68 06 00 02 61 62"),
        (EventType.ERROR, "1c 00 05 65 72 72 6f 72"),
    ],
)  # fmt: skip
def test_values_encode_to_the_documented_bytes(value: Any, hexed: str) -> None:
    assert encode_value(value) == bytes.fromhex(hexed)


def test_the_documented_header_chunk() -> None:
    chunk = encode_header_chunk({"pid": 7})
    body = bytes.fromhex("01 00 00 00 00 0d 00 02 00 06 66 6f 72 6d 61 74 00 03 70 69 64 81 87")
    assert chunk == bytes.fromhex("54 53 43 4b 17 00 00 00 b6 01 6d 57") + body
    assert zlib.crc32(body) == 0x576D01B6
    assert decode_body(body).content == {"format": 1, "pid": 7}


EXAMPLE_RECORDS = [
    (0, ID | PID, 1000, 5, None, ID | PID, None, ID | PID, None, EventType.FUNCTION_ENTRY,
     ("m", "f", 1, {"n": 3})),
    (1, 2 * ID | PID, 1300, 5, None, ID | PID, None, ID | PID, None, EventType.FUNCTION_EXIT,
     (6, None, 300, "normal")),
]  # fmt: skip
EXAMPLE_BODY = bytes.fromhex(
    "02 01 02 00 00 09 02"
    " 01 3f 33 03 8e 80 80 04 03 d0 0f 85 03 8e 80 80 04 03 8e 80 80 04"
    " 00 00 01 6d 00 01 66 81 0d 00 01 00 01 6e 83"
    " 02 0a 00 02 d8 04 86 00 03 d8 04 00 06 6e 6f 72 6d 61 6c"
)


def test_the_documented_events_chunk() -> None:
    chunk = encode_events_chunk(
        EXAMPLE_RECORDS,
        seq=1,
        events_written=2,
        dropped_events=0,
        internal_errors=0,
        wall_offset_ns=-5,
    )
    assert chunk == bytes.fromhex("54 53 43 4b 3f 00 00 00 71 4b b9 5c") + EXAMPLE_BODY
    decoded = decode_body(EXAMPLE_BODY, node="n", pid=PID)
    assert decoded.kind == _tsformat.CHUNK_EVENTS and decoded.seq == 1
    assert decoded.counts == (2, 0, 0)
    entry, exit_ = decoded.content
    assert entry == (ID | PID, 1000, 995, "n", PID, 5, None, ID | PID, None, ID | PID, None,
                     "function_entry", {"module": "m", "function": "f", "arity": 1,
                                        "args": {"n": 3}})  # fmt: skip
    assert exit_[1:3] == (1300, 1295) and exit_[11] is EventType.FUNCTION_EXIT
    assert exit_[12] == {
        "return_value": 6, "exception": None, "duration_ns": 300, "exit_reason": "normal"
    }  # fmt: skip


def test_the_close_chunk_holds_the_stats_and_counts() -> None:
    chunk = encode_close_chunk(
        {"total_writes": 9}, seq=4, events_written=3, dropped_events=2, internal_errors=1
    )
    decoded = decode_body(chunk[12:])
    assert decoded == (_tsformat.CHUNK_CLOSE, 4, (3, 2, 1), {"total_writes": 9})


# -- records and field modes --------------------------------------------------------------

ids = st.one_of(
    st.none(),
    st.integers(0, 2**40).map(lambda s: s << 22 | PID),  # ids of this process
    st.integers(0, 2**40).map(lambda s: s << 22 | 99),  # of another (forked) process
    st.integers(),  # not tagged with a pid at all
    st.integers(min_value=2**64, max_value=2**100),  # past 64 bits
    st.integers(min_value=-(2**100), max_value=-(2**64)),
    texts,  # a bound correlation id: a request id
    st.booleans(),
    st.floats(allow_nan=False),
)
fields = st.tuples(
    ids,  # event_id
    st.one_of(st.integers(0, 2**62), st.integers()),  # timestamp
    st.one_of(st.integers(0, 2**64), st.none()),  # thread_id
    st.one_of(st.none(), st.integers()),  # task_id
    ids, ids, ids,  # correlation_id, parent_id, call_id
    st.one_of(st.none(), st.sampled_from(["a:f:1:0:Call", "a:f:2:0:Call"]), texts),
)  # fmt: skip
entry_data = st.tuples(st.sampled_from(["m", "n"]) | texts, texts, st.integers(0, 5), values)
exit_data = st.tuples(
    values, values, st.none() | st.integers(), st.sampled_from(["normal"]) | texts
)
ring_records = st.one_of(
    st.tuples(fields, st.just(EventType.FUNCTION_ENTRY), entry_data),
    st.tuples(fields, st.just(EventType.FUNCTION_EXIT), exit_data),
    st.tuples(fields, st.sampled_from([EventType.ERROR, "custom_type"]),
              st.dictionaries(texts, values, max_size=3)),
    # an entry whose module is no str, a tuple data of another type: written as kind 3
    st.tuples(fields, st.just(EventType.FUNCTION_ENTRY), st.tuples(st.none(), texts, st.just(0),
                                                                    st.just(()))),
    st.tuples(fields, st.just(EventType.GENERIC), exit_data),
).map(lambda t: (0, *t[0], t[1], t[2]))  # fmt: skip
whole_events = st.builds(
    lambda f, node, pid, wall, etype, data: (
        0, Event(f[0], f[1], wall, node, pid, *f[2:], etype, data)
    ),
    fields, st.none() | texts, st.none() | st.integers(), st.integers(), st.sampled_from(EventType),
    st.dictionaries(texts, values, max_size=3),
)  # fmt: skip


def expected(r: tuple[Any, ...], offset: int) -> tuple[Any, ...]:
    if len(r) == 2:
        e = r[1]
        return tuple(getattr(e, f) for f in events.ENVELOPE_FIELDS)
    ev = _event_from_record(r, "node", PID)
    t = tuple(getattr(ev, f) for f in events.ENVELOPE_FIELDS)
    return (*t[:2], r[2] + offset, *t[3:])


@given(st.lists(ring_records | whole_events, max_size=12), st.integers(-(2**62), 2**62))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_ring_records_round_trip_as_the_ring_would_build_them(
    records: list[tuple[Any, ...]], offset: int
) -> None:
    chunk = encode_events_chunk(
        records, seq=3, events_written=len(records), dropped_events=1, internal_errors=2,
        wall_offset_ns=offset,
    )  # fmt: skip
    decoded = decode_body(chunk[12:], node="node", pid=PID)
    assert decoded.counts == (len(records), 1, 2)
    got = decoded.content
    assert len(got) == len(records)
    for r, g in zip(records, got, strict=True):
        want = expected(r, offset)
        assert g == want
        assert [type(x) for x in g[:11]] == [type(x) for x in want[:11]]
    # the same records give the same bytes
    again = encode_events_chunk(
        records, seq=3, events_written=len(records), dropped_events=1, internal_errors=2,
        wall_offset_ns=offset,
    )  # fmt: skip
    assert again == chunk


def test_successive_calls_cost_a_few_bytes_each() -> None:
    records = []
    for i in range(1, 101):
        eid = (2 * i) << 22 | PID
        call = (2 * i - 1) << 22 | PID
        records.append((0, call, 1000 * i, 5, None, ID | PID, ID | PID, call, None,
                        EventType.FUNCTION_ENTRY, ("fib", "fib", 1, {"n": i % 20})))  # fmt: skip
        records.append((0, eid, 1000 * i + 400, 5, None, ID | PID, ID | PID, call, None,
                        EventType.FUNCTION_EXIT, (i, None, 400, "normal")))  # fmt: skip
    chunk = encode_events_chunk(
        records, seq=1, events_written=200, dropped_events=0, internal_errors=0, wall_offset_ns=0
    )
    assert len(chunk) / len(records) < 16


def test_a_record_that_is_no_event_is_refused() -> None:
    with pytest.raises(TypeError):
        encode_events_chunk(
            [(0, "not an Event")], seq=1, events_written=1, dropped_events=0,
            internal_errors=0, wall_offset_ns=0,
        )  # fmt: skip


@given(st.binary(min_size=1, max_size=200))
@settings(max_examples=500)
def test_any_bytes_decode_or_fail_as_format_error(data: bytes) -> None:
    for body in (data, EXAMPLE_BODY[: len(data) % len(EXAMPLE_BODY)] + data):
        try:
            decode_body(body)
        except FormatError:
            pass


@pytest.mark.parametrize("cut", range(1, len(EXAMPLE_BODY)))
def test_a_body_cut_anywhere_fails_as_format_error(cut: int) -> None:
    with pytest.raises(FormatError):
        decode_body(EXAMPLE_BODY[:cut])
