"""Hostile values and races: the core never crashes, and never loses a call because of an
argument (both cores).

A crash would kill pytest with it, so the cases that crashed the C core before run in a
child interpreter, with the core this run tests, and check its exit status.
"""

from __future__ import annotations

import contextlib
import enum
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tidescope
from tidescope import EventType
from tidescope.capture import _core, _snapshot
from tidescope.capture._snapshot import Limits, Snapper, type_name
from tidescope.events import Event, Truncated
from tidescope.instrument import install

entry = _core.report_function_entry
exit_ = _core.report_function_exit


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        check=False,
    )


def cyclic_list() -> list[Any]:
    a: list[Any] = [1, "x"]
    a.append(a)
    return a


def cyclic_dict() -> dict[str, Any]:
    d: dict[str, Any] = {"k": 1}
    d["self"] = d
    return d


def nested(levels: int) -> list[Any]:
    v: list[Any] = [1]
    for _ in range(levels):
        v = [v]
    return v


# -- point 1: the flat copy never follows a value further than it was measured ----------


@pytest.mark.parametrize("value", [cyclic_list(), cyclic_dict(), (cyclic_list(),)])
def test_flat_copy_of_a_value_that_contains_itself_gives_none(value: Any) -> None:
    for depth in (1, 3, 50):
        assert _snapshot._flat_copy(value, depth) is None  # the active core's
        assert _snapshot.flat_copy(value, depth) is None


def test_flat_copy_stops_at_its_depth_on_nesting_deeper_than_measured() -> None:
    deep = nested(50)
    assert _snapshot._flat_copy(deep, 3) is None
    assert _snapshot._flat_copy(nested(2), 3) == nested(2)
    assert _snapshot._flat_cost(deep, list, 256, 1 << 63, 20, 3) == -1


def test_values_nested_past_max_depth_are_recorded_with_depth_markers() -> None:
    errors_before = _core.internal_errors()[0]
    with tidescope.capture(buffer_size=64, max_depth=3) as cap:
        cid = entry("m", "f", (nested(5000), cyclic_list()))
        exit_(cid, cyclic_dict())
    events = cap.events()
    assert [e.event_type for e in events] == [EventType.FUNCTION_ENTRY, EventType.FUNCTION_EXIT]
    args = events[0].data["args"]
    assert args[0] == [[Truncated("list", 1, "depth")]]
    assert args[1] == [1, "x", Truncated("list", 3, "cycle")]
    assert events[1].data["return_value"] == {"k": 1, "self": Truncated("dict", 2, "cycle")}
    assert _core.internal_errors()[0] == errors_before


def test_a_thread_turning_a_list_into_a_cycle_while_snapshots_are_taken_crashes_nothing() -> None:
    # Before: the C core measured the value, was descheduled, then copied the cycle the
    # other thread had made, recursing until the C stack overflowed (SIGSEGV).
    child = run_child(
        """
        import sys, threading
        import tidescope
        from tidescope.capture import _core
        from tidescope.capture._snapshot import Limits, Snapper, type_name

        sys.setswitchinterval(1e-6)
        shared = [[1, 2], 3]
        done = False

        def mutate():
            while not done:
                shared[0] = shared
                shared[0] = [1, 2]

        t = threading.Thread(target=mutate)
        t.start()
        kinds = set()
        with tidescope.capture(buffer_size=1024) as cap:
            for _ in range(30000):
                kinds.add(type(Snapper(Limits()).snap([shared])[0][0]).__name__)
                cid = _core.report_function_entry("m", "f", (shared,))
                _core.report_function_exit(cid, {"v": shared})
        done = True
        t.join()
        print(_core.CORE_NAME, sorted(kinds), cap.stats()["internal_errors"])
        """
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.split()[0] == _core.CORE_NAME
    assert child.stdout.split()[-1] == "0"  # no internal error


def test_a_list_made_to_contain_itself_between_measure_and_copy_crashes_nothing() -> None:
    # The race above, made certain: a trace function makes the cycle at the moment a
    # thread switch could, once the value was measured and before it is copied.
    child = run_child(
        """
        import sys
        from tidescope.capture import _core, _snapshot
        from tidescope.capture._snapshot import Limits, Snapper

        _snapshot._snap_deep = None  # the Python walk: it measures, then copies (_flat)
        shared = [[1, 2], 3]

        def tracer(frame, event, arg):
            if frame.f_code is not Snapper._flat.__code__:
                return None

            def local(frame, event, arg):
                if event == "line" and frame.f_locals.get("cost", -1) >= 0:
                    shared[0] = shared
                return local

            return local

        sys.settrace(tracer)
        got = Snapper(Limits()).snap([shared])
        sys.settrace(None)
        print(_core.CORE_NAME, got)
        """
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.split(" ", 1) == [
        _core.CORE_NAME,
        "[[Truncated('list', size=2, reason='cycle'), 3]]\n",
    ]


# -- point 3: a value or key the snapshot cannot handle is a marker; the call is kept ----


class HashedKey(list[Any]):
    """boltons' _HashedKey: a list subclass made hashable."""

    def __init__(self, items: Any) -> None:
        super().__init__(items)
        self.hashvalue = hash(tuple(items))

    def __hash__(self) -> int:  # type: ignore[override]
        return self.hashvalue


class Hostile(enum.Enum):
    """Kept as it is by the snapshot (an enum member); once armed, its ``__hash__`` and
    ``__eq__`` raise (it was a dict key before that)."""

    A = 1

    def __hash__(self) -> int:
        if ARMED:
            raise RuntimeError("no hash")
        return 1

    def __eq__(self, other: object) -> bool:
        if ARMED:
            raise RuntimeError("no eq")
        return self is other


ARMED = False


@contextlib.contextmanager
def armed() -> Iterator[None]:
    global ARMED
    ARMED = True
    try:
        yield
    finally:
        ARMED = False


def test_a_dict_key_that_copies_to_a_list_becomes_a_marker() -> None:
    got = Snapper(Limits()).snap({HashedKey([1, 2]): "a", "b": 2})
    name = f"{__name__}.HashedKey"
    assert got == {Truncated(name, 0, "unhashable", [1, 2]): "a", "b": 2}


def test_a_dict_key_whose_hash_and_eq_raise_becomes_a_marker() -> None:
    value = {"a": 1, Hostile.A: 2}
    with armed():
        got = Snapper(Limits()).snap(value)
    markers = [k for k in got if type(k) is Truncated]
    assert len(got) == 2 and got["a"] == 1 and len(markers) == 1
    assert (markers[0].type_name, markers[0].size, markers[0].reason) == (
        f"{__name__}.Hostile",
        1,
        "unhashable",
    )


def test_report_functions_keep_calls_whose_arguments_have_hostile_keys() -> None:
    bad = {HashedKey([1]): 1, HashedKey([2]): 2}
    args = {"d": bad, "e": {Hostile.A: 0}}
    errors_before = _core.internal_errors()[0]
    with armed(), tidescope.capture(buffer_size=64) as cap:
        cid = entry("m", "f", args)
        exit_(cid, bad)
    events = cap.events()
    assert [e.event_type for e in events] == [EventType.FUNCTION_ENTRY, EventType.FUNCTION_EXIT]
    args = events[0].data["args"]
    assert set(args["d"].values()) == {1, 2}
    assert all(k.reason == "unhashable" for k in args["d"])
    assert [k.reason for k in args["e"]] == ["unhashable"]
    assert all(k.reason == "unhashable" for k in events[1].data["return_value"])
    assert _core.internal_errors()[0] == errors_before


def test_a_value_the_snapshot_fails_on_is_an_error_marker_and_the_call_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Odd(Exception):  # a kind both walks (Python, _deep.c) leave to Snapper._other
        pass

    def broken(self: Snapper, v: Any, t: type, depth: int) -> Any:
        raise LookupError("snapshot bug")

    # stands for any fault still unknown inside the snapshot of one value
    monkeypatch.setattr(Snapper, "_other", broken)
    errors_before = _core.internal_errors()[0]
    with tidescope.capture(buffer_size=64) as cap:
        cid = entry("m", "f", (Odd(),))
        exit_(cid, Odd())
    events = cap.events()
    assert [e.event_type for e in events] == [EventType.FUNCTION_ENTRY, EventType.FUNCTION_EXIT]
    assert events[0].data["args"] == Truncated("builtins.tuple", 0, "error", "builtins.LookupError")
    assert events[1].data["return_value"] == Truncated(
        type_name(Odd), 0, "error", "builtins.LookupError"
    )
    assert _core.internal_errors()[0] == errors_before + 2


def test_instrumented_calls_with_hostile_keys_keep_entry_and_exit(
    project: Path, tmp_path: Path
) -> None:
    (project / "hostile_keys.py").write_text(
        textwrap.dedent(
            """
            def echo(table):
                return table
            """
        ),
        encoding="utf-8",
    )
    install(include=["hostile_keys"], cache_dir=tmp_path / "cache")
    import hostile_keys  # type: ignore[import-not-found]

    table = {HashedKey([1, 2]): "v", "x": 1, Hostile.A: 2}
    errors_before = _core.internal_errors()[0]
    # the deep snapshot is what meets the hostile keys (calls are "ref" by default)
    with armed(), tidescope.capture(buffer_size=64, values="deep") as cap:
        assert hostile_keys.echo(table) is table
    events: list[Event] = cap.events()
    kinds = [e.event_type for e in events]
    assert kinds == [EventType.FUNCTION_ENTRY, EventType.FUNCTION_EXIT], kinds
    assert events[0].data["function"] == "echo"
    for snap in (events[0].data["args"], events[1].data["return_value"]):
        if type(snap) is dict and "table" in snap:
            snap = snap["table"]
        elif type(snap) is not dict:
            snap = snap[0]
        assert snap["x"] == 1
        reasons = sorted(k.reason for k in snap if type(k) is Truncated)
        assert reasons == ["unhashable", "unhashable"], snap
    assert _core.internal_errors()[0] == errors_before


# -- point 4: durations never overflow -------------------------------------------------


@pytest.mark.parametrize("start", [-(2**63), -(2**63) + 1, 2**63 - 1, 2**70, -(2**70), -1])
def test_a_duration_from_a_start_far_from_now_is_exact(start: int) -> None:
    with tidescope.capture(buffer_size=64) as cap:
        _core.restore_context(("outer", None, "outer", start))  # a frame put back by hand
        assert exit_("outer", None)
    (event,) = cap.events()
    assert event.data["duration_ns"] == event.timestamp - start
