"""The Event envelope, event types and the value markers' export form."""

from __future__ import annotations

import datetime
import json
import uuid

import pytest

from tidescope.events import ENVELOPE_FIELDS, Event, EventType, ObjectSnapshot, Truncated, jsonable


def make_event(**over: object) -> Event:
    fields: dict[str, object] = dict(
        event_id=1, timestamp=2, wall_time=3, node="n", pid=4, thread_id=5, task_id=None,
        correlation_id=6, parent_id=None, call_id=6, ast_node_id="m:f:1:0:FunctionDef",
        event_type=EventType.FUNCTION_ENTRY, data={"args": [1]},
    )  # fmt: skip
    fields.update(over)
    return Event(**fields)  # type: ignore[arg-type]


def test_event_has_exactly_the_envelope_fields_and_no_dict() -> None:
    ev = make_event()
    assert Event.__slots__ == ENVELOPE_FIELDS
    assert len(ENVELOPE_FIELDS) == 13
    with pytest.raises(AttributeError):
        ev.extra = 1  # type: ignore[attr-defined]


def test_to_dict_round_trips_through_json() -> None:
    ev = make_event(
        data={"t": (1, 2), "b": b"\x00\xff", "m": Truncated("str", 300, "length", "ab")}
    )
    d = json.loads(json.dumps(ev.to_dict()))
    assert d["event_type"] == "function_entry"
    assert d["data"]["t"] == [1, 2]
    assert d["data"]["b"] == {"$bytes": "AP8="}
    assert d["data"]["m"] == {"$truncated": "str", "size": 300, "reason": "length", "kept": "ab"}
    back = Event.from_dict(d)
    assert back.event_type is EventType.FUNCTION_ENTRY
    assert back.call_id == 6 and back.ast_node_id == "m:f:1:0:FunctionDef"


def test_from_dict_keeps_unknown_event_types_as_strings() -> None:
    d = make_event(event_type="custom_kind").to_dict()
    assert Event.from_dict(d).event_type == "custom_kind"


def test_events_compare_by_value() -> None:
    assert make_event() == make_event()
    assert make_event() != make_event(call_id=7)


def test_event_types_cover_the_seed_catalogue_domains() -> None:
    values = {t.value for t in EventType}
    for name in (
        "function_entry", "function_exit", "process_spawn", "message_send", "state_change",
        "error", "performance_metric", "local_variable_snapshot", "branch_execution",
        "loop_iteration", "pattern_match", "http_request_start", "live_assigns_change",
        "channel_join_start", "db_query_complete", "actor_callback_error", "node_event",
        "partition_detected",
    ):  # fmt: skip
        assert name in values
    assert len(values) == len(EventType)  # no aliases


def test_markers_are_immutable_hashable_and_comparable() -> None:
    t = Truncated("list", 100, "length", [1, 2])
    o = ObjectSnapshot("shop.Cart", 42, {"n": 1})
    with pytest.raises(AttributeError):
        t.size = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        o.attrs = None  # type: ignore[misc]
    assert {t: 1, o: 2}[Truncated("list", 100, "length", [1, 2])] == 1
    assert o == ObjectSnapshot("shop.Cart", 42, {"n": 1}) and o != ObjectSnapshot("shop.Cart", 43)


def test_jsonable_handles_every_kept_scalar_type() -> None:
    value = {
        1: datetime.date(2026, 1, 2),
        (1, 2): uuid.UUID(int=1),
        "set": {3},
        "obj": ObjectSnapshot("x.Y", 1, None, "<Y>"),
        "exc": ValueError("x"),
        "c": 1j,
    }
    out = jsonable(value)
    json.dumps(out)
    assert out["1"] == "2026-01-02" and out["(1, 2)"] == {"$uuid": str(uuid.UUID(int=1))}
    assert out["obj"] == {"$object": "x.Y", "id": 1, "attrs": None, "repr": "<Y>"}
