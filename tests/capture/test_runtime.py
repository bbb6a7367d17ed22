"""The instrumentation runtime: every ``report_*`` reporter, node ids, measurement, sessions."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tidescope
from tidescope import EventType
from tidescope.capture import _core, context
from tidescope.capture import runtime as rt
from tidescope.capture.ring_buffer import RingBuffer
from tidescope.capture.runtime import AstNodeId, AstNodeIdError
from tidescope.events import ObjectSnapshot

NODE = "shop.cart:Cart.add:12:8:Assign"
REQ = "req-7"  # a request id given to the domain reporters that take one
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"  # the W3C example

REPORTERS = sorted(n for n in rt.__all__ if n.startswith("report_"))


# ---------------------------------------------------------------------------------------
# what each reporter writes


@dataclass
class Case:
    """How to call one reporter inside an open call ``cid``, and the event it must write."""

    args: Callable[[Any], tuple[Any, ...]]
    event_type: EventType
    data: dict[str, Any]
    returns_call_id: bool = False  # an entry reporter (returns the new call's id)
    node_id: str | None = None
    extra: dict[str, Callable[[Any], bool]] = field(default_factory=dict)
    request_id: Any = None  # the request id the reporter is given: the envelope's correlation


CASES: dict[str, Case] = {
    "report_function_entry": Case(
        lambda cid: ("shop.cart", "add", ["apple", 2]),
        EventType.FUNCTION_ENTRY,
        {"module": "shop.cart", "function": "add", "arity": 2, "args": ["apple", 2]},
        returns_call_id=True,
    ),
    "report_function_exit": Case(
        lambda cid: (cid, 3, 1200),
        EventType.FUNCTION_EXIT,
        {"return_value": 3, "exception": None, "duration_ns": 1200, "exit_reason": "normal"},
    ),
    "report_process_spawn": Case(
        lambda cid: (4321,),
        EventType.PROCESS_SPAWN,
        {"parent_pid": os.getpid(), "child_pid": 4321},
    ),
    "report_message_send": Case(
        lambda cid: ("queue-1", {"op": "add", "n": 2}),
        EventType.MESSAGE_SEND,
        {"sender": None, "to": "queue-1", "message": {"op": "add", "n": 2}},
        extra={"message_id": lambda v: type(v) is int},
    ),
    "report_state_change": Case(
        lambda cid: ({"n": 1, "gone": 0}, {"n": 2, "new": 5}),
        EventType.STATE_CHANGE,
        {
            "server": None,
            "callback": None,
            "old_state": {"n": 1, "gone": 0},
            "new_state": {"n": 2, "new": 5},
            "state_diff": {
                "changed": True,
                "added": {"new": 5},
                "removed": ["gone"],
                "modified": {"n": {"old": 1, "new": 2}},
            },
        },
    ),
    "report_error": Case(
        lambda cid: (ValueError("bad qty"), "validation"),
        EventType.ERROR,
        {
            "error_type": "builtins.ValueError",
            "error_class": "unknown",
            "message": ("bad qty",),
            "reason": "validation",
            "stacktrace": None,
        },
    ),
    "report_local_variable_snapshot": Case(
        lambda cid: (cid, {"qty": 2, "name": "apple"}, 10),
        EventType.LOCAL_VARIABLE_SNAPSHOT,
        {"variables": {"qty": 2, "name": "apple"}, "line": 10, "source": "ast"},
    ),
    "report_ast_variable_snapshot": Case(
        lambda cid: (cid, {"qty": 2}, 10, NODE),
        EventType.LOCAL_VARIABLE_SNAPSHOT,
        {"variables": {"qty": 2}, "line": 10, "source": "ast"},
        node_id=NODE,
    ),
    "report_expression_value": Case(
        lambda cid: (cid, "qty + 1", 3, 11),
        EventType.EXPRESSION_VALUE,
        {"expression": "qty + 1", "value": 3, "line": 11, "source": "ast"},
    ),
    "report_ast_expression_value": Case(
        lambda cid: (cid, "qty + 1", 3, 11, NODE),
        EventType.EXPRESSION_VALUE,
        {"expression": "qty + 1", "value": 3, "line": 11, "source": "ast"},
        node_id=NODE,
    ),
    "report_line_execution": Case(
        lambda cid: (cid, 12, {"k": "v"}),
        EventType.LINE_EXECUTION,
        {"line": 12, "context": {"k": "v"}, "source": "ast"},
    ),
    "report_ast_line_execution": Case(
        lambda cid: (cid, 12, None, NODE),
        EventType.LINE_EXECUTION,
        {"line": 12, "context": None, "source": "ast"},
        node_id=NODE,
    ),
    "report_ast_pattern_match": Case(
        lambda cid: (cid, "case [a, b]", [1, 2], True, 13, NODE),
        EventType.PATTERN_MATCH,
        {"pattern": "case [a, b]", "value": [1, 2], "match_success": True, "line": 13},
        node_id=NODE,
    ),
    "report_ast_branch_execution": Case(
        lambda cid: (cid, "if", "qty > 0", True, 14, NODE),
        EventType.BRANCH_EXECUTION,
        {"branch_type": "if", "condition": "qty > 0", "branch_taken": True, "line": 14},
        node_id=NODE,
    ),
    "report_ast_loop_iteration": Case(
        lambda cid: (cid, "for", 3, "pear", 15, NODE),
        EventType.LOOP_ITERATION,
        {"loop_type": "for", "iteration_count": 3, "current_value": "pear", "line": 15},
        node_id=NODE,
    ),
    "report_ast_correlation_performance": Case(
        lambda cid: (cid, "lookup", 250),
        EventType.AST_CORRELATION_PERFORMANCE,
        {
            "operation": "lookup",
            "duration_ns": 250,
            "source": "ast_correlation",
            "performance_metric": True,
        },
    ),
    "report_ast_function_entry": Case(
        lambda cid: ("shop.cart", "add", ("apple",), None),
        EventType.FUNCTION_ENTRY,
        {"module": "shop.cart", "function": "add", "arity": 1, "args": ("apple",)},
        returns_call_id=True,
    ),
    "report_ast_function_entry_with_node_id": Case(
        lambda cid: ("shop.cart", "add", ["apple"], None, "shop.cart:Cart.add:10:4:FunctionDef"),
        EventType.FUNCTION_ENTRY,
        {"module": "shop.cart", "function": "add", "arity": 1, "args": ["apple"]},
        returns_call_id=True,
        node_id="shop.cart:Cart.add:10:4:FunctionDef",
    ),
    "report_ast_function_exit": Case(
        lambda cid: (cid, "ok", 900),
        EventType.FUNCTION_EXIT,
        {"return_value": "ok", "exception": None, "duration_ns": 900, "exit_reason": "normal"},
    ),
    "report_ast_function_exit_with_node_id": Case(
        lambda cid: (cid, "ok", 900, "shop.cart:Cart.add:10:4:FunctionDef"),
        EventType.FUNCTION_EXIT,
        {"return_value": "ok", "exception": None, "duration_ns": 900, "exit_reason": "normal"},
        node_id="shop.cart:Cart.add:10:4:FunctionDef",
    ),
    # domain reporters: HTTP, live sessions, channels, database, actors, distributed
    "report_http_request_start": Case(
        lambda cid: (REQ, "GET", "/cart", {"id": "7"}, "127.0.0.1"),
        EventType.HTTP_REQUEST_START,
        {"method": "GET", "path": "/cart", "params": {"id": "7"}, "remote_ip": "127.0.0.1"},
        request_id=REQ,
    ),
    "report_http_request_complete": Case(
        lambda cid: (REQ, 200, "text/html", 12.5),
        EventType.HTTP_REQUEST_COMPLETE,
        {"status_code": 200, "content_type": "text/html", "duration_ms": 12.5},
        request_id=REQ,
    ),
    "report_controller_entry": Case(
        lambda cid: (REQ, "CartView", "show", {"route": "/cart/{id}"}),
        EventType.CONTROLLER_ENTRY,
        {"controller": "CartView", "action": "show", "metadata": {"route": "/cart/{id}"}},
        request_id=REQ,
    ),
    "report_controller_exit": Case(
        lambda cid: (REQ, "CartView", "show", [1, 2]),
        EventType.CONTROLLER_EXIT,
        {"controller": "CartView", "action": "show", "result": [1, 2]},
        request_id=REQ,
    ),
    "report_action_params": Case(
        lambda cid: ("show", {"path": "/cart"}, {"id": "7"}, True),
        EventType.ACTION_PARAMS,
        {"action_name": "show", "request": {"path": "/cart"}, "params": {"id": "7"}},
    ),
    "report_action_start": Case(
        lambda cid: ("show", {"path": "/cart"}, True),
        EventType.ACTION_START,
        {"action_name": "show", "request": {"path": "/cart"}},
    ),
    "report_action_success": Case(
        lambda cid: ("show", {"path": "/cart"}, "<html>"),
        EventType.ACTION_SUCCESS,
        {"action_name": "show", "request": {"path": "/cart"}, "result": "<html>"},
    ),
    "report_action_error": Case(
        lambda cid: ("show", None, "error", "not found"),
        EventType.ACTION_ERROR,
        {"action_name": "show", "request": None, "kind": "error", "reason": "not found"},
    ),
    "report_action_complete": Case(
        lambda cid: ("show", {"path": "/cart"}, True),
        EventType.ACTION_COMPLETE,
        {"action_name": "show", "request": {"path": "/cart"}},
    ),
    "report_live_mount_start": Case(
        lambda cid: (REQ, "CartLive", {"id": "7"}, {"user": 1}),
        EventType.LIVE_MOUNT_START,
        {"module": "CartLive", "params": {"id": "7"}, "session": {"user": 1}},
        request_id=REQ,
    ),
    "report_live_mount_complete": Case(
        lambda cid: (REQ, "CartLive", {"items": []}),
        EventType.LIVE_MOUNT_COMPLETE,
        {"module": "CartLive", "socket_assigns": {"items": []}},
        request_id=REQ,
    ),
    "report_live_handle_event_start": Case(
        lambda cid: (REQ, "add", {"sku": "a"}, {"items": []}),
        EventType.LIVE_HANDLE_EVENT_START,
        {"event": "add", "params": {"sku": "a"}, "socket_assigns": {"items": []}},
        request_id=REQ,
    ),
    "report_live_handle_event_complete": Case(
        lambda cid: (REQ, "add", {"sku": "a"}, {"items": []}, ("noreply", {"items": ["a"]})),
        EventType.LIVE_HANDLE_EVENT_COMPLETE,
        {
            "event": "add",
            "params": {"sku": "a"},
            "before_assigns": {"items": []},
            "result": ("noreply", {"items": ["a"]}),
        },
        request_id=REQ,
    ),
    "report_live_assigns": Case(
        lambda cid: ("handle_event", {"items": ["a"]}, True),
        EventType.LIVE_ASSIGNS_CHANGE,
        {"callback_name": "handle_event", "socket": {"items": ["a"]}},
    ),
    "report_live_event": Case(
        lambda cid: ("add", {"sku": "a"}, {"items": []}, True),
        EventType.LIVE_EVENT,
        {"event": "add", "params": {"sku": "a"}, "socket": {"items": []}},
    ),
    "report_live_callback": Case(
        lambda cid: ("mount", {"items": []}),
        EventType.LIVE_CALLBACK,
        {"callback_name": "mount", "socket": {"items": []}},
    ),
    "report_live_callback_success": Case(
        lambda cid: ("mount", {"items": []}, "ok"),
        EventType.LIVE_CALLBACK_SUCCESS,
        {"callback_name": "mount", "socket": {"items": []}, "result": "ok"},
    ),
    "report_live_callback_error": Case(
        lambda cid: ("mount", {"items": []}, "error", "boom"),
        EventType.LIVE_CALLBACK_ERROR,
        {"callback_name": "mount", "socket": {"items": []}, "kind": "error", "reason": "boom"},
    ),
    "report_channel_join_start": Case(
        lambda cid: (REQ, "room:1", {"room": "t"}, {"user": 1}),
        EventType.CHANNEL_JOIN_START,
        {"topic": "room:1", "payload": {"room": "t"}, "socket": {"user": 1}},
        request_id=REQ,
    ),
    "report_channel_join_complete": Case(
        lambda cid: (REQ, "room:1", {"room": "t"}, "ok"),
        EventType.CHANNEL_JOIN_COMPLETE,
        {"topic": "room:1", "payload": {"room": "t"}, "result": "ok"},
        request_id=REQ,
    ),
    "report_channel_message_start": Case(
        lambda cid: (REQ, "say", {"body": "hi"}, {"user": 1}),
        EventType.CHANNEL_MESSAGE_START,
        {"event": "say", "payload": {"body": "hi"}, "socket": {"user": 1}},
        request_id=REQ,
    ),
    "report_channel_message_complete": Case(
        lambda cid: (REQ, "say", {"body": "hi"}, ("reply", "ok")),
        EventType.CHANNEL_MESSAGE_COMPLETE,
        {"event": "say", "payload": {"body": "hi"}, "result": ("reply", "ok")},
        request_id=REQ,
    ),
    "report_db_query_start": Case(
        lambda cid: (REQ, "SELECT * FROM t WHERE id = ?", (7,), {"source": "t"}, "main"),
        EventType.DB_QUERY_START,
        {
            "query": "SELECT * FROM t WHERE id = ?",
            "params": (7,),
            "metadata": {"source": "t"},
            "repo": "main",
        },
        request_id=REQ,
    ),
    "report_db_query_complete": Case(
        lambda cid: (REQ, "SELECT * FROM t WHERE id = ?", (7,), {"rowcount": 1}, 830),
        EventType.DB_QUERY_COMPLETE,
        {
            "query": "SELECT * FROM t WHERE id = ?",
            "params": (7,),
            "result": {"rowcount": 1},
            "duration_us": 830,
        },
        request_id=REQ,
    ),
    "report_actor_callback_start": Case(
        lambda cid: ("handle_call", "counter", {"n": 1}),
        EventType.ACTOR_CALLBACK_START,
        {"callback": "handle_call", "server": "counter", "old_state": {"n": 1}},
    ),
    "report_actor_callback_success": Case(
        lambda cid: ("handle_call", "counter", "ok", {"n": 2}),
        EventType.ACTOR_CALLBACK_SUCCESS,
        {
            "callback": "handle_call",
            "server": "counter",
            "result": "ok",
            "new_state": {"n": 2},
            "state_diff": None,  # no start remembered
        },
    ),
    "report_actor_callback_error": Case(
        lambda cid: ("handle_call", "counter", "error", "bad"),
        EventType.ACTOR_CALLBACK_ERROR,
        {"callback": "handle_call", "server": "counter", "kind": "error", "reason": "bad"},
    ),
    "report_actor_callback_complete": Case(
        lambda cid: ("handle_call", "counter", {"n": 2}),
        EventType.ACTOR_CALLBACK_COMPLETE,
        {
            "callback": "handle_call",
            "server": "counter",
            "new_state": {"n": 2},
            "state_diff": None,
        },
    ),
    "report_node_event": Case(
        lambda cid: ("down", "worker@host", {"reason": "exit"}),
        EventType.NODE_EVENT,
        {"event_type": "down", "node_name": "worker@host", "metadata": {"reason": "exit"}},
    ),
    "report_partition_detected": Case(
        lambda cid: (["a@h", "b@h"], {"seen_by": "c@h"}),
        EventType.PARTITION_DETECTED,
        {"partitioned_nodes": ["a@h", "b@h"], "metadata": {"seen_by": "c@h"}},
    ),
    "report_remote_call_send": Case(
        lambda cid: (REQ, "http://b/x", TRACEPARENT, {"method": "GET"}),
        EventType.REMOTE_CALL_SEND,
        {
            "target": "http://b/x",
            "traceparent": TRACEPARENT,
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": "00f067aa0ba902b7",
            "sampled": True,
            "metadata": {"method": "GET"},
        },
        request_id=REQ,
    ),
    "report_remote_call_receive": Case(
        lambda cid: (REQ, "10.0.0.2", TRACEPARENT, None),
        EventType.REMOTE_CALL_RECEIVE,
        {
            "source": "10.0.0.2",
            "traceparent": TRACEPARENT,
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": "00f067aa0ba902b7",
            "sampled": True,
            "metadata": None,
        },
        request_id=REQ,
    ),
}

VALUE_REPORTERS = sorted(
    n
    for n, c in CASES.items()
    if not c.returns_call_id and c.event_type != EventType.FUNCTION_EXIT
    and next(iter(inspect.signature(getattr(rt, n)).parameters)) == "correlation_id"
    # a domain reporter's correlation_id is a request id, not the call a value belongs to
    and getattr(rt, n).__module__ == "tidescope.capture.runtime.ast"
)  # fmt: skip


def test_every_reporter_in_runtime_all_has_a_case() -> None:
    assert sorted(CASES) == REPORTERS
    assert len(REPORTERS) == 52


@pytest.mark.parametrize("name", REPORTERS)
def test_reporter_writes_its_event_with_type_data_and_ids(name: str) -> None:
    case = CASES[name]
    with tidescope.capture(buffer_size=64) as cap:
        outer = rt.report_function_entry("tests", "outer", [])
        cid = rt.report_function_entry("tests", "enclosing", [])
        result = getattr(rt, name)(*case.args(cid))
    events = cap.events()
    assert len(events) == 3
    ev = events[-1]
    assert ev.event_type == case.event_type
    data = dict(ev.data)
    for key, check in case.extra.items():
        assert check(data.pop(key)), (key, ev.data)
    assert data == case.data
    assert ev.ast_node_id == case.node_id
    assert ev.correlation_id == (outer if case.request_id is None else case.request_id)
    assert ev.pid == os.getpid()
    assert ev.thread_id == threading.get_ident()
    assert ev.task_id is None
    if case.returns_call_id:
        assert type(result) is int
        assert ev.call_id == result
        assert ev.parent_id == cid
    else:
        assert result is True
        assert ev.call_id == cid
        assert ev.parent_id == outer


@contextlib.contextmanager
def disabled(mode: str) -> Iterator[RingBuffer]:
    """Capture switched off in one of four ways; yields a buffer a write would land in."""
    if mode == "no_session":
        buf = RingBuffer(64)
        context.register_buffer(buf)  # registered, but nothing is started
        context.push_call_stack(777)
        yield buf
    elif mode == "after_stop":
        session = tidescope.start(buffer_size=64)
        context.push_call_stack(777)
        tidescope.stop()
        assert session.buffer is not None
        context.register_buffer(session.buffer)  # a write, were one made, would be seen
        yield session.buffer
    elif mode == "instrumentation_disabled":
        with tidescope.capture(buffer_size=64) as cap:
            context.push_call_stack(777)
            with context.instrumentation_disabled():
                assert cap.session is not None and cap.session.buffer is not None
                yield cap.session.buffer
    else:
        assert mode == "clear_context"
        with tidescope.capture(buffer_size=64) as cap:
            context.push_call_stack(777)
            context.clear_context()
            assert cap.session is not None and cap.session.buffer is not None
            yield cap.session.buffer


DISABLED_MODES = ["no_session", "after_stop", "instrumentation_disabled", "clear_context"]


@pytest.mark.parametrize("mode", DISABLED_MODES)
@pytest.mark.parametrize("name", REPORTERS)
def test_reporter_writes_nothing_when_capture_is_off(name: str, mode: str) -> None:
    case = CASES[name]
    with disabled(mode) as buf:
        assert context.enabled() is False
        result = getattr(rt, name)(*case.args(777))
        assert buf.stats()["total_writes"] == 0
        assert len(buf) == 0
    assert result is (None if case.returns_call_id else False)


# ---------------------------------------------------------------------------------------
# function entry and exit


def test_report_function_entry_returns_an_int_call_id_when_enabled() -> None:
    with tidescope.capture(buffer_size=64):
        a = rt.report_function_entry("m", "f", [])
        b = rt.report_function_entry("m", "g", [])
    assert type(a) is int
    assert type(b) is int
    assert a != b


def test_report_function_entry_returns_none_when_disabled() -> None:
    assert rt.report_function_entry("m", "f", [1]) is None


def test_entry_and_exit_share_the_call_id() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        cid = rt.report_function_entry("shop.cart", "add", ["apple", 2])
        assert rt.report_function_exit(cid, 3, 1200) is True
    en, ex = cap.events()
    assert (en.event_type, ex.event_type) == (EventType.FUNCTION_ENTRY, EventType.FUNCTION_EXIT)
    assert en.call_id == ex.call_id == cid
    assert en.parent_id is None and ex.parent_id is None
    assert en.correlation_id == ex.correlation_id == cid
    assert en.event_id != ex.event_id


def test_nested_call_carries_the_callers_call_id_as_parent() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        outer = rt.report_function_entry("m", "outer", [])
        inner = rt.report_function_entry("m", "inner", [])
        innermost = rt.report_function_entry("m", "innermost", [])
        rt.report_function_exit(innermost, None)
        rt.report_function_exit(inner, None)
        sibling = rt.report_function_entry("m", "sibling", [])
        rt.report_function_exit(sibling, None)
        rt.report_function_exit(outer, None)
    got = [(str(e.event_type), e.call_id, e.parent_id) for e in cap.events()]
    assert got == [
        ("function_entry", outer, None),
        ("function_entry", inner, outer),
        ("function_entry", innermost, inner),
        ("function_exit", innermost, inner),
        ("function_exit", inner, outer),
        ("function_entry", sibling, outer),
        ("function_exit", sibling, outer),
        ("function_exit", outer, None),
    ]


def test_exit_pops_the_call_from_the_call_stack() -> None:
    with tidescope.capture(buffer_size=64):
        outer = rt.report_function_entry("m", "outer", [])
        inner = rt.report_function_entry("m", "inner", [])
        assert context.call_stack() == [inner, outer]
        rt.report_function_exit(inner, None)
        assert context.call_stack() == [outer]
        rt.report_function_exit(outer, None)
        assert context.call_stack() == []


def test_exit_with_exception_records_the_exception_type_and_args() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        cid = rt.report_function_entry("shop.cart", "get", ["apple"])
        try:
            {}["apple"]
        except KeyError as exc:
            assert rt.report_function_exit(cid, exc, exit_reason="exception") is True
    ex = cap.events()[-1]
    assert ex.call_id == cid
    assert ex.data["exit_reason"] == "exception"
    assert ex.data["return_value"] is None
    assert ex.data["exception"]["type"] == "builtins.KeyError"
    assert tuple(ex.data["exception"]["args"]) == ("apple",)


def test_exit_without_duration_computes_a_positive_duration() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        cid = rt.report_function_entry("m", "slow", [])
        time.sleep(0.001)  # the clock must move; no threshold is checked
        rt.report_function_exit(cid, None)
    duration = cap.events()[-1].data["duration_ns"]
    assert type(duration) is int
    assert duration > 0


def test_exit_with_explicit_duration_records_it_unchanged() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        cid = rt.report_function_entry("m", "f", [])
        rt.report_function_exit(cid, None, 42)
    assert cap.events()[-1].data["duration_ns"] == 42


def test_exit_of_none_call_id_records_nothing() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        assert rt.report_function_exit(None, 1) is False
    assert cap.events() == []


def test_exit_after_stop_still_pops_the_call() -> None:
    tidescope.start(buffer_size=64)
    cid = rt.report_function_entry("m", "f", [])
    tidescope.stop()
    assert rt.report_function_exit(cid, None) is False
    assert context.call_stack() == []


@pytest.mark.parametrize(
    ("name", "make_args"),
    [
        (
            "report_ast_function_entry_with_node_id",
            lambda cid: ("m", "f", [], None, "m:f:1:0:FunctionDef"),
        ),
        ("report_ast_function_exit_with_node_id", lambda cid: (cid, 1, 5, "m:f:1:0:FunctionDef")),
        ("report_ast_variable_snapshot", lambda cid: (cid, {"a": 1}, 1, "m:f:1:0:FunctionDef")),
        ("report_ast_expression_value", lambda cid: (cid, "a", 1, 1, "m:f:1:0:FunctionDef")),
        ("report_ast_line_execution", lambda cid: (cid, 1, None, "m:f:1:0:FunctionDef")),
        ("report_ast_pattern_match", lambda cid: (cid, "p", 1, False, 1, "m:f:1:0:FunctionDef")),
        ("report_ast_branch_execution", lambda cid: (cid, "if", "a", 1, 1, "m:f:1:0:FunctionDef")),
        ("report_ast_loop_iteration", lambda cid: (cid, "while", 1, 1, 1, "m:f:1:0:FunctionDef")),
    ],
)
def test_ast_node_id_reaches_the_event(name: str, make_args: Callable[[Any], tuple[Any]]) -> None:
    with tidescope.capture(buffer_size=64) as cap:
        cid = rt.report_function_entry("m", "f", [])
        getattr(rt, name)(*make_args(cid))
    assert cap.events()[-1].ast_node_id == "m:f:1:0:FunctionDef"
    assert cap.events()[0].ast_node_id is None


def test_function_entry_and_exit_with_ast_node_id_keyword_reach_the_event() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        cid = rt.report_function_entry("m", "f", [], ast_node_id="m:f:1:0:FunctionDef")
        rt.report_function_exit(cid, 1, ast_node_id="m:f:3:4:Return")
    assert [e.ast_node_id for e in cap.events()] == ["m:f:1:0:FunctionDef", "m:f:3:4:Return"]


@pytest.mark.parametrize("name", VALUE_REPORTERS)
def test_value_reporter_given_enclosing_innermost_call_id_records_that_call(name: str) -> None:
    with tidescope.capture(buffer_size=64) as cap:
        outer = rt.report_function_entry("m", "outer", [])
        cid = rt.report_function_entry("m", "f", [])
        assert getattr(rt, name)(*CASES[name].args(cid)) is True
    ev = cap.events()[-1]
    assert (ev.call_id, ev.parent_id, ev.correlation_id) == (cid, outer, outer)


@pytest.mark.parametrize("name", VALUE_REPORTERS)
def test_value_reporter_given_an_outer_call_id_records_that_call(name: str) -> None:
    with tidescope.capture(buffer_size=64) as cap:
        outer = rt.report_function_entry("m", "outer", [])
        inner = rt.report_function_entry("m", "inner", [])
        assert getattr(rt, name)(*CASES[name].args(outer)) is True
        assert context.call_stack() == [inner, outer]
    ev = cap.events()[-1]
    assert ev.call_id == outer
    assert ev.correlation_id == outer


@pytest.mark.parametrize("name", VALUE_REPORTERS)
def test_value_reporter_given_none_records_the_innermost_call(name: str) -> None:
    with tidescope.capture(buffer_size=64) as cap:
        outer = rt.report_function_entry("m", "outer", [])
        inner = rt.report_function_entry("m", "inner", [])
        assert getattr(rt, name)(*CASES[name].args(None)) is True
    ev = cap.events()[-1]
    assert (ev.call_id, ev.parent_id, ev.correlation_id) == (inner, outer, outer)


def test_report_error_of_a_raised_exception_records_its_traceback() -> None:
    def fail() -> None:
        raise LookupError("no apple")

    with tidescope.capture(buffer_size=64) as cap:
        try:
            fail()
        except LookupError as exc:
            assert rt.report_error(exc) is True
    data = cap.events()[-1].data
    assert data["error_type"] == "builtins.LookupError"
    assert data["message"] == ("no apple",)
    assert isinstance(data["stacktrace"], list)
    assert data["stacktrace"][-1]["function"].endswith(".<locals>.fail")


# ---------------------------------------------------------------------------------------
# seed semantics of the AST call reporters


def test_report_ast_function_entry_uses_the_given_id_as_call_id_and_pushes_it() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        outer = rt.report_function_entry("m", "outer", [])
        got = rt.report_ast_function_entry("m", "seeded", [1], 4242)
        assert got == 4242
        assert context.call_stack() == [4242, outer]
        assert context.current_call_id() == 4242
        child = rt.report_function_entry("m", "child", [])
    seeded, nested = cap.events()[1:]
    assert (seeded.call_id, seeded.parent_id, seeded.correlation_id) == (4242, outer, outer)
    assert seeded.event_id != 4242
    assert (nested.call_id, nested.parent_id) == (child, 4242)


def test_report_ast_function_entry_without_id_makes_a_new_call_id() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        got = rt.report_ast_function_entry("m", "f", [], None)
        assert type(got) is int
        assert context.call_stack() == [got]
    assert cap.events()[0].call_id == got


def test_report_ast_function_exit_none_exits_the_innermost_call() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        outer = rt.report_function_entry("m", "outer", [])
        rt.report_ast_function_entry("m", "inner", [], 777)
        assert rt.report_ast_function_exit(None, "v", 10) is True
        assert context.call_stack() == [outer]
        assert rt.report_ast_function_exit(None, "w", 20) is True
        assert context.call_stack() == []
        assert rt.report_ast_function_exit(None, "x", 30) is False
    exits = [e for e in cap.events() if e.event_type == EventType.FUNCTION_EXIT]
    assert [(e.call_id, e.parent_id, e.data["return_value"]) for e in exits] == [
        (777, outer, "v"),
        (outer, None, "w"),
    ]


def test_report_ast_function_exit_with_node_id_none_exits_the_innermost_call() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        cid = rt.report_ast_function_entry_with_node_id("m", "f", [], 55, "m:f:1:0:FunctionDef")
        assert cid == 55
        rt.report_ast_function_exit_with_node_id(None, 1, 2, "m:f:2:4:Return")
        assert context.call_stack() == []
    ex = cap.events()[-1]
    assert (ex.call_id, ex.ast_node_id) == (55, "m:f:2:4:Return")


# ---------------------------------------------------------------------------------------
# no reporter raises


def _raise(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("evil dunder")


_EVIL_DUNDERS = (
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__", "__bool__",
    "__len__", "__iter__", "__next__", "__contains__", "__getitem__", "__setitem__",
    "__repr__", "__str__", "__format__", "__bytes__", "__int__", "__index__", "__float__",
    "__getattr__", "__getattribute__", "__setattr__", "__delattr__", "__dir__", "__call__",
    "__reduce__", "__reduce_ex__", "__sizeof__", "__copy__", "__deepcopy__", "__enter__",
    "__exit__", "__fspath__", "__instancecheck__", "__subclasscheck__",
)  # fmt: skip


class Evil:
    """An object every dunder of which raises (``__class__`` included)."""

    @property
    def __class__(self) -> Any:  # type: ignore[override]
        raise RuntimeError("evil __class__")


class EvilMeta(type):
    """A metaclass whose dunders raise too (set below): even ``type(x) in a_set`` fails."""


class EvilOfEvilType(metaclass=EvilMeta):
    pass


class EvilError(Exception):
    """An exception whose comparisons and attribute hooks raise (its __str__ works)."""


for _name in _EVIL_DUNDERS:
    setattr(Evil, _name, _raise)
    setattr(EvilOfEvilType, _name, _raise)
    if _name not in ("__str__", "__repr__", "__getattribute__", "__setattr__", "__hash__"):
        setattr(EvilError, _name, _raise)
EVIL_OF_EVIL_TYPE = EvilOfEvilType()
for _name in _EVIL_DUNDERS:  # last: afterwards the class can be neither called nor changed
    setattr(EvilMeta, _name, _raise)


class EvilDict(dict):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise RuntimeError("evil iter")

    def items(self) -> Any:  # type: ignore[override]
        raise RuntimeError("evil items")

    def __len__(self) -> int:
        raise RuntimeError("evil len")


def nested_list(depth: int) -> list[Any]:
    v: list[Any] = []
    for _ in range(depth):
        v = [v]
    return v


class Lazy:
    """A value Hypothesis must not print or walk: built only when the reporter is called."""

    def __init__(self, label: str, make: Callable[[], Any]) -> None:
        self.label = label
        self.make = make

    def __repr__(self) -> str:
        return self.label


class Deep(list):  # type: ignore[type-arg]
    """A list subclass around a 100 000-deep plain nested list."""


DEEP = Deep(nested_list(100_000))
HUGE = "x" * 2_000_000
EVILS = {
    "Evil()": Evil(),
    "EvilOfEvilType()": EVIL_OF_EVIL_TYPE,
    "EvilError()": EvilError("e"),
    "EvilDict()": EvilDict(a=1),
}


def _lazy(label: str, value: Any) -> Lazy:
    return Lazy(label, lambda: value)


def values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=10**300, max_value=10**400),
        st.floats(),
        st.text(max_size=20),
        st.binary(max_size=20),
        st.just(_lazy("HUGE", HUGE)),
        st.just(_lazy("DEEP", DEEP)),
        st.integers(0, 5000).map(lambda n: Lazy(f"nested_list({n})", lambda: nested_list(n))),
        st.sampled_from([_lazy(k, v) for k, v in EVILS.items()]),
        st.just(Lazy("<the innermost call id>", context.current_call_id)),
        st.sampled_from(["normal", "exception", "cancelled", NODE, "bad:node"]),
        st.builds(KeyError, st.text(max_size=5)),
        st.just(ValueError),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.tuples(inner, inner),
            st.dictionaries(st.text(max_size=4), inner, max_size=4),
        ),
        max_leaves=8,
    )


VALUES = values()


@st.composite
def call_of(draw: st.DrawFn, name: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    params = inspect.signature(getattr(rt, name)).parameters.values()
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in params:
        if p.kind is p.KEYWORD_ONLY:
            if draw(st.booleans()):
                kwargs[p.name] = draw(VALUES)
        elif p.default is p.empty or draw(st.booleans()):
            args.append(draw(VALUES))
        else:
            break
    return tuple(args), kwargs


def _resolve(v: Any) -> Any:
    """Build the Lazy leaves of a drawn value (containers drawn by Hypothesis are shallow)."""
    t = type(v)
    if t is Lazy:
        return v.make()
    if t is list:
        return [_resolve(x) for x in v]
    if t is tuple:
        return tuple(_resolve(x) for x in v)
    if t is dict:
        return {k: _resolve(x) for k, x in v.items()}
    return v


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_reporter_raises_whatever_its_arguments(data: st.DataObject) -> None:
    with tidescope.capture(buffer_size=256) as cap:
        for _ in range(data.draw(st.integers(1, 6), label="calls")):
            if data.draw(st.booleans(), label="open a call first"):
                rt.report_function_entry("tests", "fuzz", [])
            name = data.draw(st.sampled_from(REPORTERS), label="reporter")
            args, kwargs = data.draw(call_of(name), label="arguments")
            args = tuple(_resolve(a) for a in args)
            kwargs = {k: _resolve(v) for k, v in kwargs.items()}
            getattr(rt, name)(*args, **kwargs)  # must not raise
        stats = tidescope.stats()
        assert type(stats["internal_errors"]) is int
        cap.events()  # every recorded event materialises


def test_reporters_count_failures_instead_of_raising_them() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        before = tidescope.stats()["internal_errors"]
        cid = rt.report_function_entry("m", "f", [])
        assert rt.report_function_exit(Evil(), 1) is False  # __eq__ raises while unwinding
        # a hostile error value is recorded without running its code (no isinstance())
        assert rt.report_error(Evil()) is True
        after = tidescope.stats()["internal_errors"]
        assert context.call_stack() == [cid]
    assert type(after) is int
    assert after == before + 1
    events = cap.events()
    assert [e.event_type for e in events] == ["function_entry", "error"]
    assert events[1].data["error_type"] == "unknown"
    assert type(events[1].data["message"]) is ObjectSnapshot


class UnprintableError(Exception):
    """A user exception whose __str__ is broken (it formats a missing attribute)."""

    def __str__(self) -> str:
        return f"bad {self.missing}"  # type: ignore[attr-defined]


class RaisesUnprintable:
    """Raises an exception that cannot be turned into text from every hook tidescope touches."""

    def __eq__(self, other: object) -> bool:
        raise UnprintableError()

    __hash__ = object.__hash__

    @property
    def __class__(self) -> Any:  # type: ignore[override]
        raise UnprintableError()


@pytest.mark.parametrize(
    ("name", "make_args", "errors"),
    [
        # a call id is compared with ==, which runs the object's __eq__: counted
        ("report_function_exit", lambda cid: (RaisesUnprintable(), 1), 1),
        ("report_ast_function_exit", lambda cid: (RaisesUnprintable(), 1, 5), 1),
        ("report_line_execution", lambda cid: (RaisesUnprintable(), 1), 1),
        # a value is snapshotted without running any of its code: nothing to count
        ("report_function_entry", lambda cid: ("m", "f", RaisesUnprintable()), 0),
        ("report_error", lambda cid: (RaisesUnprintable(),), 0),
    ],
)
def test_reporter_does_not_raise_when_argument_raises_an_unprintable_exception(
    name: str, make_args: Callable[[Any], tuple[Any, ...]], errors: int
) -> None:
    with tidescope.capture(buffer_size=64):
        cid = rt.report_function_entry("m", "outer", [])
        before = tidescope.stats()["internal_errors"]
        getattr(rt, name)(*make_args(cid))  # must not raise
        assert tidescope.stats()["internal_errors"] == before + errors


# ---------------------------------------------------------------------------------------
# AST node ids


@pytest.mark.parametrize(
    "node_id",
    [
        "shop.cart:Cart.add:12:8:Assign",
        "m:f:0:0:Return",
        "pkg.sub.mod:outer.<locals>.inner:3:4:FunctionDef",
        "m:<lambda>:7:15:Lambda",
        "m:<module>:1:0:Module",
        "m:C.method.<locals>.<lambda>:9:2:Call",
        "_private:_f:1:0:Expr",
    ],
)
def test_validate_ast_node_id_returns_a_valid_id_unchanged(node_id: str) -> None:
    assert rt.validate_ast_node_id(node_id) == node_id


@pytest.mark.parametrize(
    "node_id",
    [
        "missing:parts",
        "",
        "a:b:x:1:Assign",
        "wrong-sep:f:1:2:T",
        "m:f:1:2",
        "m:f:1:2:T:extra",
        "m:f:-1:2:T",
        "m:f:1:2:",
        ":f:1:2:T",
        "m::1:2:T",
        "m:f:1:2:T ",
        " m:f:1:2:T",
        "m:f:1:2:T\n",
        "m:f.<locals:1:2:T",
        "1m:f:1:2:T",
        "m..n:f:1:2:T",
    ],
)
def test_validate_ast_node_id_rejects_invalid_formats(node_id: str) -> None:
    with pytest.raises(AstNodeIdError) as info:
        rt.validate_ast_node_id(node_id)
    assert info.value.reason == "invalid_format"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "make",
    [lambda: None, lambda: 12, lambda: 1.5, lambda: b"m:f:1:2:T", lambda: ["m:f:1:2:T"], Evil],
    ids=["none", "int", "float", "bytes", "list", "evil"],
)
def test_validate_ast_node_id_rejects_non_strings(make: Callable[[], Any]) -> None:
    with pytest.raises(AstNodeIdError) as info:
        rt.validate_ast_node_id(make())
    assert info.value.reason == "not_string"


def test_parse_ast_node_id_returns_the_parts() -> None:
    parts = rt.parse_ast_node_id("shop.cart:Cart.add:12:8:Assign")
    assert parts == AstNodeId("shop.cart", "Cart.add", 12, 8, "Assign")
    assert (parts.module, parts.qualname, parts.line, parts.column, parts.node_type) == (
        "shop.cart",
        "Cart.add",
        12,
        8,
        "Assign",
    )
    assert str(parts) == "shop.cart:Cart.add:12:8:Assign"


def test_parse_ast_node_id_accepts_locals_and_lambda_qualnames() -> None:
    parts = rt.parse_ast_node_id("m:outer.<locals>.<lambda>:3:9:Lambda")
    assert parts.qualname == "outer.<locals>.<lambda>"
    assert (parts.line, parts.column) == (3, 9)


def test_parse_ast_node_id_rejects_invalid_formats_with_reason() -> None:
    with pytest.raises(AstNodeIdError) as info:
        rt.parse_ast_node_id("missing:parts")
    assert info.value.reason == "invalid_format"


# ---------------------------------------------------------------------------------------
# get_ast_correlation_metadata

METADATA_KEYS = {
    "process_id",
    "thread_id",
    "task_id",
    "correlation_id",
    "call_id",
    "timestamp_mono",
    "timestamp_system",
    "enabled",
}


def test_ast_correlation_metadata_describes_this_context_inside_a_call() -> None:
    with tidescope.capture(buffer_size=64):
        outer = rt.report_function_entry("m", "outer", [])
        inner = rt.report_function_entry("m", "inner", [])
        md = rt.get_ast_correlation_metadata()
    assert set(md) == METADATA_KEYS
    assert md["process_id"] == os.getpid()
    assert md["thread_id"] == threading.get_ident()
    assert md["task_id"] is None
    assert md["call_id"] == inner
    assert md["correlation_id"] == outer
    assert md["enabled"] is True
    assert type(md["timestamp_mono"]) is int
    assert type(md["timestamp_system"]) is int


def test_ast_correlation_metadata_without_capture_says_disabled() -> None:
    md = rt.get_ast_correlation_metadata()
    assert set(md) == METADATA_KEYS
    assert md["enabled"] is False
    assert md["call_id"] is None
    assert md["correlation_id"] is None


def test_ast_correlation_metadata_has_a_task_id_inside_a_task() -> None:
    async def main() -> dict[str, Any]:
        return rt.get_ast_correlation_metadata()

    with tidescope.capture(buffer_size=64):
        md = asyncio.run(main())
    assert type(md["task_id"]) is int


def test_ast_correlation_metadata_writes_no_event() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        rt.get_ast_correlation_metadata()
    assert cap.events() == []


# ---------------------------------------------------------------------------------------
# measure_overhead


def _observable_state() -> tuple[Any, ...]:
    return (
        context.call_stack(),
        context.current_call_id(),
        context.current_correlation_id(),
        context.enabled(),
        context.get_buffer(),
        tidescope.active_session(),
    )


def test_measure_overhead_returns_positive_float_averages() -> None:
    result = rt.measure_overhead(iterations=2000)
    for key in ("entry_avg_ns", "exit_avg_ns", "disabled_avg_ns"):
        assert type(result[key]) is float, key
        assert result[key] > 0, key


def test_measure_overhead_inside_capture_leaves_context_and_buffer_as_before() -> None:
    with tidescope.capture(buffer_size=4096) as cap:
        outer = rt.report_function_entry("m", "outer", [])
        inner = rt.report_function_entry("m", "inner", [])
        before = _observable_state()
        buf = context.get_buffer()
        assert buf is not None
        writes_before = buf.stats()["total_writes"]
        rt.measure_overhead(iterations=2000)
        assert _observable_state() == before
        assert buf.stats()["total_writes"] == writes_before
        after = rt.report_function_entry("m", "after", [])
    events = cap.events()
    assert [e.call_id for e in events] == [outer, inner, after]
    assert events[-1].parent_id == inner
    assert events[-1].correlation_id == outer


def test_measure_overhead_without_capture_leaves_capture_off() -> None:
    before = _observable_state()
    rt.measure_overhead(iterations=2000)
    assert _observable_state() == before
    assert context.enabled() is False
    assert context.get_buffer() is None
    assert rt.report_function_entry("m", "f", []) is None


def test_measure_overhead_with_context_disabled_leaves_it_disabled() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        with context.instrumentation_disabled():
            rt.measure_overhead(iterations=2000)
            assert context.enabled() is False
            assert rt.report_function_entry("m", "f", []) is None
        assert context.enabled() is True
    assert cap.events() == []


@pytest.mark.parametrize("iterations", [0, -1, "x", 1.5, None])
def test_measure_overhead_rejects_invalid_iterations(iterations: Any) -> None:
    with pytest.raises(ValueError):
        rt.measure_overhead(iterations=iterations)


def test_measure_overhead_rejects_invalid_iterations_without_changing_the_context() -> None:
    with tidescope.capture(buffer_size=64):
        rt.report_function_entry("m", "outer", [])
        before = _observable_state()
        with pytest.raises(ValueError):
            rt.measure_overhead(iterations=0)
        assert _observable_state() == before


# ---------------------------------------------------------------------------------------
# start / stop / capture


def test_start_twice_raises_runtime_error() -> None:
    session = tidescope.start(buffer_size=64)
    with pytest.raises(RuntimeError):
        tidescope.start(buffer_size=64)
    assert tidescope.active_session() is session
    assert context.get_buffer() is session.buffer


def test_start_inside_capture_raises_runtime_error() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        with pytest.raises(RuntimeError):
            tidescope.start(buffer_size=64)
        assert tidescope.active_session() is cap.session


def test_stop_returns_the_sessions_stats_and_switches_capture_off() -> None:
    session = tidescope.start(buffer_size=64)
    cid = rt.report_function_entry("m", "f", [])
    rt.report_function_exit(cid, None)
    stats = tidescope.stop()
    assert stats["total_writes"] == 2
    assert stats["available_events"] == 2
    assert type(stats["internal_errors"]) is int
    assert stats["core"] == _core.CORE_NAME
    assert tidescope.active_session() is None
    assert session.active is False
    assert context.enabled() is False
    assert context.get_buffer() is None
    assert rt.report_function_entry("m", "g", []) is None


def test_stop_without_a_session_returns_empty_stats() -> None:
    assert tidescope.stop() == {}


def test_start_after_stop_starts_a_new_session() -> None:
    first = tidescope.start(buffer_size=64)
    tidescope.stop()
    second = tidescope.start(buffer_size=64)
    assert second is not first
    assert context.get_buffer() is second.buffer
    assert type(rt.report_function_entry("m", "f", [])) is int
    assert second.buffer is not None and len(second.buffer) == 1
    assert first.buffer is not None and len(first.buffer) == 0


def test_nested_capture_restores_the_outer_capture_on_exit() -> None:
    with tidescope.capture(buffer_size=64) as outer_cap:
        a = rt.report_function_entry("m", "a", [])
        with tidescope.capture(buffer_size=64) as inner_cap:
            assert tidescope.active_session() is inner_cap.session
            b = rt.report_function_entry("m", "b", [])
        assert tidescope.active_session() is outer_cap.session
        assert context.enabled() is True
        assert context.get_buffer() is outer_cap.session.buffer  # type: ignore[union-attr]
        assert context.call_stack() == [a]
        c = rt.report_function_entry("m", "c", [])
    assert [e.call_id for e in outer_cap.events()] == [a, c]
    assert [e.call_id for e in inner_cap.events()] == [b]
    assert outer_cap.events()[-1].parent_id == a
    assert tidescope.active_session() is None
    assert context.enabled() is False


def test_capture_inside_a_started_session_restores_that_session() -> None:
    session = tidescope.start(buffer_size=64)
    with tidescope.capture(buffer_size=64) as cap:
        inner = rt.report_function_entry("m", "inner", [])
    assert tidescope.active_session() is session
    assert context.get_buffer() is session.buffer
    after = rt.report_function_entry("m", "after", [])
    assert [e.call_id for e in cap.events()] == [inner]
    assert [e.call_id for e in session.buffer.drain()] == [after]  # type: ignore[union-attr]


def test_capture_exit_restores_the_call_stack_of_before() -> None:
    context.push_call_stack(11)
    with tidescope.capture(buffer_size=64):
        assert context.call_stack() == []
        rt.report_function_entry("m", "left_open", [])
    assert context.call_stack() == [11]


def test_measure_overhead_buffer_forwards_late_writes_once_retired() -> None:
    from tidescope.capture.runtime.performance import _MeasurementBuffer

    target = RingBuffer(8)
    private = _MeasurementBuffer(8)
    assert private.write("during") is True
    private.retire(target)
    assert private.write("late") is True
    assert target.drain() == ["late"]
    assert private.drain() == ["during"]


def test_arguments_bound_to_names_are_copied_not_referenced() -> None:
    kwargs = {"item": "apple", "qty": 2}
    with tidescope.capture(buffer_size=8) as cap:
        cid = rt.report_function_entry("shop", "add", kwargs)
        kwargs["qty"] = 99
        rt.report_function_exit(cid, None)
    entry = cap.events()[0]
    assert entry.data["args"] == {"item": "apple", "qty": 2} and entry.data["arity"] == 2
    assert entry.data["args"] is not kwargs
