"""The C core against its specification, the pure-Python core.

- a Hypothesis differential test: the same random operation sequences (entries, exits,
  stack operations, writes, drains; random values and limits) go to both cores' report
  functions in one process, and what they return, record and count must be equal;
- the fast paths (values kept or copied without the full snapshot) give exactly what the
  full snapshot gives, on random flat containers and limits;
- a reference-leak test: a million reports, then refcounts and traced memory;
- 8 writer threads on the C report path keep the accounting identity.

These need the C core: they skip when it is not the one loaded (the run with
``TIDESCOPE_CORE=python``), and fail when ``TIDESCOPE_REQUIRE_C=1`` says it must be.
"""

from __future__ import annotations

import gc
import math
import os
import sys
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tidescope
from tidescope.capture import _clock, _core, _pure, _ring
from tidescope.capture._snapshot import Limits, Snapper
from tidescope.events import Event, jsonable

if _core.CORE_NAME != "c":
    if os.environ.get("TIDESCOPE_REQUIRE_C") == "1" and os.environ.get("TIDESCOPE_CORE") != (
        "python"
    ):
        raise AssertionError(f"the C core is required but not loaded: {_core.CORE_REASON}")
    pytest.skip(f"the C core is not loaded ({_core.CORE_REASON})", allow_module_level=True)

from _leaks import assert_keeps_nothing

from tidescope.capture import _speedups  # type: ignore[attr-defined]

CRing = _core.RingBuffer
PyRing = _ring.RingBuffer


class Thing:
    def __init__(self, n: int) -> None:
        self.n = n


class Boom(ValueError):
    pass


THING = Thing(7)
BOOM = Boom("no", 3)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63 - 1, -(2**63) + 1, -(2**63), 2**63, 10**30]),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.text(min_size=250, max_size=300),
    st.binary(max_size=20),
    st.sampled_from([THING, BOOM, 1j, range(3), ...]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=25),
        st.lists(inner, max_size=25).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=300), st.integers()), inner, max_size=25),
    ),
    max_leaves=60,
)
limits = st.builds(
    Limits,
    max_depth=st.integers(0, 4),
    max_items=st.integers(0, 30),
    max_string=st.integers(0, 300),
    max_event_bytes=st.integers(0, 6000),
)
ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("entry"),
            st.sampled_from(["m", "pkg.mod"]),
            st.sampled_from(["f", "g"]),
            values,
            st.sampled_from([None, "m:f:1:0:FunctionDef", 42, ("odd", [1])]),
            st.sampled_from([None, None, "explicit", 10**40]),
        ),
        st.tuples(
            st.just("exit"),
            st.integers(0, 6),  # which call: 0 the innermost, ... 6 an unknown id
            values,
            st.sampled_from(["normal", "normal", "exception", "cancelled", 7]),
            st.sampled_from([None, None, 1234, "slow"]),
            st.sampled_from([None, "m:f:1:0:FunctionDef", 42]),
        ),
        st.tuples(st.just("push"), st.integers(0, 3)),
        st.tuples(st.just("pop")),
        st.tuples(st.just("bind"), st.sampled_from(["req-1", 99, None])),
        st.tuples(st.just("off")),
        st.tuples(st.just("on")),
        st.tuples(st.just("write"), values),
        st.tuples(st.just("emit"), values, st.booleans()),
        st.tuples(st.just("drain"), st.integers(0, 5)),
    ),
    max_size=40,
)


class Run:
    """One core's report functions over a buffer of its own, sharing _pure's context code."""

    def __init__(self, core: str, size: int, strategy: str) -> None:
        self.core = core
        self.buffer = (CRing if core == "c" else PyRing)(size, strategy, 0)
        if core == "c":
            self.entry, self.exit = _speedups.report_function_entry, _speedups.report_function_exit
            self.write_event = _speedups.write_event
        else:
            self.entry, self.exit = _pure.report_function_entry, _pure.report_function_exit
            self.write_event = _pure.write_event
        self.calls: list[Any] = []
        self.log: list[Any] = []
        self.ids: dict[Any, int] = {}

    def norm(self, v: Any) -> Any:
        """Ids renumbered by first appearance (the two runs draw different ids)."""
        if type(v) is int and v in self.ids:
            return ("id", self.ids[v])
        return v

    def learn(self, v: Any) -> None:
        if type(v) is int and v not in self.ids and v > 1 << 22:
            self.ids[v] = len(self.ids)

    def records(self, raw: list[tuple[Any, ...]]) -> list[Any]:
        out = []
        for r in raw:
            if len(r) == 2:
                out.append(("event", jsonable(r[1])))
                continue
            pos, eid, _ts, thread, task, corr, parent, call, ast, etype, data = r
            for v in (eid, corr, parent, call):
                self.learn(v)
            data = tuple(data) if type(data) is tuple else data
            if etype == "function_exit" and type(data[2]) is int and data[2] != 1234:
                data = (data[0], data[1], "measured", data[3])  # a duration measured here
            out.append(
                (
                    pos,
                    self.norm(eid),
                    thread,
                    task,
                    self.norm(corr),
                    self.norm(parent),
                    self.norm(call),
                    repr(jsonable(ast)),
                    str(etype),
                    repr(jsonable(data)),
                )
            )
        return out

    def events(self, got: tuple[list[Any], int]) -> list[Any]:
        """Events read without consuming (built in C by the C ring), normalised."""
        out: list[Any] = []
        for e in got[0]:
            if not isinstance(e, Event):
                out.append(("event", jsonable(e)))
                continue
            rec = (0, e.event_id, e.timestamp, e.thread_id, e.task_id, e.correlation_id,
                   e.parent_id, e.call_id, e.ast_node_id, e.event_type, e.data)  # fmt: skip
            data = e.data
            if e.event_type in ("function_entry", "function_exit") and type(data) is dict:
                rec = (*rec[:10], tuple(data.values()))
            assert e.wall_time - e.timestamp == _clock.wall_offset
            assert (e.node, e.pid) == (_clock.node(), _clock.pid())
            out.append(self.records([rec])[0][1:])
        return [*out, got[1]]

    def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "entry":
            _, mod, fn, args, ast, call_id = op
            kw: dict[str, Any] = {}
            if ast is not None:
                kw["ast_node_id"] = ast
            if call_id is not None:
                kw["call_id"] = call_id
            cid = self.entry(mod, fn, args, **kw)
            self.learn(cid)
            if cid is not None:
                self.calls.append(cid)
            self.log.append(("entry", self.norm(cid)))
        elif kind == "exit":
            _, which, rv, reason, duration, ast = op
            if which >= 6 or not self.calls:
                cid: Any = 987654321
            else:
                cid = self.calls[-1 - min(which, len(self.calls) - 1)]
            value = BOOM if reason == "exception" else rv
            kw = {"exit_reason": reason}
            if ast is not None:
                kw["ast_node_id"] = ast
            ok = self.exit(cid, value, duration, **kw)
            if cid in self.calls:
                self.calls.remove(cid)
            self.log.append(("exit", ok))
        elif kind == "push":
            _core.push_call_stack(["p0", "p1", 5, None][op[1]])
        elif kind == "pop":
            self.log.append(("pop", self.norm(_core.pop_call_stack())))
        elif kind == "bind":
            _core.bind_correlation(op[1])
        elif kind == "off":
            _core.clear_context()
        elif kind == "on":
            _core.initialize_context()
        elif kind == "write":
            self.log.append(("write", self.buffer.write(op[1])))
        elif kind == "emit":
            call, parent, corr = _core.frame_ids()
            ok = self.write_event(
                self.buffer, "state_change", {"value": op[1]},
                call_id=call, parent_id=parent, correlation_id=corr,
                **({"ast_node_id": "m:f:1:0:Assign"} if op[2] else {}),
            )  # fmt: skip
            self.log.append(("emit", ok))
        elif kind == "drain" and op[1] % 2:
            self.log.append(("drain", self.events((self.buffer.drain(op[1]), 0))))
        elif kind == "drain":
            self.log.append(("drain", self.records(self.buffer.drain_records(op[1]))))
        self.log.append(("stack", [self.norm(c) for c in _core.call_stack()]))


def run(core: str, sequence: list[Any], lim: Limits, size: int, strategy: str) -> Run:
    r = Run(core, size, strategy)
    saved = (_pure._buffer, _pure._enabled, _pure._limits)
    _core.initialize_context()
    _pure.set_limits(lim)
    # the pure functions read _pure's globals; the C ones what sync() gave them
    _pure._buffer = r.buffer
    _pure._enabled = True
    if core == "c":
        _speedups.sync(True, r.buffer, lim, _pure._fast_limits(lim))
    try:
        for op in sequence:
            r.apply(op)
        r.log.append(("read", r.events(r.buffer.read_batch(0, 1000))))
        r.log.append(("rest", r.records(r.buffer.drain_records())))
        stats = r.buffer.stats()
        r.log.append(("stats", stats))
        r.log.append(("errors", _core.internal_errors()[0]))
    finally:
        _pure._buffer, _pure._enabled = saved[0], saved[1]
        _pure.set_limits(saved[2])
        _core.initialize_context()
    return r


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sequence=ops,
    lim=limits,
    size=st.sampled_from([4, 16, 256]),
    strategy=st.sampled_from(["drop_oldest", "drop_newest"]),
)
def test_both_cores_return_record_and_count_the_same(
    sequence: list[Any], lim: Limits, size: int, strategy: str
) -> None:
    tidescope.stop()
    errors_before = _core.internal_errors()[0]
    py = run("python", sequence, lim, size, strategy)
    errors_mid = _core.internal_errors()[0]
    c = run("c", sequence, lim, size, strategy)
    errors_after = _core.internal_errors()[0]
    # internal errors are counted the same way (compare the increments, not the totals)
    assert errors_after - errors_mid == errors_mid - errors_before
    strip = [x for x in py.log if x[0] != "errors"], [x for x in c.log if x[0] != "errors"]
    assert strip[0] == strip[1]


# -- the fast paths are the full snapshot's results ------------------------------------------

flat_items = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False),
    st.text(max_size=300),
    st.sampled_from([THING, b"x", 1j]),
)
flat = st.one_of(
    st.lists(flat_items, max_size=25),
    st.lists(flat_items, max_size=25).map(tuple),
    st.dictionaries(st.text(max_size=300), flat_items, max_size=25),
    flat_items,
)


def same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and repr(jsonable(a)) == repr(jsonable(b))


@settings(max_examples=400, deadline=None)
@given(value=flat, lim=limits)
def test_fast_paths_equal_the_full_snapshot_on_both_cores(value: Any, lim: Limits) -> None:
    full = Snapper(lim).snap(value)
    saved = _pure._limits
    _pure.set_limits(lim)
    try:
        assert same(_pure._snap_value(value, lim), full)
        if type(value) in (tuple, list, dict):
            snap, arity = _pure._snap_args(value, lim)
            assert same(snap, full) and arity == len(value)
        tidescope.start(buffer_size=16)
        _pure.set_limits(lim)
        buf = _core.get_buffer()
        assert buf is not None
        cid = _core.report_function_entry("m", "f", value)
        _core.report_function_exit(cid, value)
        entry, exit_ = buf.drain()
        if type(value) in (tuple, list, dict):
            assert same(entry.data["args"], full)
        assert same(exit_.data["return_value"], full)
    finally:
        tidescope.stop()
        _pure.set_limits(saved)


def test_fast_paths_respect_the_byte_budget() -> None:
    lim = Limits(max_event_bytes=4096)
    args = tuple("x" * 250 for _ in range(20))  # 20 x 258 bytes: over 4 KiB
    assert Snapper(lim).snap(args) != args  # the full snapshot cuts it
    tidescope.start(buffer_size=16)
    buf = _core.get_buffer()
    assert buf is not None
    cid = _core.report_function_entry("m", "f", args)
    _core.report_function_exit(cid, list(args))
    entry, exit_ = buf.drain()
    assert same(entry.data["args"], Snapper(lim).snap(args))
    assert same(exit_.data["return_value"], Snapper(lim).snap(list(args)))


# -- leaks -------------------------------------------------------------------------------------


def test_a_million_reports_leak_no_references_and_no_memory() -> None:
    module, function = "leak.module", "leak_function"
    args = (1, "two", 3.0)
    result = 10**12  # not a cached small int
    big = [1, 2, {"a": "b"}]  # takes the full snapshot path
    errors_at_start = _core.internal_errors()[0]
    tidescope.start(buffer_size=1 << 12)
    watched = [module, function, args, result, big]

    def burst(n: int) -> None:
        entry, exit_ = _core.report_function_entry, _core.report_function_exit
        for i in range(n):
            cid = entry(module, function, args if i % 10 else big)
            exit_(cid, result if i % 7 else big)

    burst(20_000)  # warm up: caches, the ring's slots all used once
    buf = _core.get_buffer()
    assert buf is not None
    buf.drain()
    # the ring holds the same number of events as before the burst: nothing more is kept
    assert_keeps_nothing(burst, 1_000_000, watched, after=buf.drain)
    stats = tidescope.stop()
    assert stats["internal_errors"] == errors_at_start  # counted per process


def test_destroying_a_ring_releases_what_its_slots_held() -> None:
    marker = Thing(1)
    buf = CRing(8)
    for _ in range(5):
        buf.write(marker)
    held = sys.getrefcount(marker)
    assert held >= 6
    buf.destroy()
    assert sys.getrefcount(marker) == held - 5
    buf2 = CRing(8)
    buf2.write(marker)
    del buf2
    gc.collect()
    assert sys.getrefcount(marker) == held - 5


# -- 8 writers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["drop_oldest", "drop_newest", "block"])
def test_eight_writer_threads_on_the_c_report_path_keep_the_accounting_identity(
    strategy: str,
) -> None:
    errors_at_start = _core.internal_errors()[0]
    tidescope.start(buffer_size=1 << 10, overflow_strategy=strategy, block_timeout=0.001)
    buf = _core.get_buffer()
    assert buf is not None
    per_thread = 5000
    drained: list[Any] = []
    done = threading.Event()
    barrier = threading.Barrier(9)

    def writer(n: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            cid = _core.report_function_entry("w", f"t{n}", (n, i))
            _core.report_function_exit(cid, i)

    def drainer() -> None:
        barrier.wait()
        while not done.is_set():
            drained.extend(buf.drain(256))
        drained.extend(buf.drain())

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    d = threading.Thread(target=drainer)
    for t in (*threads, d):
        t.start()
    for t in threads:
        t.join()
    done.set()
    d.join()
    stats = buf.stats()
    assert stats["total_writes"] == 8 * per_thread * 2
    assert stats["total_writes"] == (
        stats["consumed_events"] + stats["dropped_events"] + stats["available_events"]
    )
    assert stats["consumed_events"] == len(drained)
    # every event drained is whole and in its writer's order
    last: dict[Any, int] = {}
    for e in drained:
        assert e.event_type in ("function_entry", "function_exit")
        if e.event_type == "function_entry":
            n, i = e.data["args"]
            assert e.data["function"] == f"t{n}"
            assert last.get(n, -1) < i
            last[n] = i
    assert math.isclose(len(drained) + stats["dropped_events"], 80_000)
    assert tidescope.stop()["internal_errors"] == errors_at_start  # counted per process


def test_reading_leaves_the_garbage_collector_as_it_was() -> None:
    buf = CRing(16)
    for i in range(20):
        buf.write(i)
    assert gc.isenabled()
    buf.read_batch(0, 100)
    buf.drain_records(3)
    assert gc.isenabled()
    gc.disable()
    try:
        assert len(buf.drain()) == 13
        assert not gc.isenabled()
    finally:
        gc.enable()


@settings(max_examples=400, deadline=None)
@given(value=values, lim=limits, budget=st.integers(-10, 6000))
def test_flat_snapshot_twins_agree_with_the_python_spec(
    value: Any, lim: Limits, budget: int
) -> None:
    from tidescope.capture import _snapshot

    strlen, items = lim.max_string, lim.max_items
    for int_limit in (1 << 63, 1 << int(strlen * 3.3219280948873626), 5):
        for depth in (0, 1, 2, 3):
            t = type(value)
            if t in (tuple, list, dict):
                want = _snapshot.flat_cost(value, t, strlen, int_limit, items, depth)
                got = _speedups.flat_cost(value, t, strlen, int_limit, items, depth)
                # the C twin leaves ints past 64 bits to the general path (-1 there)
                assert got == want or (got == -1 and big_int_in(value)), (got, want)
                if want >= 0:
                    assert same(
                        _speedups.flat_copy(value, depth), _snapshot.flat_copy(value, depth)
                    )
            data = value if t is dict else {"v": value, "k": "x"}
            want_p = _snapshot.flat_payload(data, strlen, int_limit, items, budget, depth)
            got_p = _speedups.flat_payload(data, strlen, int_limit, items, budget, depth)
            if got_p is None and want_p is not None:
                assert big_int_in(data)
                continue
            assert (got_p is None) == (want_p is None)
            if got_p is not None and want_p is not None:
                assert got_p[1] == want_p[1]
                assert repr(jsonable(got_p[0])) == repr(jsonable(want_p[0]))


def big_int_in(v: Any) -> bool:
    items = v.values() if type(v) is dict else v if type(v) in (tuple, list) else [v]
    return any(
        (type(a) is int and not -(2**63) < a < 2**63)
        or (type(a) in (tuple, list, dict) and big_int_in(a))
        for a in items
    )


def test_the_in_place_stack_is_on_where_its_layout_check_passes() -> None:
    # The check at import proves the mirrored context field is the mapping ContextVar.set
    # replaces, and that the walk finds values in it, on this interpreter; every CPython
    # with a GIL that we support passes it (if it failed, every push would be a new cell).
    import sysconfig

    in_place = not sysconfig.get_config_var("Py_GIL_DISABLED")
    enabled = _speedups.IN_PLACE_STACK
    assert enabled == int(in_place)
