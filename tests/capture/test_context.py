"""The capture context: one call stack per thread and per asyncio task, correlation, on/off."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import json
import os
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import tidescope
from tidescope import EventType
from tidescope.capture import context
from tidescope.capture import runtime as rt
from tidescope.capture.ring_buffer import RingBuffer

ENTRY = EventType.FUNCTION_ENTRY
EXIT = EventType.FUNCTION_EXIT
PID_MASK = (1 << 22) - 1


def entry(function: str, *args: Any) -> Any:
    return rt.report_function_entry("tests.ctx", function, list(args))


def exit_(call_id: Any, value: Any = None) -> bool:
    return rt.report_function_exit(call_id, value)


def run_thread(target: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=target)
    t.start()
    t.join(10)
    assert not t.is_alive()
    return t


# ---------------------------------------------------------------------------------------
# enabled / initialize_context / clear_context


def test_enabled_is_false_without_any_started_session() -> None:
    assert context.enabled() is False
    assert rt.report_function_entry("m", "f", []) is None


def test_enabled_is_false_with_a_buffer_registered_but_no_session_started() -> None:
    buf = RingBuffer(64)
    context.register_buffer(buf)
    assert context.enabled() is False
    assert rt.report_function_entry("m", "f", []) is None
    assert rt.report_error(ValueError("x")) is False
    assert len(buf) == 0


def test_enabled_is_true_inside_capture_and_false_after_it() -> None:
    with tidescope.capture(buffer_size=64):
        assert context.enabled() is True
    assert context.enabled() is False


def test_enabled_is_true_after_start_and_false_after_stop() -> None:
    tidescope.start(buffer_size=64)
    assert context.enabled() is True
    tidescope.stop()
    assert context.enabled() is False


def test_clear_context_disables_this_context_while_capture_is_started() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        context.clear_context()
        assert context.enabled() is False
        assert tidescope.active_session() is not None
        assert rt.report_function_entry("m", "f", [1]) is None
        assert rt.report_function_exit(12345, 1) is False
        assert rt.report_error(ValueError("x")) is False
        assert rt.report_state_change(1, 2) is False
        assert rt.report_local_variable_snapshot(None, {"x": 1}, 3) is False
        context.push_call_stack(99)
        assert context.call_stack() == []
        assert context.current_call_id() is None
    assert cap.events() == []


def test_clear_context_drops_the_call_stack() -> None:
    with tidescope.capture(buffer_size=64):
        entry("outer")
        context.clear_context()
        assert context.call_stack() == []
        assert context.current_call_id() is None
        assert context.current_correlation_id() is None


def test_initialize_context_after_clear_context_enables_capture_again() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        context.clear_context()
        assert rt.report_function_entry("m", "off", []) is None
        context.initialize_context()
        assert context.enabled() is True
        cid = entry("on")
        assert isinstance(cid, int)
        assert context.call_stack() == [cid]
    assert [(e.event_type, e.data["function"]) for e in cap.events()] == [(ENTRY, "on")]


def test_initialize_context_empties_the_call_stack() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        entry("a")
        entry("b")
        context.initialize_context()
        assert context.call_stack() == []
        assert context.current_call_id() is None
        fresh = entry("c")
    last = cap.events()[-1]
    assert (last.call_id, last.parent_id, last.correlation_id) == (fresh, None, fresh)


def test_clear_context_in_one_thread_leaves_other_threads_capturing() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        context.clear_context()
        seen: list[Any] = []
        run_thread(lambda: seen.append(entry("in_thread")))
        assert context.enabled() is False
    assert isinstance(seen[0], int)
    assert [e.call_id for e in cap.events()] == seen


# ---------------------------------------------------------------------------------------
# call stack, current ids


def test_current_ids_are_none_on_an_empty_stack() -> None:
    with tidescope.capture(buffer_size=64):
        assert context.call_stack() == []
        assert context.current_call_id() is None
        assert context.current_correlation_id() is None


def test_current_call_id_is_innermost_and_correlation_is_outermost_call() -> None:
    with tidescope.capture(buffer_size=64):
        a = entry("a")
        b = entry("b")
        c = entry("c")
        assert context.current_call_id() == c
        assert context.current_correlation_id() == a
        assert context.call_stack() == [c, b, a]
        exit_(c)
        assert context.current_call_id() == b
        assert context.current_correlation_id() == a
        exit_(b)
        exit_(a)
        assert context.call_stack() == []
        assert context.current_correlation_id() is None


def test_events_of_nested_calls_carry_the_outermost_call_as_correlation() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        a = entry("a")
        b = entry("b")
        rt.report_line_execution(None, 7)
        exit_(b)
        exit_(a)
    assert [e.correlation_id for e in cap.events()] == [a] * 5


def test_push_call_stack_pushes_and_call_stack_lists_innermost_first() -> None:
    with tidescope.capture(buffer_size=64):
        context.push_call_stack(1)
        context.push_call_stack(2)
        context.push_call_stack(3)
        assert context.call_stack() == [3, 2, 1]
        assert context.current_call_id() == 3
        assert context.current_correlation_id() == 1


def test_pop_call_stack_returns_popped_ids_then_none_on_empty() -> None:
    with tidescope.capture(buffer_size=64):
        for i in (1, 2, 3):
            context.push_call_stack(i)
        assert context.pop_call_stack() == 3
        assert context.call_stack() == [2, 1]
        assert context.pop_call_stack() == 2
        assert context.pop_call_stack() == 1
        assert context.pop_call_stack() is None
        assert context.call_stack() == []
        assert context.pop_call_stack() is None


def test_pushed_call_id_is_parent_of_next_reported_call() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        context.push_call_stack(4242)
        cid = entry("child")
        exit_(cid)
    first, second = cap.events()
    assert first.parent_id == 4242
    assert second.parent_id == 4242
    assert first.correlation_id == 4242


def test_get_context_reports_this_context() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        a = entry("a")
        b = entry("b")
        ctx = context.get_context()
        assert ctx["enabled"] is True
        assert ctx["buffer"] is cap.session.buffer  # type: ignore[union-attr]
        assert ctx["call_id"] == b
        assert ctx["correlation_id"] == a
        assert ctx["call_stack"] == [b, a]
        assert ctx["task_id"] is None


# ---------------------------------------------------------------------------------------
# with_instrumentation_disabled / instrumentation_disabled


def test_with_instrumentation_disabled_returns_fn_result_and_passes_arguments() -> None:
    def fn(a: int, b: int, *, c: int) -> tuple[int, int, int]:
        return a, b, c

    with tidescope.capture(buffer_size=64):
        assert context.with_instrumentation_disabled(fn, 1, 2, c=3) == (1, 2, 3)


def test_with_instrumentation_disabled_records_nothing_inside() -> None:
    def body() -> list[Any]:
        return [
            context.enabled(),
            rt.report_function_entry("m", "inside", []),
            rt.report_error(ValueError("x")),
            rt.report_line_execution(None, 3),
        ]

    with tidescope.capture(buffer_size=64) as cap:
        outer = entry("outer")
        results = context.with_instrumentation_disabled(body)
        exit_(outer)
    assert results == [False, None, False, False]
    assert [(e.event_type, e.call_id) for e in cap.events()] == [(ENTRY, outer), (EXIT, outer)]


def test_with_instrumentation_disabled_restores_call_stack_and_enabled_state() -> None:
    def body() -> None:
        context.initialize_context()  # fn may even re-enable and push: all undone after
        context.push_call_stack(999)
        entry("inside")

    with tidescope.capture(buffer_size=64):
        a = entry("a")
        b = entry("b")
        context.with_instrumentation_disabled(body)
        assert context.enabled() is True
        assert context.call_stack() == [b, a]
        assert context.current_correlation_id() == a


def test_with_instrumentation_disabled_restores_context_when_fn_raises() -> None:
    def body() -> None:
        context.initialize_context()
        context.push_call_stack(999)
        raise KeyError("boom")

    with tidescope.capture(buffer_size=64) as cap:
        a = entry("a")
        with pytest.raises(KeyError):
            context.with_instrumentation_disabled(body)
        assert context.enabled() is True
        assert context.call_stack() == [a]
        b = entry("b")
    assert cap.events()[-1].call_id == b
    assert cap.events()[-1].parent_id == a


def test_instrumentation_disabled_block_records_nothing_and_restores_context() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        a = entry("a")
        with context.instrumentation_disabled():
            assert context.enabled() is False
            assert rt.report_function_entry("m", "inside", []) is None
            assert rt.report_message_send("q", 1) is False
            assert context.call_stack() == []
        assert context.enabled() is True
        assert context.call_stack() == [a]
    assert [e.call_id for e in cap.events()] == [a]


def test_instrumentation_disabled_block_restores_context_when_body_raises() -> None:
    with tidescope.capture(buffer_size=64):
        a = entry("a")
        with pytest.raises(RuntimeError), context.instrumentation_disabled():
            context.initialize_context()
            context.push_call_stack(5)
            raise RuntimeError("boom")
        assert context.enabled() is True
        assert context.call_stack() == [a]


def test_instrumentation_disabled_nested_blocks_restore_in_order() -> None:
    with tidescope.capture(buffer_size=64):
        a = entry("a")
        with context.instrumentation_disabled():
            with context.instrumentation_disabled():
                assert context.enabled() is False
            assert context.enabled() is False
        assert context.enabled() is True
        assert context.call_stack() == [a]


# ---------------------------------------------------------------------------------------
# bind_correlation_id


def test_bind_correlation_id_applies_to_events_and_calls_inside_then_is_restored() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        with context.bind_correlation_id("req-1") as bound:
            assert bound == "req-1"
            assert context.current_correlation_id() == "req-1"
            assert context.current_call_id() is None
            assert context.call_stack() == []
            rt.report_line_execution(None, 1)
            a = entry("a")
            b = entry("b")
            rt.report_line_execution(None, 2)
            exit_(b)
            exit_(a)
        assert context.current_correlation_id() is None
        after = entry("after")
    events = cap.events()
    assert [e.correlation_id for e in events[:-1]] == ["req-1"] * 6
    assert events[1].parent_id is None  # the binding is not a call
    assert events[2].parent_id == a
    assert events[-1].correlation_id == after


def test_bind_correlation_id_inside_a_traced_call_is_restored_after() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        outer = entry("outer")
        with context.bind_correlation_id("req-2"):
            assert context.current_call_id() == outer
            assert context.call_stack() == [outer]
            inner = entry("inner")
            exit_(inner)
        assert context.current_correlation_id() == outer
        assert context.call_stack() == [outer]
        late = entry("late")
    events = {(e.event_type, e.call_id): e for e in cap.events()}
    assert events[(ENTRY, inner)].correlation_id == "req-2"
    assert events[(ENTRY, inner)].parent_id == outer
    assert events[(EXIT, inner)].correlation_id == "req-2"
    assert events[(ENTRY, late)].correlation_id == outer


def test_bind_correlation_id_is_restored_when_the_block_raises() -> None:
    with tidescope.capture(buffer_size=64):
        outer = entry("outer")
        with pytest.raises(ValueError), context.bind_correlation_id("req-3"):
            raise ValueError("x")
        assert context.current_correlation_id() == outer


def test_bind_correlation_id_nested_blocks_restore_the_outer_binding() -> None:
    with tidescope.capture(buffer_size=64):
        with context.bind_correlation_id("outer-req"):
            with context.bind_correlation_id("inner-req"):
                assert context.current_correlation_id() == "inner-req"
            assert context.current_correlation_id() == "outer-req"
        assert context.current_correlation_id() is None


def test_bind_correlation_id_survives_pop_call_stack_on_an_empty_stack() -> None:
    # pop_call_stack() on an empty stack returns None: it must not drop the binding.
    with tidescope.capture(buffer_size=64) as cap, context.bind_correlation_id("req-4"):
        assert context.pop_call_stack() is None
        assert context.current_correlation_id() == "req-4"
        rt.report_line_execution(None, 1)
    assert [e.correlation_id for e in cap.events()] == ["req-4"]


def test_bind_correlation_id_is_inherited_by_tasks_created_inside() -> None:
    async def child() -> Any:
        cid = entry("child")
        exit_(cid)
        return context.current_correlation_id()

    async def main() -> Any:
        with context.bind_correlation_id("req-5"):
            task = asyncio.create_task(child())
        return await task

    with tidescope.capture(buffer_size=64) as cap:
        assert asyncio.run(main()) == "req-5"
    assert [e.correlation_id for e in cap.events()] == ["req-5", "req-5"]


# ---------------------------------------------------------------------------------------
# threads


def test_thread_started_inside_capture_is_captured_without_extra_call() -> None:
    seen: dict[str, Any] = {}

    def work() -> None:
        seen["enabled"] = context.enabled()
        seen["cid"] = entry("in_thread")
        seen["exit"] = exit_(seen["cid"])
        seen["ident"] = threading.get_ident()

    with tidescope.capture(buffer_size=64) as cap:
        run_thread(work)
    assert seen["enabled"] is True
    assert isinstance(seen["cid"], int)
    assert seen["exit"] is True
    assert [(e.event_type, e.call_id, e.thread_id) for e in cap.events()] == [
        (ENTRY, seen["cid"], seen["ident"]),
        (EXIT, seen["cid"], seen["ident"]),
    ]


def test_thread_started_after_start_is_captured_without_extra_call() -> None:
    seen: list[Any] = []
    session = tidescope.start(buffer_size=64)
    run_thread(lambda: seen.append(entry("in_thread")))
    events = session.buffer.drain()  # type: ignore[union-attr]
    tidescope.stop()
    assert isinstance(seen[0], int)
    assert [e.call_id for e in events] == seen


def test_thread_created_before_start_is_captured_once_started() -> None:
    go = threading.Event()
    seen: list[Any] = []

    def work() -> None:
        go.wait(10)
        seen.append(entry("late"))

    t = threading.Thread(target=work)
    t.start()
    try:
        with tidescope.capture(buffer_size=64) as cap:
            go.set()
            t.join(10)
    finally:
        go.set()
        t.join(10)
    assert isinstance(seen[0], int)
    assert [e.call_id for e in cap.events()] == seen


def test_each_thread_has_its_own_call_stack() -> None:
    both_open = threading.Barrier(2, timeout=10)
    seen: dict[str, Any] = {}

    def work() -> None:
        seen["stack_at_start"] = context.call_stack()
        b = entry("thread_outer")
        both_open.wait()
        c = entry("thread_inner")
        seen["thread_stack"] = context.call_stack()
        exit_(c)
        exit_(b)
        seen["b"], seen["c"] = b, c
        seen["ident"] = threading.get_ident()

    with tidescope.capture(buffer_size=64) as cap:
        a = entry("main_outer")
        t = threading.Thread(target=work)
        t.start()
        both_open.wait()
        d = entry("main_inner")
        main_stack = context.call_stack()
        exit_(d)
        t.join(10)
        exit_(a)
    b, c = seen["b"], seen["c"]
    # the thread starts under the call that started it, and pushes on its own stack
    assert seen["stack_at_start"] == [a]
    assert seen["thread_stack"] == [c, b, a]
    assert main_stack == [d, a]
    by_call = {(e.event_type, e.call_id): e for e in cap.events()}
    assert by_call[(ENTRY, b)].parent_id == a
    assert by_call[(ENTRY, b)].correlation_id == a
    assert by_call[(ENTRY, c)].parent_id == b
    assert by_call[(EXIT, c)].parent_id == b
    assert by_call[(ENTRY, d)].parent_id == a
    assert by_call[(ENTRY, d)].correlation_id == a
    me = threading.get_ident()
    assert {by_call[(k, x)].thread_id for k in (ENTRY, EXIT) for x in (a, d)} == {me}
    assert {by_call[(k, x)].thread_id for k in (ENTRY, EXIT) for x in (b, c)} == {seen["ident"]}


def test_many_threads_record_their_own_thread_id_and_parentage() -> None:
    results: dict[int, tuple[int, Any, Any]] = {}
    start = threading.Barrier(6, timeout=10)

    def work(i: int) -> None:
        start.wait()
        outer = entry("outer", i)
        inner = entry("inner", i)
        exit_(inner)
        exit_(outer)
        results[i] = (threading.get_ident(), outer, inner)

    with tidescope.capture(buffer_size=256) as cap:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    events = cap.events()
    assert len(events) == 24
    for ident, outer, inner in results.values():
        mine = [e for e in events if e.thread_id == ident]
        assert [(e.event_type, e.call_id, e.parent_id) for e in mine] == [
            (ENTRY, outer, None),
            (ENTRY, inner, outer),
            (EXIT, inner, outer),
            (EXIT, outer, None),
        ]


# ---------------------------------------------------------------------------------------
# asyncio


def test_event_task_id_is_none_outside_an_event_loop() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        cid = entry("sync")
        exit_(cid)
        rt.report_line_execution(None, 1)
        assert context.current_task_id() is None
    assert [e.task_id for e in cap.events()] == [None, None, None]


def test_task_first_call_has_creating_call_as_parent() -> None:
    async def child() -> Any:
        cid = entry("child")
        exit_(cid)
        return cid

    async def main() -> tuple[Any, Any]:
        creator = entry("creator")
        task = asyncio.create_task(child())
        got = await task
        exit_(creator)
        return creator, got

    with tidescope.capture(buffer_size=64) as cap:
        creator, child_id = asyncio.run(main())
    ev = {(e.event_type, e.call_id): e for e in cap.events()}
    assert ev[(ENTRY, child_id)].parent_id == creator
    assert ev[(EXIT, child_id)].parent_id == creator
    assert ev[(ENTRY, child_id)].correlation_id == creator


def test_task_keeps_creating_call_as_parent_after_that_call_exited() -> None:
    async def child() -> Any:
        cid = entry("child")
        exit_(cid)
        return cid

    def spawner() -> asyncio.Task[Any]:
        cid = entry("spawner")
        task = asyncio.create_task(child())
        exit_(cid)
        spawned_by.append(cid)
        return task

    async def main() -> Any:
        root = entry("root")
        task = spawner()
        assert context.call_stack() == [root]
        got = await task
        exit_(root)
        return got

    spawned_by: list[Any] = []
    with tidescope.capture(buffer_size=64) as cap:
        child_id = asyncio.run(main())
    events = cap.events()
    order = [(e.event_type, e.call_id) for e in events]
    spawner_id = spawned_by[0]
    # the creating call has exited before the task ran its first call
    assert order.index((EXIT, spawner_id)) < order.index((ENTRY, child_id))
    ev = {(e.event_type, e.call_id): e for e in events}
    assert ev[(ENTRY, child_id)].parent_id == spawner_id


def test_task_pushes_are_invisible_to_its_creator() -> None:
    async def child(started: asyncio.Event, release: asyncio.Event) -> None:
        cid = entry("child")
        started.set()
        await release.wait()
        exit_(cid)

    async def main() -> tuple[list[Any], list[Any]]:
        root = entry("root")
        started, release = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(child(started, release))
        await started.wait()
        during = context.call_stack()  # the child has an open call now
        release.set()
        await task
        after = context.call_stack()
        exit_(root)
        return [root], [during, after]

    with tidescope.capture(buffer_size=64):
        expected, (during, after) = asyncio.run(main())
    assert during == expected
    assert after == expected


def test_concurrent_tasks_never_see_each_others_call_stack() -> None:
    depth, workers = 4, 8

    async def worker(i: int, root: Any) -> list[Any]:
        ids: list[Any] = []
        for d in range(depth):
            ids.append(entry(f"level{d}", i))
            assert context.call_stack() == [*reversed(ids), root]
            await asyncio.sleep(0)
            assert context.call_stack() == [*reversed(ids), root]
        for cid in reversed(ids):
            await asyncio.sleep(0)
            assert context.current_call_id() == cid
            assert exit_(cid, i) is True
            await asyncio.sleep(0)
        assert context.call_stack() == [root]
        return ids

    async def main() -> tuple[Any, list[list[Any]]]:
        root = entry("root")
        all_ids = await asyncio.gather(*(worker(i, root) for i in range(workers)))
        assert context.call_stack() == [root]
        exit_(root)
        return root, list(all_ids)

    with tidescope.capture(buffer_size=1024) as cap:
        root, all_ids = asyncio.run(main())
    events = cap.events()
    entries = {e.call_id: e for e in events if e.event_type == ENTRY}
    exits = [e for e in events if e.event_type == EXIT]
    assert len(entries) == len(exits) == workers * depth + 1
    for ex in exits:
        en = entries[ex.call_id]
        assert ex.parent_id == en.parent_id
        assert ex.task_id == en.task_id
        assert ex.correlation_id == en.correlation_id == root
    for ids in all_ids:
        assert entries[ids[0]].parent_id == root
        for parent, child in itertools.pairwise(ids):
            assert entries[child].parent_id == parent
        assert len({entries[c].task_id for c in ids}) == 1
    task_ids = [entries[ids[0]].task_id for ids in all_ids]
    assert all(isinstance(t, int) for t in task_ids)
    assert len(set(task_ids)) == workers
    assert entries[root].task_id not in task_ids


def test_task_id_is_set_inside_tasks_and_distinct_per_task() -> None:
    async def child() -> Any:
        return context.current_task_id()

    async def main() -> tuple[Any, Any, list[Any]]:
        first = context.current_task_id()
        again = context.current_task_id()
        kids = await asyncio.gather(*(asyncio.create_task(child()) for _ in range(5)))
        return first, again, list(kids)

    with tidescope.capture(buffer_size=64):
        first, again, kids = asyncio.run(main())
    assert isinstance(first, int)
    assert first == again
    assert all(isinstance(k, int) for k in kids)
    assert len({first, *kids}) == 6


def test_copy_context_run_keeps_parentage_and_isolates_the_stack() -> None:
    def in_copy() -> Any:
        cid = entry("in_copy")
        inner_stack = context.call_stack()
        exit_(cid)
        opened.append(entry("left_open"))
        return cid, inner_stack

    opened: list[Any] = []
    with tidescope.capture(buffer_size=64) as cap:
        outer = entry("outer")
        cid, inner_stack = contextvars.copy_context().run(in_copy)
        assert context.call_stack() == [outer]  # the copy's open call does not leak back
        nxt = entry("next")
    assert inner_stack == [cid, outer]
    ev = {(e.event_type, e.call_id): e for e in cap.events()}
    assert ev[(ENTRY, cid)].parent_id == outer
    assert ev[(ENTRY, opened[0])].parent_id == outer
    assert ev[(ENTRY, nxt)].parent_id == outer


def test_to_thread_keeps_the_awaiting_call_as_parent() -> None:
    def blocking() -> tuple[Any, int, Any]:
        cid = entry("blocking")
        exit_(cid)
        return cid, threading.get_ident(), context.current_task_id()

    async def main() -> tuple[Any, Any]:
        caller = entry("caller")
        got = await asyncio.to_thread(blocking)
        assert context.call_stack() == [caller]
        exit_(caller)
        return caller, got

    with tidescope.capture(buffer_size=64) as cap:
        caller, (cid, ident, task_in_thread) = asyncio.run(main())
    assert ident != threading.get_ident()
    assert task_in_thread is None
    ev = {(e.event_type, e.call_id): e for e in cap.events()}
    assert ev[(ENTRY, cid)].parent_id == caller
    assert ev[(ENTRY, cid)].correlation_id == caller
    assert ev[(ENTRY, cid)].thread_id == ident
    assert ev[(ENTRY, cid)].task_id is None


def test_call_stack_is_restored_after_asyncio_run_returns() -> None:
    async def main() -> None:
        entry("left_open_in_task")

    with tidescope.capture(buffer_size=64):
        outer = entry("outer")
        asyncio.run(main())
        assert context.call_stack() == [outer]


# ---------------------------------------------------------------------------------------
# fork

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork on Linux")


def run_in_fork(child: Callable[[], Any]) -> Any:
    """Run ``child()`` in a forked process; return its JSON result (or raise its error)."""
    r, w = os.pipe()
    with warnings.catch_warnings():
        # 3.12+ warns when forking with threads alive (other tests may have left some)
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(r)
            try:
                payload = {"ok": True, "result": child()}
            except BaseException as exc:
                payload = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            data = json.dumps(payload).encode()
            while data:
                data = data[os.write(w, data) :]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    out = json.loads(b"".join(chunks))
    assert out["ok"], out.get("error")
    return out["result"]


@linux_only
def test_forked_child_has_a_fresh_empty_registered_buffer() -> None:
    with tidescope.capture(buffer_size=64):
        parent_buf = context.get_buffer()
        entry("before_fork")
        assert parent_buf is not None and len(parent_buf) == 1

        def child() -> dict[str, Any]:
            buf = context.get_buffer()
            session = tidescope.active_session()
            return {
                "is_parent_buf": buf is parent_buf,
                "is_ring_buffer": isinstance(buf, RingBuffer),
                "len": len(buf) if buf is not None else None,
                "size": buf.size if buf is not None else None,
                "session_buf_is_registered": session is not None and session.buffer is buf,
                "enabled": context.enabled(),
            }

        got = run_in_fork(child)
        assert len(parent_buf) == 1  # the parent's buffer is untouched
    assert got == {
        "is_parent_buf": False,
        "is_ring_buffer": True,
        "len": 0,
        "size": 64,
        "session_buf_is_registered": True,
        "enabled": True,
    }


@linux_only
def test_forked_child_ids_differ_from_parent_and_carry_child_pid() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        parent_ids = [entry("p1"), entry("p2")]

        def child() -> dict[str, Any]:
            cid = entry("in_child")
            buf = context.get_buffer()
            events = buf.drain() if buf is not None else []
            return {
                "pid": os.getpid(),
                "ids": [cid, *(e.event_id for e in events)],
            }

        got = run_in_fork(child)
        parent_ids += [entry("p3")]
    parent_ids += [e.event_id for e in cap.events()]
    assert got["pid"] != os.getpid()
    assert len(got["ids"]) == 2
    for cid in got["ids"]:
        assert isinstance(cid, int)
        assert cid & PID_MASK == got["pid"] & PID_MASK
        assert cid not in parent_ids
    for pid_ in parent_ids:
        assert pid_ & PID_MASK == os.getpid() & PID_MASK


@linux_only
def test_reports_work_in_forked_child_and_do_not_reach_the_parent() -> None:
    with tidescope.capture(buffer_size=64) as cap:
        outer = entry("outer")

        def child() -> dict[str, Any]:
            a = entry("child_call", 1)
            b = entry("child_inner")
            rt.report_error(ValueError("in child"))
            exit_(b, 2)
            exit_(a, 1)
            events = cap.events()
            return {
                "a": a,
                "b": b,
                "pid": os.getpid(),
                "rows": [
                    [str(e.event_type), e.call_id, e.parent_id, e.pid, e.correlation_id]
                    for e in events
                ],
                "internal_errors": tidescope.stats()["internal_errors"],
            }

        got = run_in_fork(child)
        exit_(outer)
    a, b, pid = got["a"], got["b"], got["pid"]
    assert got["rows"] == [
        ["function_entry", a, outer, pid, outer],
        ["function_entry", b, a, pid, outer],
        ["error", b, a, pid, outer],
        ["function_exit", b, a, pid, outer],
        ["function_exit", a, outer, pid, outer],
    ]
    assert isinstance(got["internal_errors"], int)
    assert [(e.event_type, e.call_id) for e in cap.events()] == [(ENTRY, outer), (EXIT, outer)]
    assert {e.pid for e in cap.events()} == {os.getpid()}
