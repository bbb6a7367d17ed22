"""Value reports by site (``_pure_values`` and its C twin in ``_vreport.c``).

Runs on the core the environment picks (once per core in the suite); the last tests feed
the same random reports to both twins in one process and need the C core.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tidescope
from tidescope.capture import _core, _pure, _pure_values
from tidescope.capture.runtime import ast as rast
from tidescope.events import Redacted

NODE = "m:f:3:4:Assign"


class Point:
    def __init__(self) -> None:
        self.x = 1
        self.tags = ["a"]


def recorded(report: Any, **start: Any) -> tuple[list[Any], int]:
    """What the events ``report(outer_call_id, inner_call_id)`` writes inside two calls say
    (apart from event ids and clocks; the two call ids as "outer" and "inner"), and the
    errors counted."""
    errors = _core.internal_errors()[0]
    session = tidescope.start(**start)
    outer = _core.report_function_entry("m", "outer", {})
    inner = _core.report_function_entry("m", "f", {})
    try:
        report(outer, inner)
    finally:
        _core.report_function_exit(inner, None)
        _core.report_function_exit(outer, None)
        events, _ = session.buffer.read_batch(0, 100)  # type: ignore[union-attr]
        tidescope.stop()
    names = {outer: "outer", inner: "inner"}
    said = [
        (
            e.event_type, e.ast_node_id, e.data, names.get(e.call_id, e.call_id),
            names.get(e.parent_id, e.parent_id), names.get(e.correlation_id, e.correlation_id),
            e.thread_id, e.task_id,
        )
        for e in events[2:-2]
    ]  # fmt: skip
    return said, _core.internal_errors()[0] - errors


THING = Point()

# Each case: the site, the values a report passes, and the runtime.ast call it stands for.
VALUES = [3, "x", [1, [2, 3]], {"k": (1, 2)}, "y" * 400, Point(), Redacted("str"), None, 2**70]
CASES: list[tuple[str, tuple[Any, ...], tuple[Any, ...], Any]] = []
for v in VALUES:
    CASES += [
        ("snap", ("snap", NODE, 3, ("a", "b"), ()), (v, 1),
         lambda c, v=v: rast.report_ast_variable_snapshot(c, {"a": v, "b": 1}, 3, NODE)),
        ("match", ("match", "m:f:4:9:match_case", 4, (), ("[x, *_]", True)), (v,),
         lambda c, v=v: rast.report_ast_pattern_match(
             c, "[x, *_]", v, True, 4, "m:f:4:9:match_case")),
    ]  # fmt: skip
CASES += [
    ("line", ("line", NODE, 3, (), ()), (),
     lambda c: rast.report_ast_line_execution(c, 3, None, NODE)),
    ("branch", ("branch", "m:f:5:4:If", 5, (), ("elif", "n < 2", False)), (),
     lambda c: rast.report_ast_branch_execution(c, "elif", "n < 2", False, 5, "m:f:5:4:If")),
    ("conditional", ("branch", "m:f:5:8:IfExp", 5, (), ("conditional", "c" * 300, True)), (),
     lambda c: rast.report_ast_branch_execution(
         c, "conditional", "c" * 300, True, 5, "m:f:5:8:IfExp")),
    ("match-miss", ("match", "m:f:4:4:Match", 4, (), (None, False)), (THING,),
     lambda c: rast.report_ast_pattern_match(c, None, THING, False, 4, "m:f:4:4:Match")),
    ("while", ("loop", "m:f:6:4:While", 6, (), ("while",)), (0,),
     lambda c: rast.report_ast_loop_iteration(c, "while", 1, None, 6, "m:f:6:4:While")),
    ("for", ("loop", "m:f:6:4:For", 6, ("i", "password"), ("for",)), (4, 7, Redacted("int")),
     lambda c: rast.report_ast_loop_iteration(
         c, "for", 5, {"i": 7, "password": Redacted("int")}, 6, "m:f:6:4:For")),
]  # fmt: skip


@pytest.mark.parametrize("token", ["outer", "inner", "none"])
@pytest.mark.parametrize(("site", "values", "spelled"), [c[1:] for c in CASES], ids=[
    f"{c[0]}-{k}" for k, c in enumerate(CASES)
])  # fmt: skip
def test_a_value_site_reports_what_the_runtime_ast_reporter_reports(
    site: tuple[Any, ...], values: tuple[Any, ...], spelled: Any, token: str
) -> None:
    report = _core.value_sites((site,))

    def pick(outer: Any, inner: Any) -> Any:
        return {"outer": outer, "inner": inner, "none": None}[token]

    by_site, e1 = recorded(lambda o, i: report(pick(o, i), 0, *values))
    by_ast, e2 = recorded(lambda o, i: spelled(pick(o, i)))
    assert (e1, e2) == (0, 0)
    assert len(by_site) == 1
    assert by_site == by_ast


def test_a_snapshot_is_taken_at_the_report() -> None:
    report = _core.value_sites((("snap", NODE, 3, ("xs",), ()),))
    xs = [1, 2]

    def run(outer: Any, inner: Any) -> None:
        report(inner, 0, xs)
        xs.append(3)

    (event,), _ = recorded(run)
    assert event[2]["variables"] == {"xs": [1, 2]}


def test_a_loop_counts_every_iteration_and_reports_the_first_ten_then_every_hundredth() -> None:
    report = _core.value_sites((("loop", "m:f:2:4:For", 2, ("i",), ("for",)),))
    counts: list[int] = []

    def run(outer: Any, inner: Any) -> None:
        n = 0
        for i in range(250):
            n = report(inner, 0, n, i)
            counts.append(n)

    events, errors = recorded(run)
    assert errors == 0 and counts == list(range(1, 251))
    assert [e[2]["iteration_count"] for e in events] == [*range(1, 11), 100, 200]
    assert events[-1][2]["current_value"] == {"i": 199} and events[-1][3] == "inner"


def test_capture_off_reports_nothing_and_a_loop_still_counts() -> None:
    report = _core.value_sites(
        (("snap", NODE, 3, ("a",), ()), ("loop", "m:f:2:4:While", 2, (), ("while",)))
    )
    assert report(None, 0, 1) is None
    assert report(None, 1, 41) == 42
    session = tidescope.start()
    token = _core.disable_here()
    assert report(None, 0, 1) is None and report(None, 1, 0) == 1
    _core.restore_context(token)
    events, _ = session.buffer.read_batch(0, 10)  # type: ignore[union-attr]
    tidescope.stop()
    assert events == []


def test_bad_reports_are_counted_never_raised() -> None:
    report = _core.value_sites(
        (("snap", NODE, 3, ("a",), ()), ("loop", "m:f:2:4:While", 2, (), ("while",)))
    )
    errors = _core.internal_errors()[0]
    session = tidescope.start()
    assert report(None, 2, 1) is None  # no such site
    assert report(None, -1, 1) is None
    assert report(None, "0", 1) is None
    assert report(None, 0) is None  # a value missing
    assert report(None, 0, 1, 2) is None  # one too many
    assert report(None, 1, "0") is None  # a count that is not an int
    assert report(None, 1) is None
    events, _ = session.buffer.read_batch(0, 10)  # type: ignore[union-attr]
    tidescope.stop()
    assert events == [] and _core.internal_errors()[0] == errors + 7


@pytest.mark.parametrize(
    "table",
    [
        (("nope", NODE, 1, (), ()),),
        (("snap", 3, 1, (), ()),),
        (("snap", NODE, "1", (), ()),),
        (("branch", NODE, 1, (), ("if",)),),
        (("snap", NODE, 1, (3,), ()),),
        (("snap", NODE, 1, ()),),
    ],
)
def test_a_malformed_site_is_refused_at_registration(table: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        _core.value_sites(table)


# -- both twins, the same reports --------------------------------------------------------

needs_c = pytest.mark.skipif(_core.CORE_NAME != "c", reason="the C core is not loaded")
if os.environ.get("TIDESCOPE_REQUIRE_C") == "1" and os.environ.get("TIDESCOPE_CORE") != "python":
    assert _core.CORE_NAME == "c", _core.CORE_REASON

TABLE = tuple(c[1] for c in CASES[:4]) + tuple(c[1] for c in CASES[-7:])
value = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=300), st.sampled_from([Point(), Redacted("str"), b"xy", 1.5]),
    st.lists(st.integers(), max_size=25), st.dictionaries(st.text(max_size=3), st.integers()),
)  # fmt: skip
reports = st.lists(
    st.tuples(
        st.sampled_from(["outer", "inner", "none", "other"]),
        st.integers(min_value=-1, max_value=len(TABLE)),
        st.lists(value, max_size=4),
        st.booleans(),  # the values fitted to the site (else as drawn: mostly an error)
        st.integers(min_value=-3, max_value=1000),  # a loop's count so far
    ),
    max_size=30,
)


def _fitted(k: int, values: list[Any], exact: bool, count: int) -> list[Any]:
    if not exact or not 0 <= k < len(TABLE):
        return values
    kind, _, _, names, _ = TABLE[k]
    want = 1 if kind == "match" else len(names)
    values = (values + [None] * want)[:want]
    return [count, *values] if kind == "loop" else values


def _twin_run(report: Any, ops: list[Any], lim: Any) -> tuple[list[Any], list[Any], int]:
    returned: list[Any] = []

    def run(outer: Any, inner: Any) -> None:
        _pure.set_limits(lim)
        for who, k, values, exact, count in ops:
            token = {"outer": outer, "inner": inner, "none": None, "other": 12345}[who]
            returned.append(report(token, k, *_fitted(k, values, exact, count)))

    said, errors = recorded(run)
    return said, returned, errors


@needs_c
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=reports, small=st.booleans())
def test_both_twins_report_return_and_count_the_same(ops: list[Any], small: bool) -> None:
    from tidescope.capture import _speedups  # type: ignore[attr-defined]
    from tidescope.capture._snapshot import Limits

    lim = Limits(max_string=8, max_items=3, max_event_bytes=120) if small else Limits()
    saved = _pure.get_limits()
    try:
        c = _twin_run(_speedups.value_sites(TABLE), ops, lim)
        py = _twin_run(_pure_values.value_sites(TABLE), ops, lim)
    finally:
        _pure.set_limits(saved)
    assert c == py


@needs_c
def test_the_c_reporter_keeps_nothing() -> None:
    from _leaks import assert_keeps_nothing

    from tidescope.capture import _speedups  # type: ignore[attr-defined]

    report = _speedups.value_sites(TABLE)
    obj, xs = Point(), [1, 2, 3]
    session = tidescope.start(buffer_size=64)

    def burst(n: int) -> None:
        cnt = 0
        for _ in range(n):
            report(None, 0, obj, xs)
            report(None, 1, xs)
            report(None, 2, 1, xs)
            cnt = report(None, 10, cnt, 1, Redacted("int"))
            report(None, 99)

    try:
        burst(200)
        assert_keeps_nothing(burst, 20000, [obj, xs, report], session.buffer.drain)  # type: ignore[union-attr]
    finally:
        tidescope.stop()
