"""The C core's deep snapshot (``_deep.c``) against its specification, ``Snapper`` in Python.

- a Hypothesis differential test: random nested values (containers, objects with a
  ``__dict__`` or ``__slots__``, cycles, big ints, long strings and bytes, secret keys,
  hostile objects, enums, sets, subclasses of builtins) and random limits, snapshotted
  by both walks in one process: equal snapshots, equal bytes charged;
- a reference-leak test;
- a program recorded at ``--level values`` under each core: the same decoded trace, but
  for ids and clocks.

These need the C core: they skip when it is not the one loaded.
"""

from __future__ import annotations

import enum
import os
import subprocess
import sys
from collections import deque, namedtuple
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidescope.capture import _core, _snapshot
from tidescope.capture._snapshot import Limits, Snapper

if _core.CORE_NAME != "c":
    if os.environ.get("TIDESCOPE_REQUIRE_C") == "1" and os.environ.get("TIDESCOPE_CORE") != (
        "python"
    ):
        raise AssertionError(f"the C core is required but not loaded: {_core.CORE_REASON}")
    pytest.skip(f"the C core is not loaded ({_core.CORE_REASON})", allow_module_level=True)

from _leaks import assert_keeps_nothing

C_WALK = _snapshot._snap_deep


class Plain:
    pass


class Slotted:
    __slots__ = ("a", "b")


class Both(Slotted):
    __slots__ = ("__dict__", "c")


class Hostile:
    """Every hook raises; a snapshot must run none of them."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("getattr")

    def __getattribute__(self, name: str) -> Any:
        raise RuntimeError("getattribute")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    @property
    def prop(self) -> int:
        raise RuntimeError("property")


class Color(enum.Enum):
    RED = 1


class MyStr(str):
    pass


class MyList(list[Any]):
    pass


Point = namedtuple("Point", "x y")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.sampled_from([Color.RED, len, Plain, sys, 2.5j, MyStr("ab"), Point(1, 2)]),
    st.builds(Hostile),
)
keys = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["password", "api_key", "token", "query_string", "a" * 40, "x"]),
    st.integers(-3, 3),
)


def objects(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    def plain(attrs: dict[str, Any]) -> Plain:
        o = Plain()
        o.__dict__.update(attrs)
        return o

    def slotted(a: Any, b: Any, set_b: bool) -> Slotted:
        o = Slotted()
        o.a = a
        if set_b:
            o.b = b
        return o

    def both(a: Any, c: Any, attrs: dict[str, Any]) -> Both:
        o = Both()
        o.a, o.c = a, c
        o.__dict__.update(attrs)
        return o

    names = st.one_of(st.sampled_from(["secret", "token", "name", "data"]), st.text(max_size=5))
    attrs = st.dictionaries(names, children, max_size=5)
    return st.one_of(
        st.builds(plain, attrs),
        st.builds(slotted, children, children, st.booleans()),
        st.builds(both, children, children, attrs),
    )


values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.lists(children, max_size=6).map(tuple),
        st.lists(children, max_size=6).map(deque),
        st.lists(children, max_size=4).map(MyList),
        st.dictionaries(keys, children, max_size=6),
        st.frozensets(st.one_of(st.integers(), st.text(max_size=300)), max_size=4),
        st.tuples(st.sampled_from([b"authorization", b"accept"]), children),
        objects(children),
    ),
    max_leaves=30,
)
limits = st.builds(
    Limits,
    max_depth=st.integers(0, 4),
    max_items=st.sampled_from([0, 1, 3, 20]),
    max_string=st.sampled_from([0, 3, 10, 256]),
    max_event_bytes=st.sampled_from([0, 40, 200, 4096]),
    repr_objects=st.booleans(),
)


def with_cycles(v: Any) -> Any:
    """``v`` inside a list and an object that contain themselves."""
    loop: list[Any] = [v]
    loop.append(loop)
    o = Plain()
    o.self = o  # type: ignore[attr-defined]
    o.items = loop  # type: ignore[attr-defined]
    return [o, loop, {"o": o}]


C_PAYLOAD = _snapshot._payload_deep


def both_walks(
    v: Any, lim: Limits, payload: bool = False
) -> tuple[tuple[Any, int], tuple[Any, int]]:
    c = Snapper(lim)
    got_c = c.payload(v) if payload else c.snap(v)
    _snapshot._snap_deep = _snapshot._payload_deep = None
    try:
        p = Snapper(lim)
        got_p = p.payload(v) if payload else p.snap(v)
    finally:
        _snapshot._snap_deep, _snapshot._payload_deep = C_WALK, C_PAYLOAD
    return (got_c, c.budget), (got_p, p.budget)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, limits, st.booleans())
def test_c_walk_gives_the_pure_snapshot_and_charges_the_same_bytes(
    v: Any, lim: Limits, cycles: bool
) -> None:
    if cycles:
        v = with_cycles(v)
    (got_c, budget_c), (got_p, budget_p) = both_walks(v, lim)
    assert got_c == got_p
    assert budget_c == budget_p


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), values, max_size=25), limits)
def test_c_payload_gives_the_pure_payload(data: dict[Any, Any], lim: Limits) -> None:
    (got_c, budget_c), (got_p, budget_p) = both_walks(data, lim, payload=True)
    assert got_c == got_p
    assert budget_c == budget_p


def test_c_walk_reads_no_hook_of_a_hostile_object_and_redacts_secret_attributes() -> None:
    h = Hostile()
    o = Plain()
    o.password, o.peer, o.n = "hunter2", h, 2**80  # type: ignore[attr-defined]
    (got_c, _), (got_p, _) = both_walks({"o": o, "api_key": "k"}, Limits())
    assert got_c == got_p
    attrs = got_c["o"].attrs
    assert attrs["password"].type_name == "str"  # a Redacted marker, not the value
    assert attrs["peer"].type_name.endswith("Hostile")
    assert got_c["api_key"] != "k"


def test_c_walk_is_used_on_the_c_core() -> None:
    assert C_WALK is not None
    assert C_PAYLOAD is not None


def test_c_walk_keeps_nothing() -> None:
    o = Plain()
    o.items = [1, "two", (3.0, None), {"password": "x", "k": [o]}]  # type: ignore[attr-defined]
    o.big, o.text = 2**200, "y" * 1000  # type: ignore[attr-defined]
    s = Slotted()
    s.a = o
    value = [o, s, {Color.RED: deque([1]), "q": frozenset({1})}, Hostile()]
    lim = Limits()

    def burst(n: int) -> None:
        for _ in range(n):
            Snapper(lim).snap(value)
            Snapper(lim).payload({"value": value, "line": 3})

    burst(1000)
    assert_keeps_nothing(burst, 20_000, [o, s, value, Plain, Slotted])


PROGRAM = """
import enum
class Color(enum.Enum):
    RED = 1
class Node:
    def __init__(self, value, nxt):
        self.value = value
        self.next = nxt
        self.tags = {"password": "s3", "colour": Color.RED, "n": 2**100}
class Pair:
    __slots__ = ("left", "right")
    def __init__(self, left, right):
        self.left = left
        self.right = right
def build(n):
    head = None
    for i in range(n):
        head = Node(i, head)
        pair = Pair(head, [head, "x" * 300, b"b" * 3])
    return pair
loop = []
loop.append(loop)
result = build(6)
"""

VOLATILE = frozenset(
    {"event_id", "timestamp", "wall_time", "node", "pid", "thread_id", "task_id", "id",
     "correlation_id", "parent_id", "call_id", "duration_ns"}
)  # fmt: skip


def stable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: stable(x) for k, x in v.items() if k not in VOLATILE}
    if isinstance(v, list):
        return [stable(x) for x in v]
    return v


def recorded(tmp_path: Path, core: str) -> list[Any]:
    from tidescope.export.reader import read_trace

    (tmp_path / core).mkdir()
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    env = {**os.environ, "TIDESCOPE_CORE": core}
    out = tmp_path / core
    subprocess.run(
        [sys.executable, "-m", "tidescope", "run", "--level", "values", "-o", str(out),
         str(prog)],
        check=True, env=env, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    (trace,) = out.glob("*/events-*.tstrace")
    return [stable(r) for r in read_trace(trace) if "event_type" in r]


def test_a_values_run_records_the_same_trace_on_both_cores(tmp_path: Path) -> None:
    c, pure = recorded(tmp_path, "c"), recorded(tmp_path, "python")
    assert len(c) > 40
    assert any("$object" in str(r["data"]) for r in c)
    assert c == pure
