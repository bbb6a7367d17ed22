"""asyncio integration: task lifecycle events, queue messages that join up, actor callbacks."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import tidescope
from tidescope import EventType
from tidescope.capture import _core
from tidescope.capture import runtime as rt
from tidescope.capture.runtime import actor as actor_runtime
from tidescope.events import Event, ObjectSnapshot, Truncated
from tidescope.integrations import asyncio as tai

SPAWN = EventType.PROCESS_SPAWN
EXIT = EventType.PROCESS_EXIT


@pytest.fixture(autouse=True)
def no_remembered_actor_starts() -> None:
    actor_runtime._starts.set(())


from _errors import internal_errors  # noqa: E402


def run_traced(main: Callable[[], Coroutine[Any, Any, Any]], **settings: Any) -> tuple[Any, Any]:
    """Run ``main()`` on an instrumented loop inside a capture; returns (result, capture)."""
    settings.setdefault("buffer_size", 4096)
    with tidescope.capture(**settings) as cap, asyncio.Runner(loop_factory=tai.new_event_loop) as r:
        result = r.run(main())
    return result, cap


def task_events(cap: Any) -> list[Event]:
    return [e for e in cap.events() if e.event_type in (SPAWN, EXIT)]


def lifecycle(cap: Any, fn: Callable[..., Any]) -> dict[str, Event]:
    """The phases of the one task running the coroutine function ``fn``, by phase name."""
    coroutine = fn.__qualname__
    creates = [
        e
        for e in cap.events(SPAWN)
        if e.data["phase"] == "create" and e.data["coroutine"] == coroutine
    ]
    assert len(creates) == 1, creates
    sid = creates[0].data["spawn_id"]
    return {e.data["phase"]: e for e in task_events(cap) if e.data["spawn_id"] == sid}


def no_internal_errors(cap: Any) -> None:
    assert internal_errors() == 0, cap.stats()["last_internal_error"]


# ---------------------------------------------------------------------------------------
# tasks


def test_task_create_start_and_done_join_on_spawn_id_and_name_the_parent_task() -> None:
    async def child() -> int:
        await asyncio.sleep(0)
        return 42

    async def main() -> tuple[int, Any]:
        parent = _core.current_task_id()
        return await asyncio.create_task(child()), parent

    (result, parent_task), cap = run_traced(main)
    assert result == 42
    phases = lifecycle(cap, child)
    assert list(phases) == ["create", "start", "done"]
    create, start, done = phases["create"], phases["start"], phases["done"]
    assert create.task_id == parent_task == create.data["parent_task_id"]
    assert start.data["parent_task_id"] == parent_task
    assert start.task_id == start.data["task_id"] != parent_task
    assert done.task_id == start.task_id == done.data["task_id"]
    assert done.data["exit_reason"] == "normal"
    assert done.data["result"] == 42
    assert done.data["lifetime_ns"] >= 0
    assert create.event_id < start.event_id < done.event_id
    no_internal_errors(cap)


def test_the_main_task_of_an_instrumented_runner_is_reported_without_a_parent() -> None:
    async def main() -> None:
        await asyncio.sleep(0)

    _, cap = run_traced(main)
    phases = lifecycle(cap, main)
    assert phases["create"].data["parent_task_id"] is None
    assert phases["start"].data["parent_task_id"] is None
    assert phases["done"].data["exit_reason"] == "normal"


def test_grandchild_names_the_child_task_as_its_parent() -> None:
    async def grandchild() -> int | None:
        return _core.current_task_id()

    async def child() -> tuple[int | None, int | None]:
        return _core.current_task_id(), await asyncio.create_task(grandchild())

    async def main() -> tuple[int | None, int | None]:
        return await asyncio.create_task(child())

    (child_id, grandchild_id), cap = run_traced(main)
    starts = {e.task_id: e for e in cap.events(SPAWN) if e.data["phase"] == "start"}
    assert starts[grandchild_id].data["parent_task_id"] == child_id
    creates = [e for e in cap.events(SPAWN) if e.data["phase"] == "create"]
    assert [e.task_id for e in creates if e.data["coroutine"].endswith("grandchild")] == [child_id]


def test_a_failing_task_reports_its_exception_and_the_same_exception_reaches_the_awaiter() -> None:
    boom = ValueError("boom", 7)

    async def fail() -> None:
        await asyncio.sleep(0)
        raise boom

    async def main() -> BaseException | None:
        try:
            await asyncio.create_task(fail())
        except ValueError as exc:
            return exc
        return None

    caught, cap = run_traced(main)
    assert caught is boom
    done = lifecycle(cap, fail)["done"]
    assert done.data["exit_reason"] == "exception"
    assert done.data["exception"]["type"] == "builtins.ValueError"
    assert done.data["exception"]["args"] == ("boom", 7)


def test_a_task_cancelled_while_waiting_reports_cancel() -> None:
    started = asyncio.Event

    async def sleeper(ev: asyncio.Event) -> None:
        ev.set()
        await asyncio.sleep(3600)

    async def main() -> bool:
        ev = started()
        t = asyncio.create_task(sleeper(ev))
        await ev.wait()
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            pass
        return t.cancelled()

    cancelled, cap = run_traced(main)
    assert cancelled
    phases = lifecycle(cap, sleeper)
    assert list(phases) == ["create", "start", "cancel"]
    assert phases["cancel"].data["exit_reason"] == "cancelled"
    assert phases["cancel"].task_id == phases["start"].task_id


def test_a_task_cancelled_before_its_first_step_reports_cancel_and_no_unawaited_coroutine() -> None:
    ran = []

    async def never() -> None:
        ran.append(1)

    async def main() -> bool:
        t = asyncio.create_task(never())
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            pass
        return t.cancelled()

    cancelled, cap = run_traced(main)
    gc.collect()  # a coroutine never awaited would warn here (warnings are errors)
    assert cancelled and not ran
    phases = lifecycle(cap, never)
    assert list(phases) == ["create", "cancel"]
    assert phases["cancel"].data["task_id"] is not None


def test_task_group_failure_reports_the_failure_and_the_cancelled_sibling() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise KeyError("k")

    async def waits() -> None:
        await asyncio.sleep(3600)

    async def main() -> str:
        outcome = "not caught"
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(fails())
                tg.create_task(waits())
        except* KeyError:
            outcome = "caught"
        return outcome

    outcome, cap = run_traced(main)
    assert outcome == "caught"
    assert lifecycle(cap, fails)["done"].data["exit_reason"] == "exception"
    assert lifecycle(cap, waits)["cancel"].data["exit_reason"] == "cancelled"


def test_task_repr_and_stack_still_show_the_users_coroutine() -> None:
    async def pending(ev: asyncio.Event) -> None:
        await ev.wait()

    async def main() -> tuple[str, list[Any], Any]:
        ev = asyncio.Event()
        t = asyncio.create_task(pending(ev))
        await asyncio.sleep(0)
        info = repr(t), t.get_stack(), t.get_coro()
        ev.set()
        await t
        return info

    (text, stack, coro), _ = run_traced(main)
    assert "pending()" in text
    assert [f.f_code.co_name for f in stack] == ["pending"]
    assert coro.__qualname__.endswith("pending")
    assert asyncio.iscoroutine(coro)


def test_tasks_inherit_the_bound_correlation_in_their_events() -> None:
    async def child() -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        with rt.bind_correlation_id("req-9"):
            await asyncio.create_task(child())

    _, cap = run_traced(main)
    phases = lifecycle(cap, child)
    assert {e.correlation_id for e in phases.values()} == {"req-9"}


def test_an_existing_task_factory_is_chained_and_put_back() -> None:
    made: list[str] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def child() -> int:
        return 1

    async def main() -> tuple[Any, Any, Any]:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(factory)
        with tai.instrumented():
            inside = loop.get_task_factory()
            await asyncio.create_task(child())
        return inside, loop.get_task_factory(), await asyncio.create_task(child())

    with tidescope.capture(buffer_size=1024) as cap:
        inside, after, _ = asyncio.run(main())
    assert inside is not factory
    assert after is factory
    children = [m for m in made if m.endswith("child")]
    assert len(children) == 2
    assert len([e for e in cap.events(SPAWN) if e.data["phase"] == "create"]) == 1


def test_instrumenting_twice_installs_one_factory() -> None:
    async def main() -> bool:
        loop = asyncio.get_running_loop()
        tai.instrument_asyncio()
        first = loop.get_task_factory()
        tai.instrument_asyncio(loop)
        same = loop.get_task_factory() is first
        tai.uninstrument_asyncio()
        return same and loop.get_task_factory() is None

    assert asyncio.run(main())


def test_a_factory_chained_over_ours_keeps_working_after_uninstrument() -> None:
    async def child() -> int:
        return 5

    async def main() -> int:
        loop = asyncio.get_running_loop()
        tai.instrument_asyncio()
        ours = loop.get_task_factory()
        assert ours is not None

        def outer(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> Any:
            return ours(loop, coro, **kw)

        loop.set_task_factory(outer)
        tai.uninstrument_asyncio()
        assert loop.get_task_factory() is outer
        return await asyncio.create_task(child())

    with tidescope.capture(buffer_size=1024) as cap:
        assert asyncio.run(main()) == 5
    assert task_events(cap) == []


def test_instrumenting_needs_a_loop() -> None:
    with pytest.raises(RuntimeError):
        tai.instrument_asyncio()


def test_with_capture_off_the_factory_hands_the_coroutine_over_untouched() -> None:
    async def child() -> None:
        pass

    async def main() -> bool:
        with tai.instrumented():
            coro = child()
            t = asyncio.create_task(coro)
            await t
            return t.get_coro() is coro

    assert asyncio.run(main())


def test_tasks_created_before_capture_stops_still_end_cleanly() -> None:
    async def child(ev: asyncio.Event) -> str:
        await ev.wait()
        return "ok"

    async def main() -> str:
        ev = asyncio.Event()
        t = asyncio.create_task(child(ev))
        await asyncio.sleep(0)
        tidescope.stop()  # capture ends while the task waits
        ev.set()
        return await t

    with (
        tidescope.capture(buffer_size=1024) as cap,
        asyncio.Runner(loop_factory=tai.new_event_loop) as r,
    ):
        assert r.run(main()) == "ok"
    phases = lifecycle(cap, child)
    assert list(phases) == ["create", "start"]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks came in Python 3.12")
def test_eager_task_factory_is_chained_and_its_tasks_report_in_order() -> None:
    async def child() -> int:
        return _core.current_task_id() or 0

    async def main() -> int:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
        with tai.instrumented():
            t = asyncio.create_task(child())
            assert t.done()  # ran to completion eagerly, inside create_task
            return await t

    with tidescope.capture(buffer_size=1024) as cap:
        child_id = asyncio.run(main())
    phases = lifecycle(cap, child)
    assert list(phases) == ["create", "start", "done"]
    assert phases["start"].task_id == child_id == phases["done"].data["result"]


def test_a_huge_or_hostile_task_result_is_captured_bounded() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("repr")

        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("getattr")

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("eq")

        __hash__ = None  # type: ignore[assignment]

    async def huge() -> str:
        return "x" * 10_000_000

    async def hostile() -> Hostile:
        return Hostile()

    async def main() -> bool:
        big, obj = await asyncio.create_task(huge()), await asyncio.create_task(hostile())
        # a bool, not the objects: asyncio's Runner repr()s its main task's result
        return len(big) == 10_000_000 and type(obj) is Hostile

    ok, cap = run_traced(main)
    assert ok
    big_result = lifecycle(cap, huge)["done"].data["result"]
    assert isinstance(big_result, Truncated) and big_result.size == 10_000_000
    obj_result = lifecycle(cap, hostile)["done"].data["result"]
    assert isinstance(obj_result, ObjectSnapshot) and obj_result.type_name.endswith("Hostile")
    no_internal_errors(cap)


# ---------------------------------------------------------------------------------------
# queues


def test_queue_put_and_get_are_a_send_and_a_receive_sharing_a_message_id() -> None:
    async def producer(q: tai.TracedQueue[dict[str, int]]) -> int | None:
        await q.put({"n": 1})
        await q.put({"n": 2})
        return _core.current_task_id()

    async def main() -> tuple[Any, Any, list[Any]]:
        q: tai.TracedQueue[dict[str, int]] = tai.TracedQueue(name="inbox")
        sender = await asyncio.create_task(producer(q))
        got = [await q.get(), q.get_nowait()]
        return sender, _core.current_task_id(), got

    (sender, receiver, got), cap = run_traced(main)
    assert got == [{"n": 1}, {"n": 2}]
    sends = cap.events(EventType.MESSAGE_SEND)
    receives = cap.events(EventType.MESSAGE_RECEIVE)
    assert [s.data["message"] for s in sends] == [{"n": 1}, {"n": 2}]
    assert [r.data["message_id"] for r in receives] == [s.data["message_id"] for s in sends]
    assert len({s.data["message_id"] for s in sends}) == 2
    for s, r in zip(sends, receives, strict=True):
        assert s.data["to"] == r.data["queue"] == "inbox"
        assert s.data["sender"] == r.data["sender"] == s.task_id == sender
        assert r.data["receiver"] == r.task_id == receiver
        assert r.data["message"] == s.data["message"]
        assert r.data["queue_time_ns"] >= 0
    no_internal_errors(cap)


def test_a_message_mutated_after_put_is_recorded_as_it_was_sent() -> None:
    async def main() -> None:
        q: tai.TracedQueue[list[int]] = tai.TracedQueue()
        item = [1]
        q.put_nowait(item)
        item.append(2)
        q.get_nowait()

    _, cap = run_traced(main)
    assert cap.events(EventType.MESSAGE_SEND)[0].data["message"] == [1]
    assert cap.events(EventType.MESSAGE_RECEIVE)[0].data["message"] == [1, 2]


def test_lifo_and_priority_queues_keep_their_order() -> None:
    async def main() -> tuple[list[int], list[tuple[int, str]]]:
        lifo: tai.TracedLifoQueue[int] = tai.TracedLifoQueue()
        prio: tai.TracedPriorityQueue[tuple[int, str]] = tai.TracedPriorityQueue()
        for i in (1, 2, 3):
            lifo.put_nowait(i)
        for p in ((3, "c"), (1, "a"), (2, "b")):
            prio.put_nowait(p)
        return [lifo.get_nowait() for _ in range(3)], [prio.get_nowait() for _ in range(3)]

    (lifo, prio), cap = run_traced(main)
    assert lifo == [3, 2, 1]
    assert prio == [(1, "a"), (2, "b"), (3, "c")]
    receives = cap.events(EventType.MESSAGE_RECEIVE)
    assert [r.data["message"] for r in receives] == [3, 2, 1, (1, "a"), (2, "b"), (3, "c")]


def test_priority_queue_items_put_with_capture_off_and_on_still_order() -> None:
    async def main(q: tai.TracedPriorityQueue[int]) -> list[int]:
        return [q.get_nowait() for _ in range(4)]

    q: tai.TracedPriorityQueue[int] = tai.TracedPriorityQueue()
    q.put_nowait(5)
    q.put_nowait(1)
    with tidescope.capture(buffer_size=256) as cap:
        q.put_nowait(3)
        q.put_nowait(0)
        got = asyncio.run(main(q))
    assert got == [0, 1, 3, 5]
    assert [r.data["message"] for r in cap.events(EventType.MESSAGE_RECEIVE)] == [0, 3]


def test_a_queue_works_unchanged_with_capture_off() -> None:
    async def main() -> list[Any]:
        q: tai.TracedQueue[Any] = tai.TracedQueue(maxsize=2)
        await q.put(None)
        await q.put("x")
        assert q.full()
        return [await q.get(), await q.get()]

    assert asyncio.run(main()) == [None, "x"]


def test_hostile_huge_and_none_queue_items_are_captured_safely() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("repr")

        def __getattribute__(self, name: str) -> Any:
            raise RuntimeError("getattribute")

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("eq")

        __hash__ = None  # type: ignore[assignment]

    hostile = Hostile()
    huge = {"blob": b"\0" * 5_000_000, "items": list(range(100_000))}

    async def main() -> bool:
        q: tai.TracedQueue[Any] = tai.TracedQueue()
        for item in (None, hostile, huge):
            await q.put(item)
        got = [await q.get() for _ in range(3)]
        # a bool, not the objects: asyncio's Runner repr()s its main task's result
        return got[0] is None and got[1] is hostile and got[2] is huge

    ok, cap = run_traced(main)
    assert ok
    sends = cap.events(EventType.MESSAGE_SEND)
    assert sends[0].data["message"] is None
    assert isinstance(sends[1].data["message"], ObjectSnapshot)
    assert isinstance(sends[2].data["message"]["blob"], Truncated)
    assert [r.data["message_id"] for r in cap.events(EventType.MESSAGE_RECEIVE)] == [
        s.data["message_id"] for s in sends
    ]
    no_internal_errors(cap)


# ---------------------------------------------------------------------------------------
# actors (the GenServer shape)


@tai.actor(state="state")
class Counter:
    """A GenServer-shaped actor: its state, synchronous calls, async casts and infos."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {"count": 0}

    def handle_call(self, request: str) -> Any:
        if request == "get":
            return self.state["count"]
        if request == "boom":
            self.state["failed"] = True
            raise ZeroDivisionError("boom")
        return "unknown"

    async def handle_cast(self, message: tuple[str, int]) -> None:
        await asyncio.sleep(0)
        self.state["count"] += message[1]

    def handle_info(self, message: Any) -> None:
        self.state["last_info"] = message


async def serve(server: Counter, inbox: tai.TracedQueue[Any]) -> None:
    """The actor's loop: one message at a time from its queue."""
    while True:
        kind, payload, reply = await inbox.get()
        if kind == "stop":
            return
        try:
            if kind == "call":
                reply.set_result(server.handle_call(payload))
            elif kind == "cast":
                await server.handle_cast(payload)
            else:
                server.handle_info(payload)
        except Exception as exc:
            reply.set_exception(exc)


def test_an_actor_served_from_a_queue_reports_each_callback_with_state_and_diff() -> None:
    async def main() -> tuple[int, Any, str]:
        loop = asyncio.get_running_loop()
        server = Counter()
        inbox: tai.TracedQueue[Any] = tai.TracedQueue(name="counter-inbox")
        task = asyncio.create_task(serve(server, inbox))
        await inbox.put(("cast", ("add", 2), None))
        await inbox.put(("info", "tick", None))
        got = loop.create_future()
        await inbox.put(("call", "get", got))
        failed = loop.create_future()
        await inbox.put(("call", "boom", failed))
        await inbox.put(("stop", None, None))
        await task
        return await got, failed.exception(), tai.actor_name(server)

    (count, error, name), cap = run_traced(main)
    assert count == 2 and isinstance(error, ZeroDivisionError)
    kinds = (
        EventType.ACTOR_CALLBACK_START,
        EventType.ACTOR_CALLBACK_SUCCESS,
        EventType.ACTOR_CALLBACK_ERROR,
        EventType.ACTOR_CALLBACK_COMPLETE,
    )
    events = [e for e in cap.events() if e.event_type in kinds]
    assert {e.data["server"] for e in events} == {name}
    seq = [(e.data["callback"], str(e.event_type).removeprefix("actor_callback_")) for e in events]
    assert seq == [
        ("handle_cast", "start"), ("handle_cast", "success"), ("handle_cast", "complete"),
        ("handle_info", "start"), ("handle_info", "success"), ("handle_info", "complete"),
        ("handle_call", "start"), ("handle_call", "success"), ("handle_call", "complete"),
        ("handle_call", "start"), ("handle_call", "error"), ("handle_call", "complete"),
    ]  # fmt: skip
    cast_start, cast_success = events[0], events[1]
    assert cast_start.data["old_state"] == {"count": 0}
    assert cast_success.data["new_state"] == {"count": 2}
    assert cast_success.data["state_diff"]["modified"] == {"count": {"old": 0, "new": 2}}
    info_complete = events[5]
    assert info_complete.data["state_diff"]["added"] == {"last_info": "tick"}
    assert events[7].data["result"] == 2
    assert events[7].data["state_diff"] == {"changed": False}
    err, err_complete = events[10], events[11]
    assert err.data["kind"] == "builtins.ZeroDivisionError"
    assert isinstance(err.data["reason"], ObjectSnapshot)
    assert err.data["reason"].attrs["args"] == ("boom",)
    assert err_complete.data["state_diff"]["added"] == {"failed": True}
    # every callback runs in the actor's task, which the queue messages reached
    serve_task = {e.task_id for e in events}
    assert len(serve_task) == 1
    receives = cap.events(EventType.MESSAGE_RECEIVE)
    assert {r.task_id for r in receives} == serve_task
    no_internal_errors(cap)


def test_actor_state_is_snapshotted_at_the_event_not_kept_by_reference() -> None:
    server = Counter()
    with tidescope.capture(buffer_size=256) as cap:
        server.handle_info({"payload": [1]})
        server.state["count"] = 99
    start, success, _complete = cap.events()
    assert start.data["old_state"] == {"count": 0}
    assert success.data["new_state"] == {"count": 0, "last_info": {"payload": [1]}}


def test_the_mixin_reports_the_whole_object_as_state_by_default_and_subclasses_inherit() -> None:
    class Stack(tai.Actor):
        def __init__(self) -> None:
            self.items: list[int] = []

        def handle_cast(self, item: int) -> None:
            self.items.append(item)

    class CountingStack(Stack, callbacks=("handle_cast", "handle_call")):
        def handle_call(self, _req: str) -> int:
            return len(self.items)

    s = CountingStack()
    with tidescope.capture(buffer_size=256) as cap:
        s.handle_cast(7)
        assert s.handle_call("len") == 1
    start = cap.events(EventType.ACTOR_CALLBACK_START)
    assert [e.data["callback"] for e in start] == ["handle_cast", "handle_call"]
    assert isinstance(start[0].data["old_state"], ObjectSnapshot)
    assert start[0].data["old_state"].attrs == {"items": []}
    success = cap.events(EventType.ACTOR_CALLBACK_SUCCESS)
    assert success[0].data["state_diff"]["changed"] is True
    assert success[1].data["result"] == 1
    assert len(cap.events(EventType.ACTOR_CALLBACK_COMPLETE)) == 2


def test_an_actor_callback_with_capture_off_runs_as_written() -> None:
    server = Counter()
    assert server.handle_call("get") == 0
    with pytest.raises(ZeroDivisionError):
        server.handle_call("boom")


def test_hostile_and_huge_actor_state_is_captured_safely() -> None:
    class Exploding:
        def __init__(self) -> None:
            self.big = "y" * 3_000_000

        @property
        def state(self) -> Any:
            raise RuntimeError("state unreadable")

        def handle_call(self, req: Any) -> Any:
            return req

    tai.actor(state="state")(Exploding)

    @tai.actor
    class Huge:
        def __init__(self) -> None:
            self.rows = [{"i": i, "pad": "z" * 1000} for i in range(10_000)]

        def handle_cast(self, _msg: Any) -> None:
            self.rows.append({"i": -1})

    ex, huge = Exploding(), Huge()
    with tidescope.capture(buffer_size=256) as cap:
        assert ex.handle_call(None) is None
        huge.handle_cast(None)
    starts = cap.events(EventType.ACTOR_CALLBACK_START)
    assert starts[0].data["old_state"] is None  # unreadable: recorded as None, counted
    rows = starts[1].data["old_state"].attrs["rows"]
    assert isinstance(rows, Truncated) or len(rows) <= 20
    assert internal_errors() == 2  # the unreadable state, read at start and at the end


def test_an_async_callback_that_raises_reports_error_then_complete_and_raises_unchanged() -> None:
    boom = OSError(5, "disk")

    @tai.actor(state="pending")
    class Writer:
        def __init__(self) -> None:
            self.pending = ["a"]

        async def handle_cast(self, _msg: Any) -> None:
            self.pending.append("b")
            await asyncio.sleep(0)
            raise boom

    async def main() -> bool:
        w = Writer()
        try:
            await w.handle_cast("flush")
        except OSError as exc:
            return exc is boom
        return False

    raised_unchanged, cap = run_traced(main)
    assert raised_unchanged
    kinds = [str(e.event_type) for e in cap.events() if str(e.event_type).startswith("actor_")]
    assert kinds == ["actor_callback_start", "actor_callback_error", "actor_callback_complete"]
    complete = cap.events(EventType.ACTOR_CALLBACK_COMPLETE)[0]
    assert complete.data["new_state"] == ["a", "b"]
    assert complete.data["state_diff"]["changed"] is True
