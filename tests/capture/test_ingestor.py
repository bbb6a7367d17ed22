"""The ingestor: every ``ingest_*`` builds a complete, snapshotted event and writes it."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from tidescope import Limits, ObjectSnapshot, Truncated
from tidescope.capture import _core
from tidescope.capture.ingestor import (
    BatchResult,
    ingest_batch,
    ingest_error,
    ingest_function_call,
    ingest_function_return,
    ingest_generic_event,
    ingest_message_send,
    ingest_performance_metric,
    ingest_process_spawn,
    ingest_state_change,
)
from tidescope.capture.ring_buffer import RingBuffer
from tidescope.events import Event, EventType

SIXTY_SECONDS_NS = 60 * 10**9


@pytest.fixture(autouse=True)
def default_limits():
    """Every test starts with the default limits and puts back what it found."""
    before = _core.get_limits()
    _core.set_limits(Limits())
    yield
    _core.set_limits(before)


@pytest.fixture
def buf() -> RingBuffer:
    return RingBuffer(64)


def only_event(buffer: RingBuffer) -> Event:
    events = buffer.drain()
    assert len(events) == 1, events
    return events[0]


def assert_envelope_complete(ev: Event) -> None:
    for field in ("event_id", "timestamp", "wall_time", "node", "pid", "thread_id"):
        assert getattr(ev, field) is not None, field
    assert type(ev.event_id) is int
    assert type(ev.timestamp) is int
    assert type(ev.wall_time) is int
    assert abs(ev.wall_time - time.time_ns()) < SIXTY_SECONDS_NS
    assert type(ev.node) is str and ev.node
    assert ev.pid == os.getpid()
    assert ev.thread_id == threading.get_ident()
    assert type(ev.data) is dict


# ---------------------------------------------------------------------------------------
# one event of each kind


def test_function_call_event_has_module_function_arity_args(buf):
    assert ingest_function_call(buf, "shop.cart", "add", ["apple", 2]) is True
    ev = only_event(buf)
    assert ev.event_type == EventType.FUNCTION_ENTRY
    assert ev.data == {"module": "shop.cart", "function": "add", "arity": 2, "args": ["apple", 2]}
    assert_envelope_complete(ev)


def test_function_call_with_1000_args_has_arity_1000_and_truncated_args(buf):
    ingest_function_call(buf, "m", "f", tuple(range(1000)))
    ev = only_event(buf)
    assert ev.data["arity"] == 1000
    args = ev.data["args"]
    assert type(args) is Truncated
    assert (args.size, args.reason) == (1000, "length")
    assert list(args.kept) == list(range(20))


def test_function_call_args_are_copied_at_ingest(buf):
    args = ["a", [1, 2]]
    ingest_function_call(buf, "m", "f", args)
    args.append("late")
    args[1].append(3)
    ev = only_event(buf)
    assert ev.data["args"] == ["a", [1, 2]]
    assert ev.data["arity"] == 2


def test_function_return_normal_has_value_and_no_exception(buf):
    value = {"total": [1, 2]}
    assert ingest_function_return(buf, value, 1500) is True
    value["total"].append(3)
    ev = only_event(buf)
    assert ev.event_type == EventType.FUNCTION_EXIT
    assert ev.data == {
        "return_value": {"total": [1, 2]},
        "exception": None,
        "duration_ns": 1500,
        "exit_reason": "normal",
    }
    assert_envelope_complete(ev)


def test_function_return_exception_records_the_exception_and_no_value(buf):
    exc = ValueError("bad", 7)
    ingest_function_return(buf, exc, 99, exit_reason="exception")
    ev = only_event(buf)
    assert ev.event_type == EventType.FUNCTION_EXIT
    assert ev.data["return_value"] is None
    assert ev.data["exit_reason"] == "exception"
    assert ev.data["duration_ns"] == 99
    e = ev.data["exception"]
    assert e["type"] == "builtins.ValueError"
    assert list(e["args"]) == ["bad", 7]
    assert "attrs" in e
    assert_envelope_complete(ev)


def test_function_return_exception_attrs_hold_extra_attributes(buf):
    exc = KeyError("k")
    exc.status = 404
    ingest_function_return(buf, exc, 1, exit_reason="exception")
    e = only_event(buf).data["exception"]
    assert e["type"] == "builtins.KeyError"
    assert e["attrs"] == {"status": 404}


def test_process_spawn_has_parent_and_child_pid(buf):
    assert ingest_process_spawn(buf, 4242) is True
    ev = only_event(buf)
    assert ev.event_type == EventType.PROCESS_SPAWN
    assert ev.data == {"parent_pid": os.getpid(), "child_pid": 4242}
    assert_envelope_complete(ev)


def test_process_spawn_keeps_a_given_parent_pid(buf):
    ingest_process_spawn(buf, 5, parent_pid=1)
    assert only_event(buf).data == {"parent_pid": 1, "child_pid": 5}


def test_message_send_has_sender_to_message_and_an_int_message_id(buf):
    msg = {"op": "ping", "items": [1]}
    assert ingest_message_send(buf, "worker-2", msg, sender="worker-1") is True
    msg["items"].append(2)
    ev = only_event(buf)
    assert ev.event_type == EventType.MESSAGE_SEND
    assert ev.data["sender"] == "worker-1"
    assert ev.data["to"] == "worker-2"
    assert ev.data["message"] == {"op": "ping", "items": [1]}
    assert type(ev.data["message_id"]) is int
    assert_envelope_complete(ev)


def test_message_send_ids_are_unique_and_a_given_id_is_kept(buf):
    ingest_message_send(buf, "a", 1)
    ingest_message_send(buf, "a", 2)
    ingest_message_send(buf, "a", 3, message_id=12345)
    ids = [e.data["message_id"] for e in buf.drain()]
    assert ids[0] != ids[1]
    assert ids[2] == 12345


def test_state_change_diff_lists_added_removed_and_modified(buf):
    old = {"a": 1, "b": 2, "gone": True}
    new = {"a": 1, "b": 3, "c": 4}
    assert ingest_state_change(buf, old, new, callback="handle", server="srv") is True
    ev = only_event(buf)
    assert ev.event_type == EventType.STATE_CHANGE
    assert ev.data["old_state"] == old
    assert ev.data["new_state"] == new
    assert ev.data["callback"] == "handle"
    assert ev.data["server"] == "srv"
    diff = ev.data["state_diff"]
    assert diff["changed"] is True
    assert diff["added"] == {"c": 4}
    assert list(diff["removed"]) == ["gone"]
    assert diff["modified"] == {"b": {"old": 2, "new": 3}}
    assert_envelope_complete(ev)


def test_state_change_without_change_gives_changed_false(buf):
    state = {"a": [1, 2]}
    ingest_state_change(buf, state, state)
    assert only_event(buf).data["state_diff"] == {"changed": False}


def test_state_change_diffs_objects_by_their_attrs(buf):
    class State:
        def __init__(self, count, name):
            self.count = count
            self.name = name

    ingest_state_change(buf, State(1, "x"), State(2, "x"))
    ev = only_event(buf)
    assert type(ev.data["old_state"]) is ObjectSnapshot
    diff = ev.data["state_diff"]
    assert diff["changed"] is True
    assert diff["modified"] == {"count": {"old": 1, "new": 2}}
    assert not diff["added"]
    assert not diff["removed"]


def test_state_change_records_the_states_as_they_were_at_ingest(buf):
    old, new = {"n": [1]}, {"n": [1, 2]}
    ingest_state_change(buf, old, new)
    old["n"].append(99)
    new["n"].clear()
    ev = only_event(buf)
    assert ev.data["old_state"] == {"n": [1]}
    assert ev.data["new_state"] == {"n": [1, 2]}


def _fail_deep():
    def inner():
        raise RuntimeError("deep failure")

    inner()


def test_error_with_a_raised_exception_has_type_message_and_stacktrace(buf):
    try:
        _fail_deep()
    except RuntimeError as e:
        exc = e
    assert ingest_error(buf, exc, reason="while testing") is True
    ev = only_event(buf)
    assert ev.event_type == EventType.ERROR
    assert ev.data["error_type"] == "builtins.RuntimeError"
    assert list(ev.data["message"]) == ["deep failure"]
    assert ev.data["reason"] == "while testing"
    trace = ev.data["stacktrace"]
    assert type(trace) is list and trace
    for frame in trace:
        assert set(frame) == {"file", "line", "function"}
        assert type(frame["line"]) is int
    assert trace[-1]["file"] == __file__
    assert trace[-1]["function"] == "_fail_deep.<locals>.inner"
    assert [f["function"] for f in trace][-2] == "_fail_deep"
    assert_envelope_complete(ev)


def test_error_with_an_exception_class_records_its_type_name(buf):
    ingest_error(buf, KeyError, error_class="lookup")
    ev = only_event(buf)
    assert ev.data["error_type"] == "builtins.KeyError"
    assert ev.data["error_class"] == "lookup"
    assert ev.data["message"] is None


def test_error_with_a_plain_value_snapshots_it_as_the_message(buf):
    payload = ["timeout", {"after": 30}]
    ingest_error(buf, payload)
    payload[1]["after"] = 0
    ev = only_event(buf)
    assert ev.data["error_type"] == "unknown"
    assert ev.data["message"] == ["timeout", {"after": 30}]
    assert ev.data["stacktrace"] is None


def test_performance_metric_has_name_value_unit_metadata(buf):
    meta = {"route": "/cart"}
    assert ingest_performance_metric(buf, "latency", 12.5, meta, unit="ms") is True
    meta["route"] = "/other"
    ev = only_event(buf)
    assert ev.event_type == EventType.PERFORMANCE_METRIC
    assert ev.data == {
        "metric_name": "latency",
        "value": 12.5,
        "unit": "ms",
        "metadata": {"route": "/cart"},
    }
    assert_envelope_complete(ev)


def test_performance_metric_does_not_run_the_metadata_objects_bool(buf):
    calls = []

    class Meta:
        def __bool__(self):
            calls.append("bool")
            raise RuntimeError("__bool__ must not run")

        def __len__(self):
            calls.append("len")
            raise RuntimeError("__len__ must not run")

    ingest_performance_metric(buf, "m", 1, Meta())
    assert calls == []
    assert type(only_event(buf).data["metadata"]) is ObjectSnapshot


def test_generic_event_snapshots_a_large_list_inside_data(buf):
    data = {"items": list(range(10_000)), "name": "bulk"}
    assert ingest_generic_event(buf, "generic", data) is True
    data["name"] = "changed"
    ev = only_event(buf)
    assert ev.event_type == EventType.GENERIC
    assert ev.data["name"] == "bulk"
    items = ev.data["items"]
    assert type(items) is Truncated
    assert (items.type_name, items.size, items.reason) == ("list", 10_000, "length")
    assert items.kept == list(range(20))
    assert_envelope_complete(ev)


def test_generic_event_with_an_unknown_type_keeps_the_string(buf):
    ingest_generic_event(buf, "my_custom_event", {"x": 1})
    ev = only_event(buf)
    assert ev.event_type == "my_custom_event"
    assert type(ev.event_type) is str
    assert ev.data == {"x": 1}


def test_generic_event_with_a_known_type_string_uses_the_enum(buf):
    ingest_generic_event(buf, "vm_event", {"x": 1})
    assert only_event(buf).event_type is EventType.VM_EVENT


def test_generic_event_with_non_dict_data_puts_it_under_value(buf):
    ingest_generic_event(buf, "generic", [1, 2, 3])
    assert only_event(buf).data == {"value": [1, 2, 3]}


def test_generic_event_with_ten_thousand_keys_is_bounded(buf):
    data = {f"k{i}": i for i in range(10_000)}
    ingest_generic_event(buf, "generic", data)
    kept = len(only_event(buf).data)
    # every kept entry costs at least 8 bytes of the 4096-byte event budget
    assert kept <= Limits().max_event_bytes // 8


def test_generic_event_does_not_run_a_key_objects_str(buf):
    calls = []

    class Key:
        def __str__(self):
            calls.append("str")
            raise RuntimeError("__str__ must not run")

        def __repr__(self):
            calls.append("repr")
            raise RuntimeError("__repr__ must not run")

    ingest_generic_event(buf, "generic", {Key(): 1})
    assert calls == []
    assert len(only_event(buf).data) == 1


# ---------------------------------------------------------------------------------------
# the envelope


def test_event_ids_are_unique_and_increasing_across_ingest_calls(buf):
    ingest_function_call(buf, "m", "f", [])
    ingest_function_return(buf, None, 1)
    ingest_process_spawn(buf, 1)
    ingest_message_send(buf, "a", "b")
    ingest_state_change(buf, 1, 2)
    ingest_error(buf, ValueError("x"))
    ingest_performance_metric(buf, "m", 1)
    ingest_generic_event(buf, "generic", {})
    events = buf.drain()
    assert len(events) == 8
    ids = [e.event_id for e in events]
    assert len(set(ids)) == 8
    assert ids == sorted(ids)
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(stamps)
    for ev in events:
        assert_envelope_complete(ev)


ENVELOPE = {"call_id": 11, "parent_id": 7, "correlation_id": "req-1"}
WITH_AST = {**ENVELOPE, "ast_node_id": "shop.cart:add:3"}

INGESTS = {
    "function_call": (lambda b, kw: ingest_function_call(b, "m", "f", [1], **kw), True),
    "function_return": (lambda b, kw: ingest_function_return(b, 1, 2, **kw), True),
    "process_spawn": (lambda b, kw: ingest_process_spawn(b, 3, **kw), False),
    "message_send": (lambda b, kw: ingest_message_send(b, "to", "msg", **kw), False),
    "state_change": (lambda b, kw: ingest_state_change(b, {}, {"a": 1}, **kw), False),
    "error": (lambda b, kw: ingest_error(b, ValueError("v"), **kw), True),
    "performance_metric": (lambda b, kw: ingest_performance_metric(b, "m", 1, **kw), False),
    "generic": (lambda b, kw: ingest_generic_event(b, "generic", {"a": 1}, **kw), True),
}


@pytest.mark.parametrize("name", list(INGESTS))
def test_envelope_keywords_reach_the_event(buf, name):
    ingest, takes_ast = INGESTS[name]
    kw = WITH_AST if takes_ast else ENVELOPE
    assert ingest(buf, kw) is True
    ev = only_event(buf)
    assert ev.call_id == 11
    assert ev.parent_id == 7
    assert ev.correlation_id == "req-1"
    if takes_ast:
        assert ev.ast_node_id == "shop.cart:add:3"
    assert_envelope_complete(ev)


@pytest.mark.parametrize("name", list(INGESTS))
def test_ingest_into_a_full_drop_newest_buffer_returns_false(name):
    ingest, _ = INGESTS[name]
    small = RingBuffer(1, "drop_newest")
    assert ingest(small, {}) is True
    assert ingest(small, {}) is False
    assert len(small.drain()) == 1


# ---------------------------------------------------------------------------------------
# ingest_batch


def _event(data: dict[str, Any]) -> Event:
    ts = time.monotonic_ns()
    return Event(
        _core.next_id(), ts, time.time_ns(), "node-a", os.getpid(), threading.get_ident(),
        None, None, None, None, None, EventType.GENERIC, data,
    )  # fmt: skip


def test_batch_writes_event_objects_with_their_data_copied(buf):
    original = _event({"items": [1, 2, 3]})
    result = ingest_batch(buf, [original])
    assert result == BatchResult(1, [])
    original.data["items"].append(4)
    original.data["new"] = True
    ev = only_event(buf)
    assert ev.data == {"items": [1, 2, 3]}
    assert ev.event_id == original.event_id
    assert ev.event_type == EventType.GENERIC


def test_batch_keeps_an_event_objects_data_a_dict_when_it_has_many_keys(buf):
    original = _event({f"k{i}": i for i in range(25)})
    ingest_batch(buf, [original])
    ev = only_event(buf)
    assert type(ev.data) is dict


def test_batch_writes_type_and_data_pairs(buf):
    result = ingest_batch(buf, [("generic", {"a": 1}), (EventType.VM_EVENT, {"b": [2]})])
    assert result.written == 2
    assert result.failures == []
    assert result.ok
    events = buf.drain()
    assert [e.event_type for e in events] == [EventType.GENERIC, EventType.VM_EVENT]
    assert [e.data for e in events] == [{"a": 1}, {"b": [2]}]
    for ev in events:
        assert_envelope_complete(ev)


def test_batch_into_drop_newest_buffer_attempts_every_event_and_reports_each_drop():
    small = RingBuffer(2, "drop_newest")
    result = ingest_batch(small, [("generic", {"i": i}) for i in range(5)])
    assert result.written == 2
    assert result.failures == [(2, "dropped"), (3, "dropped"), (4, "dropped")]
    assert not result.ok
    assert [e.data["i"] for e in small.drain()] == [0, 1]


def test_batch_reports_invalid_items_and_still_writes_later_ones(buf):
    items = [("generic", {"a": 1}), 42, ("generic", {}, "extra"), ("generic", {"b": 2})]
    result = ingest_batch(buf, items)
    assert result.written == 2
    assert result.failures == [(1, "invalid_event"), (2, "invalid_event")]
    assert [e.data for e in buf.drain()] == [{"a": 1}, {"b": 2}]


def test_batch_of_nothing_writes_nothing(buf):
    assert ingest_batch(buf, []) == BatchResult(0, [])
    assert buf.drain() == []
