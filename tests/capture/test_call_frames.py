"""Site calls' frames and tokens, on either core.

On the C core a call entered through a site is a frame in C memory on its context's stack,
and ``report_site_entry`` returns a token that names the frame's depth; on the pure core
the token is the call id. Either way the calls join up as the spelled-out reports do: a
copied context sees the frames it was copied with and nothing its original does after,
frames that Python code asked for (``current_call_id()``, ``save_context()``) still exit
by their tokens, and a token whose frame is gone or belongs to another site never
corrupts the stack or raises.
"""

from __future__ import annotations

import contextvars
from typing import Any

import pytest

import tidescope
from tidescope.capture import _core, _sites
from tidescope.events import Event, EventType
from tidescope.instrument import rewrite_source

enter = _core.report_site_entry
leave = _core.report_site_exit


@pytest.fixture
def site() -> int:
    (k,) = _sites.register_sites([("frames", "f", "frames:f:1:0:FunctionDef", ("n",), "f.py", 1)])
    return k


@pytest.fixture
def session() -> Any:
    s = tidescope.start(buffer_size=1 << 14)
    _core.initialize_context()
    yield s
    tidescope.stop()


def events(session: Any) -> list[Event]:
    got, _ = session.buffer.read_batch(0, 1 << 14)
    return list(got)


def entries(evs: list[Event]) -> dict[Any, Event]:
    """Entries by their argument n."""
    return {e.data["args"]["n"]: e for e in evs if e.event_type == EventType.FUNCTION_ENTRY}


def test_a_copied_context_pushes_and_pops_while_the_original_goes_on(
    site: int, session: Any
) -> None:
    errors = _core.internal_errors()[0]
    a = enter(site, 1)
    ctx = contextvars.copy_context()
    b = enter(site, 2)  # the original pushes over the frame the copy shares
    c = ctx.run(enter, site, 3)  # the copy pushes over a, not over b
    assert ctx.run(leave, c, None, site)
    d = ctx.run(enter, site, 4)
    assert leave(b, None, site)
    assert ctx.run(leave, d, None, site)
    assert ctx.run(leave, a, None, site)  # a leaves the copy's stack only
    assert ctx.run(_core.call_stack) == []
    assert _core.call_stack() == [_core.call_of(a)]
    assert leave(a, None, site)
    assert _core.call_stack() == []
    evs = events(session)
    by_n = entries(evs)
    a_id = by_n[1].call_id
    assert [by_n[n].parent_id for n in (2, 3, 4)] == [a_id, a_id, a_id]
    assert {by_n[n].correlation_id for n in (1, 2, 3, 4)} == {a_id}
    exits = [e for e in evs if e.event_type == EventType.FUNCTION_EXIT]
    assert sorted(e.call_id for e in exits) == sorted(
        [by_n[n].call_id for n in (1, 2, 3, 4)] + [a_id]
    )
    assert _core.internal_errors()[0] == errors


def test_frames_python_asked_for_still_exit_by_their_tokens(site: int, session: Any) -> None:
    tokens = [enter(site, n) for n in range(5)]
    ids = [_core.call_of(t) for t in tokens]  # the frames become Python's tuples here
    assert _core.call_stack() == ids[::-1]
    saved = _core.save_context()
    more = [enter(site, n) for n in range(5, 8)]  # C frames over Python's
    for t in reversed(more):
        assert leave(t, None, site)
    assert _core.save_context() is saved
    for t in reversed(tokens):
        assert leave(t, None, site)
    assert _core.call_stack() == []
    evs = events(session)
    by_n = entries(evs)
    assert [by_n[n].parent_id for n in range(1, 8)] == [
        by_n[n].call_id for n in (0, 1, 2, 3, 4, 5, 6)
    ]
    exits = [e for e in evs if e.event_type == EventType.FUNCTION_EXIT]
    assert [e.call_id for e in exits] == [by_n[n].call_id for n in (7, 6, 5, 4, 3, 2, 1, 0)]


def test_a_token_whose_frame_is_gone_or_is_another_sites_pops_nothing(
    site: int, session: Any
) -> None:
    (other,) = _sites.register_sites(
        [("frames", "g", "frames:g:9:0:FunctionDef", ("n",), "f.py", 9)]
    )
    errors = _core.internal_errors()[0]
    outer = enter(site, 1)
    inner = enter(site, 2)
    assert leave(outer, None, site)  # the inner call never left: unwound with it
    assert _core.call_stack() == []
    late = leave(inner, None, site)  # its frame is gone
    assert _core.call_stack() == []
    again = enter(site, 3)
    foreign = leave(again, None, other)  # not the frame other's call pushed
    if _core.CORE_NAME == "c":
        assert late is False and _core.call_of(inner) is None
        assert foreign is False and _core.call_stack() == [_core.call_of(again)]
    assert leave(again, None, site) in (True, False)
    assert _core.call_stack() == []
    assert _core.internal_errors()[0] == errors


DEEP = """
def down(n):
    if n == 0:
        return 0
    return down(n - 1) + 1
"""


def test_recursion_deeper_than_the_first_frame_array_and_token_cache(session: Any) -> None:
    tree, _ = rewrite_source(DEEP, "deep.py", "deep", "calls")
    ns: dict[str, Any] = {"__name__": "deep"}
    exec(compile(tree, "deep.py", "exec", dont_inherit=True), ns)
    errors = _core.internal_errors()[0]
    assert ns["down"](600) == 600
    assert _core.call_stack() == []
    evs = events(session)
    by_n = entries(evs)
    assert len(by_n) == 601
    assert all(by_n[n].parent_id == by_n[n + 1].call_id for n in range(600))
    assert by_n[600].parent_id is None
    exits = {e.call_id: e for e in evs if e.event_type == EventType.FUNCTION_EXIT}
    assert all(exits[by_n[n].call_id].data["return_value"] == n for n in range(601))
    assert all(exits[by_n[n].call_id].parent_id == by_n[n].parent_id for n in range(601))
    assert _core.internal_errors()[0] == errors


def test_a_value_report_names_the_call_its_token_stands_for(session: Any) -> None:
    src = "def f(n):\n    x = n + 1\n    return x\n"
    tree, _ = rewrite_source(src, "val.py", "val", "values")
    ns: dict[str, Any] = {"__name__": "val"}
    exec(compile(tree, "val.py", "exec", dont_inherit=True), ns)
    assert ns["f"](1) == 2
    evs = events(session)
    (entry,) = [e for e in evs if e.event_type == EventType.FUNCTION_ENTRY]
    snaps = [e for e in evs if e.event_type == EventType.LOCAL_VARIABLE_SNAPSHOT]
    assert snaps and all(e.call_id == entry.call_id for e in snaps)
