"""Drain-plus-write throughput, and export speed and peak memory on a large trace.

    python bench/bench_export.py [--events 2000000] [--dir /tmp/tidescope-bench]

1. Drain + write: a full buffer of entry/exit events (3 scalar args, scalar return) is
   drained into a trace file by ``Drain.pump()``; events per second.
2. Export: a trace of ``--events`` events is written (by the same drain), then exported to
   Chrome JSON, then summarised, each in a fresh subprocess whose peak RSS is read from
   ``resource.getrusage``: memory must not grow with the trace, only with open calls.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import tidescope
from tidescope.capture import _core
from tidescope.export.drain import Drain


def fill(calls: int) -> None:
    entry, exit_ = _core.report_function_entry, _core.report_function_exit
    for i in range(calls):
        exit_(entry("bench", "work", (i, "x", 2.0)), i)


def drain_throughput(directory: Path, size: int, rounds: int) -> list[float]:
    rates = []
    session = tidescope.start(buffer_size=size)
    drain = Drain(directory)
    for _ in range(rounds):
        fill(size // 2)
        t0 = time.perf_counter()
        n = drain.pump()
        rates.append(n / (time.perf_counter() - t0))
    drain.stop(session.stop())
    return rates


def make_trace(directory: Path, events: int) -> float:
    size = 1 << 16
    session = tidescope.start(buffer_size=size)
    drain = Drain(directory)
    t0 = time.perf_counter()
    for _ in range(events // size):
        fill(size // 2)
        drain.pump()
    drain.stop(session.stop())
    return time.perf_counter() - t0


HWM = """
def _hwm_kib():
    # VmHWM resets at exec; ru_maxrss is inherited from the forking parent
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0
"""

CHILD = (
    HWM
    + """
import sys, time, io
from tidescope.export.chrome import write_chrome
from tidescope.export.summary import summarize
d, what = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if what == "chrome":
    with open(d + "/trace.chrome.json", "w") as out:
        n = write_chrome(d, out)
else:
    n = summarize(d)["events"]
dt = time.perf_counter() - t0
print(n, dt, _hwm_kib())
"""
)


def measure_child(directory: Path, what: str) -> tuple[int, float, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(directory), what],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    n, dt, rss = out.stdout.split()
    return int(n), float(dt), int(rss)


def baseline_rss() -> int:
    out = subprocess.run(
        [sys.executable, "-c", HWM + "import tidescope.export.chrome, tidescope.export.summary\n"
         "print(_hwm_kib())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--dir", default="/tmp/tidescope-bench")
    opts = ap.parse_args()
    root = Path(opts.dir)
    shutil.rmtree(root, ignore_errors=True)
    rates = drain_throughput(root / "drain", 1 << 16, 5)
    rates.sort()
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, "
        f"core {tidescope.core_info()['core']}, orjson "
        f"{'yes' if 'orjson' in sys.modules else 'no'}"
    )
    print(
        f"drain+write: median {rates[len(rates) // 2] / 1e6:.3f} M events/s "
        f"(min {rates[0] / 1e6:.3f}, max {rates[-1] / 1e6:.3f}) over {len(rates)} passes of 65536"
    )
    trace = root / "trace"
    secs = make_trace(trace, opts.events)
    size = sum(p.stat().st_size for p in trace.glob("events-*.tstrace"))
    count = opts.events // (1 << 16) * (1 << 16)
    print(f"trace: {count} events, {size / 1e6:.1f} MB, recorded+written in {secs:.1f} s")
    base = baseline_rss()
    for what in ("chrome", "summary"):
        n, dt, rss = measure_child(trace, what)
        print(
            f"{what}: {n} records in {dt:.1f} s ({n / dt / 1e6:.3f} M/s), "
            f"peak RSS {rss / 1024:.0f} MiB (interpreter + modules alone: {base / 1024:.0f} MiB)"
        )
    print(f"python: {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
