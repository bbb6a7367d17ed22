"""Work handed to another thread (Thread, ThreadPoolExecutor, run_in_executor, to_thread)
starts under the call that handed it over, as an asyncio task does."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import tidescope
from tidescope import EventType
from tidescope.capture import context
from tidescope.capture import runtime as rt

ENTRY = EventType.FUNCTION_ENTRY
EXIT = EventType.FUNCTION_EXIT


def entry(function: str) -> Any:
    return rt.report_function_entry("tests.threads", function, [])


def exit_(call_id: Any) -> bool:
    return rt.report_function_exit(call_id, None)


def worker_call(name: str) -> tuple[Any, int]:
    """A traced call in whatever thread runs this; its id and the thread's ident."""
    cid = entry(name)
    exit_(cid)
    return cid, threading.get_ident()


def parents(events: list[Any]) -> dict[Any, Any]:
    return {e.call_id: e.parent_id for e in events if e.event_type is ENTRY}


def test_thread_started_inside_a_call_has_that_call_as_parent() -> None:
    seen: list[Any] = []
    with tidescope.capture(buffer_size=64) as cap:
        starter = entry("starter")
        t = threading.Thread(target=lambda: seen.append(worker_call("in_thread")))
        t.start()
        t.join(10)
        exit_(starter)
    ((child, ident),) = seen
    assert ident != threading.get_ident()
    assert parents(cap.events())[child] == starter
    by_call = {(e.event_type, e.call_id): e for e in cap.events()}
    assert by_call[(ENTRY, child)].correlation_id == starter
    assert by_call[(EXIT, child)].parent_id == starter


def test_thread_subclass_overriding_run_has_the_starting_call_as_parent() -> None:
    seen: list[Any] = []

    class Worker(threading.Thread):
        def run(self) -> None:
            seen.append(worker_call("in_subclass"))

    with tidescope.capture(buffer_size=64) as cap:
        starter = entry("starter")
        t = Worker()
        t.start()
        t.join(10)
        exit_(starter)
    assert parents(cap.events())[seen[0][0]] == starter
    assert "run" not in t.__dict__  # the seeded run is gone once it has run


def test_thread_started_outside_any_call_has_no_parent() -> None:
    seen: list[Any] = []
    with tidescope.capture(buffer_size=64) as cap:
        t = threading.Thread(target=lambda: seen.append(context.call_stack()))
        t.start()
        t.join(10)
        t = threading.Thread(target=lambda: seen.append(worker_call("alone")))
        t.start()
        t.join(10)
    assert seen[0] == []
    assert parents(cap.events())[seen[1][0]] is None


def test_thread_pool_workers_have_their_submitter_as_parent_and_reuse_does_not_leak() -> None:
    with (
        tidescope.capture(buffer_size=256) as cap,
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool,
    ):
        first = entry("first_submitter")
        one, ident1 = pool.submit(worker_call, "one").result(10)
        exit_(first)
        second = entry("second_submitter")
        two, ident2 = pool.submit(worker_call, "two").result(10)
        exit_(second)
        three, ident3 = pool.submit(worker_call, "three").result(10)  # outside any call
        stack_after = pool.submit(context.call_stack).result(10)
    assert ident1 == ident2 == ident3 != threading.get_ident()  # one reused pool thread
    got = parents(cap.events())
    assert got[one] == first
    assert got[two] == second
    assert got[three] is None
    assert stack_after == []


def test_run_in_executor_and_to_thread_have_the_awaiting_call_as_parent() -> None:
    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        out: dict[str, Any] = {}
        caller = entry("caller")
        out["caller"] = caller
        out["default"] = await loop.run_in_executor(None, worker_call, "default_pool")
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            out["own"] = await loop.run_in_executor(pool, worker_call, "own_pool")
            exit_(caller)
            later = entry("later")
            out["later"] = later
            out["reused"] = await loop.run_in_executor(pool, worker_call, "reused")
        out["to_thread"] = await asyncio.to_thread(worker_call, "to_thread")
        exit_(later)
        return out

    with tidescope.capture(buffer_size=256) as cap:
        out = asyncio.run(main())
    got = parents(cap.events())
    assert out["default"][1] != threading.get_ident()
    assert got[out["default"][0]] == out["caller"]
    assert got[out["own"][0]] == out["caller"]
    assert out["reused"][1] == out["own"][1]
    assert got[out["reused"][0]] == out["later"]
    assert got[out["to_thread"][0]] == out["later"]


def test_thread_start_and_submit_are_the_stdlib_ones_while_capture_is_off() -> None:
    start, submit = threading.Thread.start, concurrent.futures.ThreadPoolExecutor.submit
    with tidescope.capture(buffer_size=64):
        assert threading.Thread.start is not start
        assert concurrent.futures.ThreadPoolExecutor.submit is not submit
    assert threading.Thread.start is start
    assert concurrent.futures.ThreadPoolExecutor.submit is submit


def test_errors_in_work_reach_the_caller_unchanged() -> None:
    def boom() -> None:
        raise KeyError("boom")

    with (
        tidescope.capture(buffer_size=64),
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool,
    ):
        caller = entry("caller")
        fut = pool.submit(boom)
        exc = fut.exception(10)
        exit_(caller)
    assert type(exc) is KeyError and exc.args == ("boom",)
