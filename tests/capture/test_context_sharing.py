"""A context copied at any moment keeps the call stack it had then, on either core.

The C core rewrites a context's stack in place when no copy can see it; these cases are
the ways a copy can come to see it: copy_context(), asyncio tasks, another ContextVar set
after a copy (which gives the context a new mapping that still holds the old cell), and
that several times over (so a freed mapping's address may be reused).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import pytest

import tidescope
from tidescope.capture import _core

entry = _core.report_function_entry
exit_ = _core.report_function_exit
other: contextvars.ContextVar[int] = contextvars.ContextVar("other", default=0)


@pytest.fixture(autouse=True)
def capturing() -> Any:
    tidescope.start(buffer_size=1 << 12)
    _core.initialize_context()
    yield
    tidescope.stop()


def test_a_copy_keeps_the_call_it_was_taken_in_after_the_caller_moves_on() -> None:
    cid = entry("m", "f", ())
    ctx = contextvars.copy_context()
    exit_(cid, None)
    g = entry("m", "g", ())
    assert ctx.run(_core.current_call_id) == cid
    assert _core.current_call_id() == g
    exit_(g, None)
    assert ctx.run(_core.call_stack) == [cid]
    assert _core.call_stack() == []


def test_calls_made_inside_a_copy_are_not_seen_outside_it() -> None:
    cid = entry("m", "f", ())
    ctx = contextvars.copy_context()

    def inside() -> list[Any]:
        inner = entry("m", "inner", ())
        return [inner, _core.call_stack()]

    inner, stack = ctx.run(inside)
    assert stack == [inner, cid]
    assert _core.call_stack() == [cid]
    assert ctx.run(_core.call_stack) == [inner, cid]
    exit_(cid, None)
    assert ctx.run(_core.call_stack) == [inner, cid]


def test_another_variable_set_after_a_copy_does_not_let_pushes_leak_into_the_copy() -> None:
    cid = entry("m", "f", ())
    ctx = contextvars.copy_context()
    other.set(1)  # the context gets a new mapping that still holds the stack's cell
    g = entry("m", "g", ())
    assert _core.call_stack() == [g, cid]
    assert ctx.run(_core.call_stack) == [cid]
    exit_(g, None)
    exit_(cid, None)
    assert ctx.run(_core.call_stack) == [cid]


def test_copies_and_sets_repeated_many_times_each_keep_their_own_stack() -> None:
    copies = []
    ids = []
    for i in range(200):
        ids.append(entry("m", f"f{i}", (i,)))
        copies.append((contextvars.copy_context(), list(reversed(ids))))
        other.set(i)
        other.set(-i)
    for ctx, want in copies:
        assert ctx.run(_core.call_stack) == want
    for cid in reversed(ids):
        exit_(cid, None)
    assert _core.call_stack() == []
    for ctx, want in copies:
        assert ctx.run(_core.call_stack) == want


def test_a_task_created_inside_a_call_has_it_as_parent_even_after_it_returned() -> None:
    async def child() -> Any:
        c = entry("m", "child", ())
        frame = _core.frame_ids()
        exit_(c, None)
        return frame

    async def main() -> tuple[Any, list[Any]]:
        cid = entry("m", "creator", ())
        tasks = [asyncio.ensure_future(child()) for _ in range(5)]
        exit_(cid, None)
        entry("m", "unrelated", ())  # the creator's context moves on before the tasks run
        return cid, list(await asyncio.gather(*tasks))

    cid, frames = asyncio.run(main())
    assert all(parent == cid for _, parent, _ in frames)
    assert len({call for call, _, _ in frames}) == 5


def test_interleaved_tasks_never_see_each_others_calls() -> None:
    async def worker(n: int) -> list[Any]:
        seen = []
        for _ in range(20):
            c = entry("m", f"w{n}", (n,))
            await asyncio.sleep(0)
            seen.append(_core.call_stack())
            exit_(c, None)
        return seen

    async def main() -> list[list[Any]]:
        return list(await asyncio.gather(*(worker(n) for n in range(8))))

    for stacks in asyncio.run(main()):
        assert all(len(stack) == 1 for stack in stacks)


def test_task_ids_differ_between_tasks_and_are_none_outside_a_loop() -> None:
    buf = _core.get_buffer()
    assert buf is not None
    buf.drain()

    async def one() -> None:
        for _ in range(3):
            exit_(entry("m", "t", ()), None)

    async def main() -> None:
        await asyncio.gather(one(), one())

    asyncio.run(main())
    exit_(entry("m", "sync", ()), None)
    events = buf.drain()
    tasks = [e.task_id for e in events if e.data.get("function") == "t"]
    assert len(tasks) == 6 and len(set(tasks)) == 2 and None not in tasks
    assert [e.task_id for e in events if e.data.get("function") == "sync"] == [None]
    for e in events:  # an exit carries the same task as its entry
        if e.event_type == "function_exit":
            first = next(x for x in events if x.call_id == e.call_id)
            assert first.task_id == e.task_id


def test_threads_each_have_their_own_stack() -> None:
    results: dict[int, list[Any]] = {}

    def run(n: int) -> None:
        ids = [entry("m", f"t{n}", (i,)) for i in range(10)]
        results[n] = [_core.call_stack() == list(reversed(ids))]
        for cid in reversed(ids):
            exit_(cid, None)
        results[n].append(_core.call_stack())

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {n: [True, []] for n in range(4)}


request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def with_variables(n: int, body: Any) -> Any:
    """Run ``body`` in a fresh copy of this context where ``n`` more variables are set, so
    the stack's cell sits at different places in the context's mapping (at its root, or
    under shared subtrees once the mapping grows)."""

    def run() -> Any:
        for v in [contextvars.ContextVar(f"extra{i}", default=0) for i in range(n)]:
            v.set(1)
        return body()

    return contextvars.copy_context().run(run)


@pytest.mark.parametrize("extra", [0, 1, 5, 40, 300])
def test_a_copy_that_sets_another_variable_does_not_see_the_originals_later_calls(
    extra: int,
) -> None:
    def body() -> None:
        cid = entry("m", "f", ())
        ctx = contextvars.copy_context()
        ctx.run(other.set, 7)  # the copy's new mapping still holds the original's cell
        exit_(cid, None)
        assert ctx.run(_core.call_stack) == [cid]
        g = entry("m", "g", ())
        assert ctx.run(_core.call_stack) == [cid]
        assert ctx.run(_core.frame_ids) == (cid, None, cid)
        exit_(g, None)
        assert ctx.run(_core.call_stack) == [cid]
        assert _core.call_stack() == []

    with_variables(extra, body)


@pytest.mark.parametrize("extra", [0, 40])
def test_a_task_that_sets_a_variable_before_its_first_call_keeps_its_creator_as_parent(
    extra: int,
) -> None:
    async def child() -> Any:
        request_id.set("req-1")  # a request id, a decimal context: before any traced call
        await asyncio.sleep(0)
        c = entry("m", "child", ())
        frame = _core.frame_ids()
        exit_(c, None)
        return frame

    async def main() -> tuple[Any, Any, Any]:
        cid = entry("m", "creator", ())
        task = asyncio.ensure_future(child())
        await asyncio.sleep(0)  # the child runs up to its first await
        exit_(cid, None)
        sibling = entry("m", "sibling", ())  # the creator moves on before the child's call
        frame = await task
        exit_(sibling, None)
        return cid, sibling, frame

    cid, sibling, (_, parent, corr) = with_variables(extra, lambda: asyncio.run(main()))
    assert parent == cid != sibling
    assert corr == cid
