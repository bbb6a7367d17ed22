"""Domain reporters: HTTP, live sessions, channels, database, actors, distributed, trace context."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tidescope
from tidescope import EventType
from tidescope.capture import _core, context
from tidescope.capture import runtime as rt
from tidescope.capture.runtime import TraceParent, actor
from tidescope.events import Event, ObjectSnapshot, Truncated, jsonable

DOMAIN_MODULES = ("http", "live", "channel", "database", "actor", "distributed")
DOMAIN_REPORTERS = sorted(
    n
    for n in rt.__all__
    if n.startswith("report_") and getattr(rt, n).__module__.rsplit(".", 1)[1] in DOMAIN_MODULES
)
REQUEST_ID_REPORTERS = [
    n
    for n in DOMAIN_REPORTERS
    if next(iter(inspect.signature(getattr(rt, n)).parameters)) == "correlation_id"
]
W3C_EXAMPLE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.fixture(autouse=True)
def no_remembered_actor_starts() -> None:
    """Earlier tests' actor starts (of ended sessions) are never used, but would show up here."""
    actor._starts.set(())


def args_for(name: str, fill: Any = "v") -> list[Any]:
    """Positional arguments for ``name``: every parameter ``fill``, flags True."""
    params = inspect.signature(getattr(rt, name)).parameters
    return [True if p.startswith("should_capture") else fill for p in params]


def test_the_six_domain_modules_bring_thirty_two_reporters() -> None:
    assert len(DOMAIN_REPORTERS) == 32
    assert len(REQUEST_ID_REPORTERS) == 16


@pytest.mark.parametrize("name", DOMAIN_REPORTERS)
def test_domain_reporter_docstring_names_the_seed_function_it_ports(name: str) -> None:
    doc = " ".join((inspect.getdoc(getattr(rt, name)) or "").split())
    assert re.search(r"Ports ``\w+\.report_\w+/\d``", doc) or "No seed counterpart" in doc


def test_runtime_all_stays_sorted() -> None:
    assert rt.__all__ == sorted(rt.__all__)
    assert len(set(rt.__all__)) == len(rt.__all__)


# ---------------------------------------------------------------------------------------
# per-flag gates: exactly True


FLAG_GATED = {
    "report_action_params": ("should_capture", EventType.ACTION_PARAMS),
    "report_action_start": ("should_capture_state", EventType.ACTION_START),
    "report_action_complete": ("should_capture_response", EventType.ACTION_COMPLETE),
    "report_live_assigns": ("should_capture", EventType.LIVE_ASSIGNS_CHANGE),
    "report_live_event": ("should_capture", EventType.LIVE_EVENT),
}


def test_flag_gated_reporters_are_exactly_those_with_a_should_capture_parameter() -> None:
    gated = {
        n
        for n in DOMAIN_REPORTERS
        if any(p.startswith("should_capture") for p in inspect.signature(getattr(rt, n)).parameters)
    }
    assert gated == set(FLAG_GATED)


class Truthy:
    def __bool__(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__


@pytest.mark.parametrize("name", sorted(FLAG_GATED))
@pytest.mark.parametrize(
    "flag",
    [False, None, 1, 1.0, "true", "yes", [True], (True,), {"x": 1}, Truthy()],
    ids=["False", "None", "1", "1.0", "str-true", "yes", "list", "tuple", "dict", "Truthy"],
)
def test_flag_gated_reporter_records_nothing_unless_flag_is_exactly_true(
    name: str, flag: Any
) -> None:
    param, _ = FLAG_GATED[name]
    fn = getattr(rt, name)
    with tidescope.capture(buffer_size=64) as cap:
        kwargs = {p: ("v" if p != param else flag) for p in inspect.signature(fn).parameters}
        assert fn(**kwargs) is False
    assert cap.events() == []


@pytest.mark.parametrize("name", sorted(FLAG_GATED))
def test_flag_gated_reporter_records_when_flag_is_true(name: str) -> None:
    _, event_type = FLAG_GATED[name]
    with tidescope.capture(buffer_size=64) as cap:
        assert getattr(rt, name)(*args_for(name)) is True
    (ev,) = cap.events()
    assert ev.event_type == event_type
    assert all(not k.startswith("should_capture") for k in ev.data)


def test_live_assigns_writes_a_live_assigns_change_event() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        rt.report_live_assigns("handle_event", {"count": 3}, True)
    (ev,) = cap.events()
    assert ev.event_type == EventType.LIVE_ASSIGNS_CHANGE == "live_assigns_change"
    assert ev.data == {"callback_name": "handle_event", "socket": {"count": 3}}


# ---------------------------------------------------------------------------------------
# envelope ids: request correlation from the argument, call and parent from the context


@pytest.mark.parametrize("name", REQUEST_ID_REPORTERS)
def test_explicit_request_id_becomes_the_envelope_correlation(name: str) -> None:
    with tidescope.capture(buffer_size=64) as cap:
        outer = rt.report_function_entry("m", "outer", [])
        inner = rt.report_function_entry("m", "inner", [])
        assert getattr(rt, name)("req-42", *args_for(name)[1:]) is True
    ev = cap.events()[-1]
    assert (ev.correlation_id, ev.call_id, ev.parent_id) == ("req-42", inner, outer)


@pytest.mark.parametrize("name", REQUEST_ID_REPORTERS)
def test_request_id_none_uses_the_bound_correlation(name: str) -> None:
    with tidescope.capture(buffer_size=64) as cap, context.bind_correlation_id("bound-7"):
        cid = rt.report_function_entry("m", "handler", [])
        assert getattr(rt, name)(None, *args_for(name)[1:]) is True
    ev = cap.events()[-1]
    assert (ev.correlation_id, ev.call_id, ev.parent_id) == ("bound-7", cid, None)


@pytest.mark.parametrize("name", REQUEST_ID_REPORTERS)
def test_request_id_none_outside_any_call_leaves_every_id_none(name: str) -> None:
    with tidescope.capture(buffer_size=64) as cap:
        assert getattr(rt, name)(None, *args_for(name)[1:]) is True
    ev = cap.events()[-1]
    assert (ev.correlation_id, ev.call_id, ev.parent_id) == (None, None, None)


def test_explicit_request_id_wins_over_the_bound_correlation() -> None:
    with tidescope.capture(buffer_size=64) as cap, context.bind_correlation_id("bound"):
        rt.report_http_request_start("req-1", "GET", "/", {}, "::1")
        rt.report_action_success("show", None, "ok")  # takes no request id
    start, action = cap.events()
    assert start.correlation_id == "req-1"
    assert action.correlation_id == "bound"


def test_reporters_without_request_id_carry_the_context_correlation() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        outer = rt.report_function_entry("m", "outer", [])
        rt.report_node_event("up", "b@h", None)
        rt.report_actor_callback_error("handle_cast", "srv", "error", "bad")
    assert [e.correlation_id for e in cap.events()] == [outer, outer, outer]


def test_request_id_is_snapshotted_not_kept_by_reference() -> None:
    rid = {"trace": ["a"]}
    with tidescope.capture(buffer_size=64) as cap:
        rt.report_db_query_start(rid, "SELECT 1", (), {}, "main")
        rid["trace"].append("b")
    ev = cap.events()[0]
    assert ev.correlation_id == {"trace": ["a"]}
    assert ev.correlation_id is not rid


def test_huge_request_id_is_cut_and_marked() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        assert rt.report_channel_join_start("r" * 100_000, "room", {}, None) is True
    corr = cap.events()[0].correlation_id
    assert type(corr) is Truncated
    assert (corr.type_name, corr.size, corr.reason) == ("str", 100_000, "length")


def test_payload_that_spends_the_budget_does_not_cut_the_request_id() -> None:
    big = ["x" * 200] * 20
    with tidescope.capture(buffer_size=64, max_event_bytes=512) as cap:
        assert rt.report_db_query_complete("req-9", big, big, big, 5) is True
    ev = cap.events()[0]
    assert ev.correlation_id == "req-9"
    assert ev.data["$truncated"].reason == "budget"  # the later keys were cut


def test_domain_event_inside_an_asyncio_task_carries_the_task_id() -> None:
    async def handler() -> None:
        rt.report_http_request_start("req-a", "POST", "/a", {}, "::1")

    with tidescope.capture(buffer_size=64) as cap:
        asyncio.run(handler())
    ev = cap.events()[0]
    assert type(ev.task_id) is int
    assert ev.correlation_id == "req-a"


# ---------------------------------------------------------------------------------------
# values are true, bounded snapshots


def test_params_are_recorded_as_they_were_at_the_event() -> None:
    params = {"items": [1]}
    with tidescope.capture(buffer_size=64) as cap:
        rt.report_http_request_start("r", "GET", "/", params, "::1")
        params["items"].append(2)
    assert cap.events()[0].data["params"] == {"items": [1]}


def test_request_object_is_captured_without_running_its_code() -> None:
    class Request:
        def __init__(self) -> None:
            self.path = "/cart"

        def __repr__(self) -> str:
            raise AssertionError("repr must not run")

        def __getattr__(self, name: str) -> Any:
            raise AssertionError("getattr must not run")

    with tidescope.capture(buffer_size=64) as cap:
        assert rt.report_action_start("show", Request(), True) is True
    req = cap.events()[0].data["request"]
    assert type(req) is ObjectSnapshot
    assert req.type_name.endswith("Request")
    assert req.attrs == {"path": "/cart"}


class Evil:
    """Every hook raises, ``__class__`` included."""

    def _boom(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("evil")

    __eq__ = __ne__ = __hash__ = __bool__ = __len__ = __iter__ = __repr__ = __str__ = _boom
    __getattr__ = __getitem__ = __index__ = __int__ = __float__ = __format__ = _boom

    @property
    def __class__(self) -> Any:  # type: ignore[override]
        raise RuntimeError("evil __class__")


class EvilDict(dict):  # type: ignore[type-arg]
    def items(self) -> Any:  # type: ignore[override]
        raise RuntimeError("evil items")

    def __iter__(self) -> Any:
        raise RuntimeError("evil iter")


def deep(n: int) -> list[Any]:
    v: list[Any] = []
    for _ in range(n):
        v = [v]
    return v


HOSTILE = {
    "none": None,
    "evil": Evil(),
    "evil_dict": EvilDict(a=1),
    "huge_str": "x" * 2_000_000,
    "huge_bytes": b"y" * 2_000_000,
    "huge_int": 10**5000,
    "huge_list": list(range(200_000)),
    "huge_dict": {str(i): i for i in range(100_000)},
    "deep": deep(50_000),
    "exception": ValueError("bad", Evil()),
    "exception_class": KeyError,
    "generator": (i for i in range(3)),
}


# parametrized by key: pytest itself would run isinstance() on an Evil parameter
@pytest.mark.parametrize("value_name", list(HOSTILE))
@pytest.mark.parametrize("name", DOMAIN_REPORTERS)
def test_hostile_or_huge_argument_is_recorded_bounded_and_never_raises(
    name: str, value_name: str
) -> None:
    value = HOSTILE[value_name]
    with tidescope.capture(buffer_size=64) as cap:
        cid = rt.report_function_entry("m", "f", [])
        result = getattr(rt, name)(*args_for(name, fill=value))
    assert result is True
    events = cap.events()
    assert len(events) == 2
    ev = events[-1]
    assert ev.call_id == cid
    assert len(json.dumps(ev.to_dict())) < 40_000  # the defaults allow 4 KiB of data


def test_failure_inside_a_domain_reporter_is_counted_and_returns_false(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("buffer gone")

    with tidescope.capture(buffer_size=64):
        monkeypatch.setattr(_core, "write_event", broken)
        before = tidescope.stats()["internal_errors"]
        assert rt.report_http_request_start("r", "GET", "/", {}, "::1") is False
        assert rt.report_actor_callback_start("init", "srv", {}) is False
        assert rt.report_remote_call_send("r", "b", W3C_EXAMPLE, None) is False
        assert tidescope.stats()["internal_errors"] == before + 3


@pytest.mark.parametrize("name", DOMAIN_REPORTERS)
def test_domain_reporter_after_stop_returns_false_and_writes_nothing(name: str) -> None:
    session = tidescope.start(buffer_size=64)
    tidescope.stop()
    assert session.buffer is not None
    context.register_buffer(session.buffer)
    assert getattr(rt, name)(*args_for(name)) is False
    assert session.buffer.stats()["total_writes"] == 0


# ---------------------------------------------------------------------------------------
# actors: real state snapshots and diffs against the start


def events_of(cap: Any, *types: EventType) -> list[Event]:
    return [e for e in cap.events() if e.event_type in types]


def test_actor_callback_records_state_before_after_and_the_diff() -> None:
    state = {"count": 1, "tmp": "x"}
    with tidescope.capture(buffer_size=64) as cap:
        rt.report_actor_callback_start("handle_call", "counter", state)
        state["count"] += 1  # the callback mutates its state in place
        del state["tmp"]
        state["last"] = "inc"
        rt.report_actor_callback_success("handle_call", "counter", ("reply", 2), state)
        rt.report_actor_callback_complete("handle_call", "counter", state)
    start, success, complete = cap.events()
    assert start.data["old_state"] == {"count": 1, "tmp": "x"}
    assert success.data["result"] == ("reply", 2)
    assert success.data["new_state"] == {"count": 2, "last": "inc"}
    expected_diff = {
        "changed": True,
        "added": {"last": "inc"},
        "removed": ["tmp"],
        "modified": {"count": {"old": 1, "new": 2}},
    }
    assert success.data["state_diff"] == expected_diff
    assert complete.data["new_state"] == {"count": 2, "last": "inc"}
    assert complete.data["state_diff"] == expected_diff


def test_actor_state_is_never_a_boolean_placeholder() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        rt.report_actor_callback_start("init", "srv", {"ready": False, "queue": []})
    assert cap.events()[0].data["old_state"] == {"ready": False, "queue": []}


def test_unchanged_actor_state_diffs_as_unchanged() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        rt.report_actor_callback_start("handle_info", "srv", {"n": 1})
        rt.report_actor_callback_complete("handle_info", "srv", {"n": 1})
    assert cap.events()[-1].data["state_diff"] == {"changed": False}


def test_unchanged_state_larger_than_the_budget_still_diffs_as_unchanged() -> None:
    state = {f"k{i}": "v" * 200 for i in range(15)}
    with tidescope.capture(buffer_size=64, max_event_bytes=1024) as cap:
        rt.report_actor_callback_start("handle_call", "srv", state)
        rt.report_actor_callback_success("handle_call", "srv", "r" * 250, state)
    start, success = cap.events()
    assert "$truncated" in str(jsonable(start.data["old_state"]))
    assert success.data["state_diff"] == {"changed": False}


def test_object_state_diffs_by_attribute() -> None:
    @dataclass
    class Cart:
        items: list[str] = field(default_factory=list)
        total: int = 0

    cart = Cart()
    with tidescope.capture(buffer_size=64) as cap:
        rt.report_actor_callback_start("handle_cast", cart, cart)
        cart.items.append("apple")
        cart.total = 3
        rt.report_actor_callback_complete("handle_cast", cart, cart)
    start, complete = cap.events()
    assert type(start.data["old_state"]) is ObjectSnapshot
    assert start.data["old_state"].attrs == {"items": [], "total": 0}
    diff = complete.data["state_diff"]
    assert diff["modified"] == {
        "items": {"old": [], "new": ["apple"]},
        "total": {"old": 0, "new": 3},
    }


def test_success_without_start_has_no_diff() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        rt.report_actor_callback_success("handle_call", "srv", "ok", {"n": 1})
    assert cap.events()[0].data["state_diff"] is None


def test_complete_forgets_the_start_state() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        rt.report_actor_callback_start("handle_call", "srv", {"n": 1})
        rt.report_actor_callback_complete("handle_call", "srv", {"n": 2})
        rt.report_actor_callback_complete("handle_call", "srv", {"n": 3})
    first, second = events_of(cap, EventType.ACTOR_CALLBACK_COMPLETE)
    assert first.data["state_diff"]["modified"] == {"n": {"old": 1, "new": 2}}
    assert second.data["state_diff"] is None
    assert actor._starts.get() == ()


def test_error_keeps_the_start_state_for_complete() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        rt.report_actor_callback_start("handle_call", "srv", {"n": 1})
        rt.report_actor_callback_error("handle_call", "srv", "error", ValueError("boom"))
        rt.report_actor_callback_complete("handle_call", "srv", {"n": 1, "failed": True})
    _, error, complete = cap.events()
    assert error.event_type == EventType.ACTOR_CALLBACK_ERROR
    assert error.data["kind"] == "error"
    assert type(error.data["reason"]) is ObjectSnapshot
    assert error.data["reason"].attrs == {"args": ("boom",)}
    assert complete.data["state_diff"]["added"] == {"failed": True}


def test_diffs_are_kept_apart_per_actor_and_per_callback() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        rt.report_actor_callback_start("handle_call", "a", {"n": 1})
        rt.report_actor_callback_start("handle_call", "b", {"n": 10})
        rt.report_actor_callback_start("handle_cast", "a", {"n": 100})
        rt.report_actor_callback_complete("handle_call", "b", {"n": 11})
        rt.report_actor_callback_complete("handle_call", "a", {"n": 2})
        rt.report_actor_callback_complete("handle_cast", "a", {"n": 101})
    diffs = [
        (e.data["server"], e.data["callback"], e.data["state_diff"]["modified"]["n"])
        for e in events_of(cap, EventType.ACTOR_CALLBACK_COMPLETE)
    ]
    assert diffs == [
        ("b", "handle_call", {"old": 10, "new": 11}),
        ("a", "handle_call", {"old": 1, "new": 2}),
        ("a", "handle_cast", {"old": 100, "new": 101}),
    ]


def test_two_equal_looking_actor_objects_are_different_actors() -> None:
    class Server:
        pass

    a, b = Server(), Server()
    with tidescope.capture(buffer_size=64) as cap:
        rt.report_actor_callback_start("handle_call", a, {"n": 1})
        rt.report_actor_callback_complete("handle_call", b, {"n": 2})
        rt.report_actor_callback_complete("handle_call", a, {"n": 3})
    b_done, a_done = events_of(cap, EventType.ACTOR_CALLBACK_COMPLETE)
    assert b_done.data["state_diff"] is None
    assert a_done.data["state_diff"]["modified"] == {"n": {"old": 1, "new": 3}}


def test_nested_callbacks_of_one_actor_diff_against_their_own_start() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        rt.report_actor_callback_start("handle_call", "srv", {"depth": 0})
        rt.report_actor_callback_start("handle_call", "srv", {"depth": 1})
        rt.report_actor_callback_complete("handle_call", "srv", {"depth": 2})
        rt.report_actor_callback_complete("handle_call", "srv", {"depth": 3})
    inner, outer = events_of(cap, EventType.ACTOR_CALLBACK_COMPLETE)
    assert inner.data["state_diff"]["modified"] == {"depth": {"old": 1, "new": 2}}
    assert outer.data["state_diff"]["modified"] == {"depth": {"old": 0, "new": 3}}


def test_remembered_starts_are_bounded_and_the_newest_are_kept() -> None:
    n = actor.MAX_PENDING_STARTS * 3
    with tidescope.capture(buffer_size=1024) as cap:
        for i in range(n):
            rt.report_actor_callback_start("handle_call", f"srv{i}", {"i": i})
        assert len(actor._starts.get()) == actor.MAX_PENDING_STARTS
        rt.report_actor_callback_complete("handle_call", "srv0", {"i": -1})
        rt.report_actor_callback_complete("handle_call", f"srv{n - 1}", {"i": -1})
    oldest, newest = events_of(cap, EventType.ACTOR_CALLBACK_COMPLETE)
    assert oldest.data["state_diff"] is None
    assert newest.data["state_diff"]["modified"] == {"i": {"old": n - 1, "new": -1}}


def test_start_of_an_earlier_session_is_not_diffed_against() -> None:
    with tidescope.capture(buffer_size=64):
        rt.report_actor_callback_start("handle_call", "srv", {"n": 1})
    with tidescope.capture(buffer_size=64) as cap:
        rt.report_actor_callback_complete("handle_call", "srv", {"n": 2})
    assert cap.events()[0].data["state_diff"] is None


def test_start_while_capture_is_off_remembers_nothing() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        with context.instrumentation_disabled():
            assert rt.report_actor_callback_start("handle_call", "srv", {"n": 1}) is False
        assert actor._starts.get() == ()
        rt.report_actor_callback_complete("handle_call", "srv", {"n": 2})
    assert cap.events()[0].data["state_diff"] is None


def test_a_tasks_start_is_invisible_to_its_creator_and_siblings() -> None:
    async def callback(name: str, n: int) -> None:
        rt.report_actor_callback_start("handle_call", "srv", {"n": n})
        await asyncio.sleep(0)
        rt.report_actor_callback_complete("handle_call", "srv", {"n": n + 1})

    async def main() -> None:
        await asyncio.gather(callback("a", 0), callback("b", 10))

    with tidescope.capture(buffer_size=64) as cap:
        asyncio.run(main())
        assert actor._starts.get() == ()
        rt.report_actor_callback_complete("handle_call", "srv", {"n": 99})
    done = events_of(cap, EventType.ACTOR_CALLBACK_COMPLETE)
    assert sorted(e.data["state_diff"]["modified"]["n"]["old"] for e in done[:2]) == [0, 10]
    assert all(e.data["state_diff"]["modified"]["n"]["new"] in (1, 11) for e in done[:2])
    assert done[2].data["state_diff"] is None


def test_a_threads_start_is_invisible_to_other_threads() -> None:
    started = threading.Event()
    with tidescope.capture(buffer_size=64) as cap:

        def worker() -> None:
            rt.report_actor_callback_start("handle_call", "srv", {"n": 1})
            started.set()

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert started.is_set()
        rt.report_actor_callback_complete("handle_call", "srv", {"n": 2})
    assert events_of(cap, EventType.ACTOR_CALLBACK_COMPLETE)[0].data["state_diff"] is None


def test_hostile_actor_and_callback_name_are_keyed_without_running_their_code() -> None:
    srv, cb = Evil(), Evil()
    with tidescope.capture(buffer_size=64) as cap:
        before = tidescope.stats()["internal_errors"]
        assert rt.report_actor_callback_start(cb, srv, {"n": 1}) is True
        assert rt.report_actor_callback_complete(cb, srv, {"n": 2}) is True
        assert tidescope.stats()["internal_errors"] == before
    assert cap.events()[-1].data["state_diff"]["modified"] == {"n": {"old": 1, "new": 2}}


# ---------------------------------------------------------------------------------------
# W3C trace context


def test_parse_traceparent_reads_the_w3c_example() -> None:
    tp = rt.parse_traceparent(W3C_EXAMPLE)
    assert tp == TraceParent("00", TRACE, SPAN, 1)
    assert tp is not None and tp.sampled is True


@pytest.mark.parametrize(
    ("flags", "value", "sampled"),
    [("00", 0, False), ("01", 1, True), ("02", 2, False), ("03", 3, True), ("ff", 255, True)],
)
def test_parse_traceparent_reads_the_flags(flags: str, value: int, sampled: bool) -> None:
    tp = rt.parse_traceparent(f"00-{TRACE}-{SPAN}-{flags}")
    assert tp is not None
    assert (tp.flags, tp.sampled) == (value, sampled)


@pytest.mark.parametrize(
    "header",
    [
        f" \t00-{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-01 \t ",
        f"\t00-{TRACE}-{SPAN}-01\t",
    ],
)
def test_parse_traceparent_allows_surrounding_spaces_and_tabs(header: str) -> None:
    assert rt.parse_traceparent(header) == TraceParent("00", TRACE, SPAN, 1)


def test_parse_traceparent_accepts_bytes_as_asgi_gives_headers() -> None:
    assert rt.parse_traceparent(W3C_EXAMPLE.encode()) == TraceParent("00", TRACE, SPAN, 1)
    assert rt.parse_traceparent(bytearray(W3C_EXAMPLE.encode())) is not None


@pytest.mark.parametrize(
    "header",
    [f"01-{TRACE}-{SPAN}-01", f"01-{TRACE}-{SPAN}-01-extra", f"cc-{TRACE}-{SPAN}-00-a-b-c"],
)
def test_parse_traceparent_accepts_later_versions_and_ignores_their_extra_data(
    header: str,
) -> None:
    tp = rt.parse_traceparent(header)
    assert tp is not None
    assert (tp.trace_id, tp.parent_id) == (TRACE, SPAN)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "00",
        f"ff-{TRACE}-{SPAN}-01",  # version ff is forbidden
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 carries no more data
        f"00-{TRACE}-{SPAN}-01-",
        f"00-{TRACE.upper()}-{SPAN}-01",  # uppercase hex
        f"00-{TRACE}-{SPAN.upper()}-01",
        f"0A-{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-0A",
        f"00-{TRACE[:-1]}-{SPAN}-01",  # short trace id
        f"00-{TRACE}0-{SPAN}-01",  # long trace id
        f"00-{TRACE}-{SPAN[:-1]}-01",
        f"00-{TRACE}-{SPAN}-1",
        f"00-{TRACE}-{SPAN}-001",
        f"0-{TRACE}-{SPAN}-01",
        f"00_{TRACE}_{SPAN}_01",
        f"00-{TRACE[:-1]}g-{SPAN}-01",  # not hex
        f"01-{TRACE}-{SPAN}-01x",  # a later version's extra data must start with a dash
        f"00-{TRACE}-{SPAN}-01\n",  # a trailing newline is not optional whitespace
        f"\n00-{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-01\x00",
        f"00 -{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-01" + "-x" * 100_000,
    ],
)
def test_parse_traceparent_rejects_invalid_headers(header: str) -> None:
    assert rt.parse_traceparent(header) is None


@pytest.mark.parametrize(
    "header",
    [None, 0, 1.5, [W3C_EXAMPLE], {"traceparent": W3C_EXAMPLE}, Evil, "é" * 55, b"\xff" * 55],
    ids=["none", "int", "float", "list", "dict", "evil", "non-ascii", "non-ascii-bytes"],
)
def test_parse_traceparent_returns_none_for_non_headers(header: Any) -> None:
    if header is Evil:
        header = Evil()  # built here: pytest would run isinstance() on a parameter
    assert rt.parse_traceparent(header) is None


@given(st.text(max_size=80) | st.binary(max_size=80))
def test_parse_traceparent_never_raises(header: str | bytes) -> None:
    tp = rt.parse_traceparent(header)
    assert tp is None or type(tp) is TraceParent


HEX32 = st.text("0123456789abcdef", min_size=32, max_size=32).filter(lambda s: s != "0" * 32)
HEX16 = st.text("0123456789abcdef", min_size=16, max_size=16).filter(lambda s: s != "0" * 16)


@given(HEX32, HEX16, st.booleans())
def test_format_then_parse_gives_back_the_ids(trace_id: str, span_id: str, sampled: bool) -> None:
    header = rt.format_traceparent(trace_id, span_id, sampled)
    assert len(header) == 55
    assert rt.parse_traceparent(header) == TraceParent("00", trace_id, span_id, int(sampled))


def test_format_traceparent_writes_the_sampled_flag() -> None:
    assert rt.format_traceparent(TRACE, SPAN) == W3C_EXAMPLE
    assert rt.format_traceparent(TRACE, SPAN, sampled=False) == W3C_EXAMPLE[:-2] + "00"


@pytest.mark.parametrize(
    ("trace_id", "parent_id"),
    [
        ("0" * 32, SPAN),
        (TRACE, "0" * 16),
        (TRACE.upper(), SPAN),
        (TRACE[:-1], SPAN),
        (TRACE, SPAN + "0"),
        (None, SPAN),
        (TRACE, 12345),
        (TRACE + "\n", SPAN),
    ],
)
def test_format_traceparent_rejects_invalid_ids(trace_id: Any, parent_id: Any) -> None:
    with pytest.raises(ValueError):
        rt.format_traceparent(trace_id, parent_id)


def test_new_trace_and_span_ids_are_valid_random_w3c_ids() -> None:
    traces = {rt.new_trace_id() for _ in range(200)}
    spans = {rt.new_span_id() for _ in range(200)}
    assert len(traces) == 200
    assert len(spans) == 200
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) and t != "0" * 32 for t in traces)
    assert all(re.fullmatch(r"[0-9a-f]{16}", s) and s != "0" * 16 for s in spans)
    header = rt.format_traceparent(rt.new_trace_id(), rt.new_span_id())
    assert rt.parse_traceparent(header) is not None


def test_new_ids_are_not_event_ids() -> None:
    assert type(rt.new_trace_id()) is str
    assert type(_core.next_id()) is int


# ---------------------------------------------------------------------------------------
# remote calls, nodes, partitions


def test_remote_call_send_and_receive_join_on_trace_and_span_ids() -> None:
    header = rt.format_traceparent(rt.new_trace_id(), rt.new_span_id())
    with tidescope.capture(buffer_size=64) as cap:
        rt.report_remote_call_send("req-a", "http://b/api", header, {"method": "GET"})
        rt.report_remote_call_receive("req-b", "10.0.0.1", header, None)
    send, recv = cap.events()
    assert (send.event_type, recv.event_type) == ("remote_call_send", "remote_call_receive")
    assert send.data["target"] == "http://b/api"
    assert recv.data["source"] == "10.0.0.1"
    assert (send.data["trace_id"], send.data["span_id"]) == (
        recv.data["trace_id"],
        recv.data["span_id"],
    )
    assert send.data["traceparent"] == recv.data["traceparent"] == header
    assert (send.correlation_id, recv.correlation_id) == ("req-a", "req-b")


@pytest.mark.parametrize(
    "header", [None, "garbage", f"ff-{TRACE}-{SPAN}-01", Evil], ids=["none", "text", "ff", "evil"]
)
def test_remote_call_with_invalid_header_is_recorded_without_trace_ids(header: Any) -> None:
    if header is Evil:
        header = Evil()
    with tidescope.capture(buffer_size=64) as cap:
        assert rt.report_remote_call_send("r", "b", header, None) is True
    data = cap.events()[0].data
    assert (data["trace_id"], data["span_id"], data["sampled"]) == (None, None, None)


def test_remote_call_with_a_huge_header_records_it_cut() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        assert rt.report_remote_call_receive("r", "a", "0" * 1_000_000, None) is True
    tp = cap.events()[0].data["traceparent"]
    assert type(tp) is Truncated
    assert tp.size == 1_000_000


def test_remote_call_with_a_bytes_header_reads_its_ids() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        rt.report_remote_call_receive(None, "a", W3C_EXAMPLE.encode(), None)
    data = cap.events()[0].data
    assert (data["trace_id"], data["span_id"], data["sampled"]) == (TRACE, SPAN, True)


@pytest.mark.parametrize("kind", ["up", "down", "net_tick_timeout"])
def test_node_event_records_its_kind_in_data_not_in_the_envelope_type(kind: str) -> None:
    with tidescope.capture(buffer_size=64) as cap:
        assert rt.report_node_event(kind, "beta@host", {"pid": 4242}) is True
    (ev,) = cap.events()
    assert ev.event_type == EventType.NODE_EVENT
    assert ev.data == {"event_type": kind, "node_name": "beta@host", "metadata": {"pid": 4242}}
    assert type(ev.node) is str and ev.node


def test_partition_detected_records_the_unreachable_nodes() -> None:
    nodes = ["b@h", "c@h"]
    with tidescope.capture(buffer_size=64) as cap:
        assert rt.report_partition_detected(nodes, {"detected_by": "heartbeat"}) is True
        nodes.append("d@h")
    (ev,) = cap.events()
    assert ev.event_type == EventType.PARTITION_DETECTED
    assert ev.data == {
        "partitioned_nodes": ["b@h", "c@h"],
        "metadata": {"detected_by": "heartbeat"},
    }


def test_node_and_partition_reporters_exist_unlike_the_seeds() -> None:
    # the seed delegated them to a module that did not exist (catalogue §8.1)
    report: Callable[..., bool]
    for report in (rt.report_node_event, rt.report_partition_detected):
        assert report.__module__ == "tidescope.capture.runtime.distributed"
    assert rt.report_node_event("up", "n", None) is False  # off: nothing, no error
