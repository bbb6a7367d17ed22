"""Macro benchmarks: whole workloads untraced, under cProfile, VizTracer and tidescope.

    python bench/bench_macro.py [--rounds 9]       # one child process per core in CORES
    python bench/bench_macro.py --in-process ...    # only the core this process picked

Three workloads (issue 3): ``fib(24)``; a mixed one (small functions with a few arguments,
exceptions raised and caught, lists and dicts built); an asyncio one (gathers of a few
hundred tasks awaiting small coroutines). Each exists three times: plain (in
``macro_workloads.py``); instrumented by hand the way the instrumenter does it (entry with
the arguments as a tuple, exit with the return value, or with the exception and
``exit_reason="exception"``, the ids joined); and instrumented by the import hook's
rewriter (issue 4): ``macro_workloads.py``'s source through
``tidescope.instrument.rewrite_source(..., level="calls")``, compiled and exec'd into a
fresh namespace (arguments bound to their names in a dict, node ids, exit in ``finally``).

Configurations, timed side by side in one process: the plain workload untraced, under
cProfile and under VizTracer (every call recorded, ``ignore_c_function=True``, the buffer
discarded after ``stop()``, never saved); the instrumented workload with tidescope capturing
into a ``1 << 20`` ring (drained after each run, outside the timing) and with capture off;
the hook-instrumented workload capturing into the same ring, drained the same way.
Each round runs every configuration once per workload, in an order rotated every round
(the machine's speed drifts); the tables give the median over rounds, the slowdown against
the untraced median, and ``(median - untraced median) / calls`` in ns per traced call,
where ``calls`` is the number of instrumented calls of the workload, counted exactly.
Memory per buffered event is measured with tracemalloc over a full ring.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import macro_workloads
from bench_core import memory_per_event  # bench/ is sys.path[0] when run as a script
from macro_workloads import NAMES, ValidationError, amain, fib, mixed

import tidescope
from tidescope.capture import _core
from tidescope.events import EventType
from tidescope.instrument import rewrite_source

try:
    import viztracer
    from viztracer import VizTracer
except ImportError as _exc:  # the bench extra is not installed on this Python
    VizTracer = None
    VIZTRACER_NOTE = f"VizTracer not available on this Python ({_exc}): its rows are skipped"
else:
    VIZTRACER_NOTE = f"VizTracer {viztracer.__version__}"

# Cores measured by the default (parent) mode, each in its own process: TIDESCOPE_CORE is
# read at import. Add "c" here when tidescope.capture._speedups lands.
CORES = ("c", "python")

VIZ_ENTRIES = 2_000_000
BUFFER_SIZE = 1 << 20
MOD = "bench_macro"

# As the rewriter emits it: the module's own copy of the capture flag, kept current by _rt;
# with it off, a function runs a copy of its body with no report (one global test).
from tidescope.instrument import _rt as rt  # noqa: E402

__tidescope_on__ = rt.track(globals())

entry = _core.report_function_entry
exit_ = _core.report_function_exit


# ---------------------------------------------------------------------------------------
# the workloads instrumented by hand (the plain ones are in macro_workloads.py)


def fib_i(n: int) -> int:
    if not __tidescope_on__:  # capture off: the body's copy without reports, as rewritten
        r = n if n < 2 else fib_i(n - 1) + fib_i(n - 2)
        return r
    cid = entry(MOD, "fib", (n,)) if __tidescope_on__ else None
    try:
        r = n if n < 2 else fib_i(n - 1) + fib_i(n - 2)
    except BaseException as e:
        exit_(cid, e, exit_reason="exception")
        raise
    if cid is not None:
        exit_(cid, r)
    return r


def validate_i(name: str, qty: int) -> int:
    if not __tidescope_on__:  # capture off: the body's copy without reports, as rewritten
        if qty <= 0:
            raise ValidationError(name)
        r = qty
        return r
    cid = entry(MOD, "validate", (name, qty)) if __tidescope_on__ else None
    try:
        if qty <= 0:
            raise ValidationError(name)
        r = qty
    except BaseException as e:
        exit_(cid, e, exit_reason="exception")
        raise
    if cid is not None:
        exit_(cid, r)
    return r


def price_i(name: str, qty: int, unit: float) -> float:
    if not __tidescope_on__:  # capture off: the body's copy without reports, as rewritten
        r = validate_i(name, qty) * unit
        return r
    cid = entry(MOD, "price", (name, qty, unit)) if __tidescope_on__ else None
    try:
        r = validate_i(name, qty) * unit
    except BaseException as e:
        exit_(cid, e, exit_reason="exception")
        raise
    if cid is not None:
        exit_(cid, r)
    return r


def make_line_i(i: int, name: str, qty: int) -> dict[str, Any]:
    if not __tidescope_on__:  # capture off: the body's copy without reports, as rewritten
        unit = 1.5 + i % 3
        try:
            total = price_i(name, qty, unit)
        except ValidationError:
            total = 0.0
        r = {"i": i, "name": name, "qty": qty, "total": total}
        return r
    cid = entry(MOD, "make_line", (i, name, qty)) if __tidescope_on__ else None
    try:
        unit = 1.5 + i % 3
        try:
            total = price_i(name, qty, unit)
        except ValidationError:
            total = 0.0
        r = {"i": i, "name": name, "qty": qty, "total": total}
    except BaseException as e:
        exit_(cid, e, exit_reason="exception")
        raise
    if cid is not None:
        exit_(cid, r)
    return r


def tally_i(counts: dict[str, int], key: str) -> int:
    if not __tidescope_on__:  # capture off: the body's copy without reports, as rewritten
        n = counts.get(key, 0) + 1
        counts[key] = n
        return n
    cid = entry(MOD, "tally", (counts, key)) if __tidescope_on__ else None
    try:
        n = counts.get(key, 0) + 1
        counts[key] = n
    except BaseException as e:
        exit_(cid, e, exit_reason="exception")
        raise
    if cid is not None:
        exit_(cid, n)
    return n


def window_i(lines: list[dict[str, Any]], k: int) -> list[float]:
    if not __tidescope_on__:  # capture off: the body's copy without reports, as rewritten
        out = []
        for line in lines[-k:]:
            out.append(line["total"])  # noqa: PERF401 - a comprehension is a call on 3.11
        return out
    cid = entry(MOD, "window", (lines, k)) if __tidescope_on__ else None
    try:
        out = []
        for line in lines[-k:]:
            out.append(line["total"])
    except BaseException as e:
        exit_(cid, e, exit_reason="exception")
        raise
    if cid is not None:
        exit_(cid, out)
    return out


def mixed_i(n: int) -> tuple[int, int, float]:
    if not __tidescope_on__:  # capture off: the body's copy without reports, as rewritten
        counts: dict[str, int] = {}
        lines: list[dict[str, Any]] = []
        acc = 0.0
        for i in range(n):
            name = NAMES[i % len(NAMES)]
            lines.append(make_line_i(i, name, i % 7 - 1))
            tally_i(counts, name)
            if i % 10 == 0:
                acc += sum(window_i(lines, 5))
        r = (len(lines), len(counts), acc)
        return r
    cid = entry(MOD, "mixed", (n,)) if __tidescope_on__ else None
    try:
        counts: dict[str, int] = {}
        lines: list[dict[str, Any]] = []
        acc = 0.0
        for i in range(n):
            name = NAMES[i % len(NAMES)]
            lines.append(make_line_i(i, name, i % 7 - 1))
            tally_i(counts, name)
            if i % 10 == 0:
                acc += sum(window_i(lines, 5))
        r = (len(lines), len(counts), acc)
    except BaseException as e:
        exit_(cid, e, exit_reason="exception")
        raise
    if cid is not None:
        exit_(cid, r)
    return r


async def fetch_i(i: int) -> int:
    if not __tidescope_on__:  # capture off: the body's copy without reports, as rewritten
        await asyncio.sleep(0)
        r = i % 97
        return r
    cid = entry(MOD, "fetch", (i,)) if __tidescope_on__ else None
    try:
        await asyncio.sleep(0)
        r = i % 97
    except BaseException as e:
        exit_(cid, e, exit_reason="exception")
        raise
    if cid is not None:
        exit_(cid, r)
    return r


async def scale_i(x: int, k: int) -> int:
    if not __tidescope_on__:  # capture off: the body's copy without reports, as rewritten
        r = x * k
        return r
    cid = entry(MOD, "scale", (x, k)) if __tidescope_on__ else None
    try:
        r = x * k
    except BaseException as e:
        exit_(cid, e, exit_reason="exception")
        raise
    if cid is not None:
        exit_(cid, r)
    return r


async def job_i(i: int) -> int:
    if not __tidescope_on__:  # capture off: the body's copy without reports, as rewritten
        a = await fetch_i(i)
        b = await scale_i(a, 3)
        r = a + b
        return r
    cid = entry(MOD, "job", (i,)) if __tidescope_on__ else None
    try:
        a = await fetch_i(i)
        b = await scale_i(a, 3)
        r = a + b
    except BaseException as e:
        exit_(cid, e, exit_reason="exception")
        raise
    if cid is not None:
        exit_(cid, r)
    return r


async def batch_i(first: int, n: int) -> int:
    if not __tidescope_on__:  # capture off: the body's copy without reports, as rewritten
        coros = []
        for i in range(first, first + n):
            coros.append(job_i(i))  # noqa: PERF401
        total = 0
        for r in await asyncio.gather(*coros):
            total += r
        return total
    cid = entry(MOD, "batch", (first, n)) if __tidescope_on__ else None
    try:
        coros = []
        for i in range(first, first + n):
            coros.append(job_i(i))
        total = 0
        for r in await asyncio.gather(*coros):
            total += r
    except BaseException as e:
        exit_(cid, e, exit_reason="exception")
        raise
    if cid is not None:
        exit_(cid, total)
    return total


async def amain_i(batches: int, n: int) -> int:
    if not __tidescope_on__:  # capture off: the body's copy without reports, as rewritten
        total = 0
        for b in range(batches):
            total += await batch_i(b * n, n)
        return total
    cid = entry(MOD, "amain", (batches, n)) if __tidescope_on__ else None
    try:
        total = 0
        for b in range(batches):
            total += await batch_i(b * n, n)
    except BaseException as e:
        exit_(cid, e, exit_reason="exception")
        raise
    if cid is not None:
        exit_(cid, total)
    return total


# ---------------------------------------------------------------------------------------
# harness


@dataclass
class Workload:
    name: str
    plain: Callable[[], Any]
    instrumented: Callable[[], Any]
    hooked: Callable[[], Any]
    calls: int = 0  # instrumented calls per run, counted
    raised: int = 0  # of which exited with an exception
    seen: dict[str, int] = field(default_factory=dict)  # calls each tracer recorded
    hook_check: str = ""  # the hook version's events, checked against the hand counts


HOOK_LEVEL = "calls"


def hooked_namespace() -> dict[str, Any]:
    """``macro_workloads`` rewritten by the import hook's rewriter, exec'd in a fresh dict."""
    path = macro_workloads.__file__
    assert path is not None
    with open(path, encoding="utf-8") as f:
        source = f.read()
    tree, records = rewrite_source(source, path, "macro_workloads", level=HOOK_LEVEL)
    assert records, "the rewriter returned no node records"
    code = compile(tree, path, "exec", dont_inherit=True)
    ns: dict[str, Any] = {"__name__": "macro_workloads", "__file__": path}
    exec(code, ns)
    return ns


def workloads(mixed_n: int, tasks: int, batches: int) -> list[Workload]:
    h = hooked_namespace()
    return [
        Workload("fib(24)", lambda: fib(24), lambda: fib_i(24), lambda: h["fib"](24)),
        Workload(
            f"mixed({mixed_n})",
            lambda: mixed(mixed_n),
            lambda: mixed_i(mixed_n),
            lambda: h["mixed"](mixed_n),
        ),
        Workload(
            f"asyncio {batches}x gather({tasks})",
            lambda: asyncio.run(amain(batches, tasks)),
            lambda: asyncio.run(amain_i(batches, tasks)),
            lambda: asyncio.run(h["amain"](batches, tasks)),
        ),
    ]


def count_calls(w: Workload) -> None:
    """Run the instrumented version once with counting reporters; check the result."""
    global entry, exit_
    n = [0, 0, 0]

    def c_entry(
        module: Any, function: Any, args: Any, *, ast_node_id: Any = None, call_id: Any = None
    ) -> int:
        n[0] += 1
        return n[0]

    def c_exit(
        call_id: Any,
        return_value: Any,
        duration_ns: Any = None,
        *,
        exit_reason: str = "normal",
        ast_node_id: Any = None,
    ) -> bool:
        n[1] += 1
        n[2] += exit_reason != "normal"
        return True

    entry, exit_ = c_entry, c_exit
    try:
        got = w.instrumented()
    finally:
        entry, exit_ = _core.report_function_entry, _core.report_function_exit
    assert n[0] == n[1], f"{w.name}: {n[0]} entries but {n[1]} exits"
    assert got == w.plain(), f"{w.name}: instrumented result differs from plain"
    w.calls, w.raised = n[0], n[2]


def check_hooked(w: Workload, session: tidescope.Session) -> None:
    """Run the hook version once capturing; its events must match the hand counts."""
    buf = session.buffer
    assert buf is not None
    _core.set_enabled(True)
    buf.drain()
    got = w.hooked()
    events = buf.drain()
    entries = sum(e.event_type == EventType.FUNCTION_ENTRY for e in events)
    exits = [e for e in events if e.event_type == EventType.FUNCTION_EXIT]
    raised = sum(e.data.get("exit_reason") != "normal" for e in exits)
    other = len(events) - entries - len(exits)
    ok = (entries, len(exits), raised, other) == (w.calls, w.calls, w.raised, 0)
    w.hook_check = (
        f"{'as expected' if ok else 'NOT AS EXPECTED'}: {entries:,} entries, "
        f"{len(exits):,} exits ({raised:,} not normal), {other:,} other events; "
        f"hand version: {w.calls:,} calls ({w.raised:,} raising)"
    )
    assert got == w.plain(), f"{w.name}: hook-instrumented result differs from plain"


class Timer:
    """One configuration: ``run(w)`` times one execution of workload ``w`` in ns."""

    name = ""

    def run(self, w: Workload) -> int:
        raise NotImplementedError

    @staticmethod
    def timed(fn: Callable[[], Any]) -> int:
        t0 = time.perf_counter_ns()
        fn()
        return time.perf_counter_ns() - t0


class Plain(Timer):
    name = "no tracing"

    def run(self, w: Workload) -> int:
        return self.timed(w.plain)


class Profile(Timer):
    name = "cProfile"

    def run(self, w: Workload) -> int:
        prof = cProfile.Profile()
        prof.enable()
        t = self.timed(w.plain)
        prof.disable()
        return t

    def seen(self, w: Workload) -> int:
        prof = cProfile.Profile()
        prof.enable()
        w.plain()
        prof.disable()
        return int(pstats.Stats(prof).total_calls)


class Viz(Timer):
    name = "VizTracer"

    def __init__(self) -> None:
        assert VizTracer is not None
        self.tracer = VizTracer(tracer_entries=VIZ_ENTRIES, ignore_c_function=True, verbose=0)
        # On 3.11 the constructor leaves its profile hook installed (idle, yet it slows every
        # call about 2x) until the first start()/stop(): remove it before anything is timed.
        self.tracer.start()
        self.tracer.stop()
        self.tracer.clear()

    def run(self, w: Workload) -> int:
        self.tracer.start()
        t = self.timed(w.plain)
        self.tracer.stop()
        self.tracer.clear()  # discard: nothing is parsed or saved
        return t

    def seen(self, w: Workload) -> int:
        tr = self.tracer
        tr.start()
        w.plain()
        tr.stop()
        count = int(tr.parse())
        tr.clear()
        tr.parsed = False
        assert count < VIZ_ENTRIES, "VizTracer's buffer wrapped: raise VIZ_ENTRIES"
        return count


class Tidescope(Timer):
    def __init__(self, session: tidescope.Session, core: str) -> None:
        self.session = session
        self.name = f"tidescope {core} core"
        self.drained: list[tuple[str, int, int]] = []  # (workload, events, expected)

    def run(self, w: Workload) -> int:
        _core.set_enabled(True)
        t = self.timed(w.instrumented)
        buf = self.session.buffer
        assert buf is not None
        self.drained.append((w.name, len(buf.drain()), 2 * w.calls))  # outside the timing
        return t


class Hook(Tidescope):
    """The hook-instrumented workload capturing into the same ring, drained the same way."""

    def __init__(self, session: tidescope.Session) -> None:
        super().__init__(session, "")
        self.name = f"tidescope, import hook ({HOOK_LEVEL} level)"

    def run(self, w: Workload) -> int:
        _core.set_enabled(True)
        t = self.timed(w.hooked)
        buf = self.session.buffer
        assert buf is not None
        self.drained.append((w.name, len(buf.drain()), 2 * w.calls))  # outside the timing
        return t


class TidescopeNoGC(Tidescope):
    """Diagnostic: the same with the cyclic GC paused, to show what the ring's tuples cost it."""

    def __init__(self, session: tidescope.Session, core: str) -> None:
        super().__init__(session, core)
        self.name = f"tidescope {core} core, gc paused (diagnostic)"

    def run(self, w: Workload) -> int:
        gc.disable()
        try:
            return super().run(w)
        finally:
            gc.enable()


class Off(Timer):
    def __init__(self, core: str) -> None:
        self.name = f"tidescope {core} core, capture off"

    def run(self, w: Workload) -> int:
        _core.set_enabled(False)
        try:
            return self.timed(w.instrumented)
        finally:
            _core.set_enabled(True)


def memory_per_fib_event() -> float:
    """Bytes per event of instrumented fib over a full 65536-slot ring (tracemalloc)."""
    size = 1 << 16
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    buf = tidescope.RingBuffer(size)
    with tidescope.capture(buffer_size=8):
        _core.register_buffer(buf)
        fib_i(22)  # 57,313 calls: 114,626 events, so the ring is full
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(buf) == size, len(buf)
    del buf
    return (after - before) / size


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def measure(opts: argparse.Namespace) -> None:
    started = time.monotonic()
    info = tidescope.core_info()
    core = info["core"]
    want = os.environ.get("TIDESCOPE_CORE")
    if want and want != core:
        sys.exit(f"asked for TIDESCOPE_CORE={want} but the {core} core was loaded")
    args = [a for a in sys.argv[1:] if a != "--in-process"]
    command = " ".join([os.path.relpath(sys.executable), os.path.relpath(sys.argv[0]), *args])
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, tidescope "
        f"{core} core ({info['reason']}); {VIZTRACER_NOTE}\n# {machine()}\n"
        f"# rounds {opts.rounds}; command: {command}"
    )
    ws = workloads(opts.mixed, opts.tasks, opts.batches)
    session = tidescope.start(buffer_size=BUFFER_SIZE)
    ts = Tidescope(session, core)
    prof = Profile()
    viz = Viz() if VizTracer is not None else None
    nogc = TidescopeNoGC(session, core)
    hook = Hook(session)
    timers: list[Timer] = [Plain(), prof, *([viz] if viz else []), ts, hook, Off(core)]
    if opts.gc_diagnostic:
        timers.append(nogc)
    # counting pass, which is also the warm-up of every configuration
    for w in ws:
        count_calls(w)
        check_hooked(w, session)
        w.seen["cProfile"] = prof.seen(w)
        if viz is not None:
            w.seen["VizTracer"] = viz.seen(w)
        for t in timers:
            t.run(w)
    # Time tidescope in its steady state: the ring full, each new slot replacing an old one
    # (drain() consumes but leaves the slots in place, so what the GC sees stays the same).
    buf = session.buffer
    assert buf is not None
    while buf.write_position < BUFFER_SIZE:
        fib_i(20)
    buf.drain()
    ts.drained.clear()
    hook.drained.clear()
    nogc.drained.clear()
    results: dict[tuple[str, str], list[int]] = {}
    for r in range(opts.rounds):
        k = r % len(timers)
        order = timers[k:] + timers[:k]
        for w in ws:
            for t in order:
                if sys.getprofile() is not None or sys.gettrace() is not None:
                    sys.exit(f"a profile or trace hook leaked into the {t.name} run")
                gc.collect()
                results.setdefault((w.name, t.name), []).append(t.run(w))
        if opts.verbose:
            print(f"round {r + 1} done at {time.monotonic() - started:.0f} s", file=sys.stderr)
    tidescope.stop()
    bad = [d for d in ts.drained + hook.drained + nogc.drained if d[1] != d[2]]
    errors = _core.internal_errors()[0]

    print("\n| workload | configuration | median ms | min-max ms | vs no tracing | ns/call |")
    print("|---|---|---|---|---|---|")
    for w in ws:
        base = statistics.median(results[(w.name, "no tracing")])
        for t in timers:
            vals = results[(w.name, t.name)]
            med = statistics.median(vals)
            per_call = "" if t.name == "no tracing" else f"{(med - base) / w.calls:.0f}"
            print(
                f"| {w.name} | {t.name} | {med / 1e6:.1f} | {min(vals) / 1e6:.1f}-"
                f"{max(vals) / 1e6:.1f} | {med / base:.2f}x | {per_call} |"
            )
    print("\nCalls per run (ns/call divides by the instrumented calls):")
    for w in ws:
        seen = ", ".join(f"{k} recorded {v:,}" for k, v in w.seen.items())
        print(f"- {w.name}: {w.calls:,} instrumented calls ({w.raised:,} raising); {seen}")
    if viz is not None:
        print("\ntidescope / VizTracer per call (issue 3 target for the pure core: <= 3x):")
        for w in ws:
            base = statistics.median(results[(w.name, "no tracing")])
            mine = (statistics.median(results[(w.name, ts.name)]) - base) / w.calls
            extra = statistics.median(results[(w.name, "VizTracer")]) - base
            theirs, recorded = extra / w.calls, extra / w.seen["VizTracer"]
            print(
                f"- {w.name}: {mine:.0f} / {theirs:.0f} ns = {mine / theirs:.1f}x "
                f"(VizTracer per call it recorded: {recorded:.0f} ns, {mine / recorded:.1f}x)"
            )
    else:
        print(f"\n{VIZTRACER_NOTE}")
    print("\nImport hook (calls level) vs hand-instrumented, ns per call (capture on):")
    for w in ws:
        base = statistics.median(results[(w.name, "no tracing")])
        hand = (statistics.median(results[(w.name, ts.name)]) - base) / w.calls
        mine = (statistics.median(results[(w.name, hook.name)]) - base) / w.calls
        versus = ""
        if viz is not None:
            theirs = (statistics.median(results[(w.name, "VizTracer")]) - base) / w.calls
            versus = f"; hook / VizTracer {mine / theirs:.1f}x"
        print(f"- {w.name}: {mine:.0f} / {hand:.0f} ns = {mine / hand:.2f}x{versus}")
    print("\nImport hook events per workload (one capturing run, checked by type):")
    for w in ws:
        print(f"- {w.name}: {w.hook_check}")
    print(
        f"\nevents drained per tidescope run: {bad or 'all as expected'}; internal errors: {errors}"
    )
    print(
        "memory per buffered event (tracemalloc, full 65536-slot ring): "
        f"{memory_per_event():.0f} bytes (entry/exit pairs, 3 scalar args; bench_core), "
        f"{memory_per_fib_event():.0f} bytes (instrumented fib)"
    )
    print(f"wall time {time.monotonic() - started:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--mixed", type=int, default=20_000, help="iterations of the mixed workload")
    ap.add_argument("--tasks", type=int, default=300, help="tasks per gather")
    ap.add_argument("--batches", type=int, default=10, help="gathers per asyncio run")
    ap.add_argument(
        "--gc-diagnostic",
        action="store_true",
        help="add a tidescope row with the cyclic GC paused during the timed run",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    ap.add_argument(
        "--in-process", action="store_true", help="measure only the core this process picked"
    )
    opts = ap.parse_args()
    if opts.in_process:
        measure(opts)
        return
    args = [a for a in sys.argv[1:] if a != "--in-process"]
    for core in CORES:
        env = {**os.environ, "TIDESCOPE_CORE": core}
        sys.stdout.flush()
        done = subprocess.run(
            [sys.executable, __file__, "--in-process", *args], env=env, check=False
        )
        if done.returncode:
            sys.exit(f"the {core} core's run failed (exit {done.returncode})")
        print()


if __name__ == "__main__":
    main()
