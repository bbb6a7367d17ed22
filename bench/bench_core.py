"""Micro-benchmarks of the capture core's hot path, as ratios to a plain call in the same run.

    python bench/bench_core.py [--rounds 9] [--n 200000]

Each case is timed in several rounds, the cases interleaved within a round (the machine's
speed drifts), and each round keeps its best of three repeats; the table gives the median
over rounds in ns per operation and as a ratio to an empty three-argument Python call.
Memory per buffered event is measured with tracemalloc after filling a buffer.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable

import tidescope
from tidescope.capture import _core

entry = _core.report_function_entry
exit_ = _core.report_function_exit


def plain(a: int, b: str, c: float) -> int:
    return a


def instrumented(a: int, b: str, c: float) -> int:
    cid = entry("bench", "instrumented", (a, b, c))
    r = a
    exit_(cid, r)
    return r


def loop_of(fn: Callable[[int, str, float], int], n: int) -> Callable[[], None]:
    def run() -> None:
        for i in range(n):
            fn(i, "x", 2.0)

    return run


def time_once(run: Callable[[], None], n: int) -> float:
    gc.collect()
    t0 = time.perf_counter_ns()
    run()
    return (time.perf_counter_ns() - t0) / n


def fill(buf: tidescope.RingBuffer, calls: int, scalar_args: bool = True) -> None:
    """Record ``calls`` entry/exit pairs into ``buf`` through the report path: three scalar
    arguments (a tuple the event keeps) and an int result, or no arguments at all."""
    with tidescope.capture(buffer_size=8) as cap:
        assert cap.session is not None
        _core.register_buffer(buf)
        if scalar_args:
            for i in range(calls):
                exit_(entry("bench", "f", (i, "x", 2.0)), i)
        else:
            for i in range(calls):
                exit_(entry("bench", "f", None), i)


def bench_write(n: int) -> Callable[[], None]:
    buf = tidescope.RingBuffer(1 << 16)
    ev = object()

    def run() -> None:
        w = buf.write
        for _ in range(n):
            w(ev)

    return run


def bench_drain(n: int) -> Callable[[], None]:
    size = 1 << 16
    buf = tidescope.RingBuffer(size)
    fill(buf, size // 2)

    def run() -> None:
        # re-read the same full buffer: a non-consuming read builds every Event
        got = 0
        pos = buf.write_position - size
        while got < n:
            events, pos2 = buf.read_batch(pos, 4096)
            got += len(events)
            pos = pos2 if pos2 < buf.write_position else buf.write_position - size

    return run


def memory_per_event(n: int = 1 << 16, scalar_args: bool = True) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    buf = tidescope.RingBuffer(n)
    fill(buf, n // 2, scalar_args)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del buf
    return (after - before) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--n", type=int, default=200_000)
    opts = ap.parse_args()
    n = opts.n
    cases: dict[str, tuple[Callable[[], None], int]] = {
        "plain 3-arg call": (loop_of(plain, n), n),
        "entry+exit, 3 scalar args, enabled": (loop_of(instrumented, n), n),
        "RingBuffer.write": (bench_write(n), n),
        "read_batch into Event objects": (bench_drain(n), n),
    }
    session = tidescope.start(buffer_size=1 << 16)
    disabled = loop_of(instrumented, n)
    results: dict[str, list[float]] = {k: [] for k in [*cases, "entry+exit, capture disabled"]}
    for r in range(opts.rounds):
        order = list(cases.items())
        order = order[r % len(order) :] + order[: r % len(order)]
        for name, (run, count) in order:
            results[name].append(min(time_once(run, count) for _ in range(3)))
        _core.set_enabled(False)
        results["entry+exit, capture disabled"].append(
            min(time_once(disabled, n) for _ in range(3))
        )
        _core.set_enabled(True)
        session.buffer.drain()  # type: ignore[union-attr]
    tidescope.stop()
    base = statistics.median(results["plain 3-arg call"])
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, core "
        f"{tidescope.core_info()['core']}, {platform.machine()}, rounds {opts.rounds}, n {n}"
    )
    print("| case | ns/op (median) | min-max over rounds | ratio to plain call |")
    print("|---|---|---|---|")
    for name, vals in results.items():
        med = statistics.median(vals)
        extra = ""
        if name.startswith("read_batch"):
            extra = f" ({1e9 / med / 1e6:.2f} M events/s)"
        print(
            f"| {name} | {med:.0f}{extra} | {min(vals):.0f}-{max(vals):.0f} | {med / base:.1f}x |"
        )
    print(
        "\nmemory per buffered event (tracemalloc, a full ring of entry/exit pairs): "
        f"{memory_per_event():.0f} bytes with a 3-scalar argument tuple kept, "
        f"{memory_per_event(scalar_args=False):.0f} bytes holding no container"
    )
    print(f"python: {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
