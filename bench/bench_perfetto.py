"""Perfetto export throughput and peak memory on a recorded trace, reader and encoder apart.

    python bench/bench_perfetto.py [--fib 27] [--dir /tmp/tidescope-perfetto] [--rounds 3]

A fib-like script is recorded with ``tidescope run`` (a ring large enough to drop nothing;
fib(27) is 1.27 M events), unless ``--dir`` already holds a trace. Then, each in a fresh
subprocess, rounds interleaved, CPU time (user + sys, ``os.times``) and peak RSS (VmHWM):

- ``read``: iterate the trace's records through the reader, nothing else;
- ``perfetto``: ``tidescope export --format perfetto`` (reader + encoder + file write);
- ``chrome``: ``tidescope export --format chrome``, for comparison.

The encoder's share is ``perfetto - read``. Figures are the median over rounds.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

FIB = """
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

fib({n})
"""

MEASURE = """
import os, sys, runpy
def hwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0
t0 = os.times()
what, directory = sys.argv[1], sys.argv[2]
n = 0
if what == "read":
    from tidescope.export.reader import read_trace, trace_files
    for path in trace_files(directory):
        for rec in read_trace(path):
            n += "event_type" in rec
else:
    from tidescope.cli import main
    main(["export", directory, "--format", what])
t1 = os.times()
print(n, (t1.user - t0.user) + (t1.system - t0.system), hwm_kib())
"""


def measure(what: str, directory: Path) -> tuple[int, float, int]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, what, str(directory)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    n, cpu, kib = out.stdout.split()
    return int(n), float(cpu), int(kib)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fib", type=int, default=27)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/tidescope-perfetto"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    directory: Path = args.dir
    if not list(directory.glob("events-*")):
        directory.mkdir(parents=True, exist_ok=True)
        script = directory.parent / f"fib{args.fib}.py"
        script.write_text(textwrap.dedent(FIB.format(n=args.fib)))
        subprocess.run(
            [sys.executable, "-m", "tidescope", "run", "--buffer-size", str(1 << 23),
             "-o", str(directory), str(script)],
            check=True,
        )  # fmt: skip
    size = sum(p.stat().st_size for p in directory.glob("events-*"))
    print(f"CPython {platform.python_version()}, trace {directory} ({size / 1e6:.0f} MB)")
    results: dict[str, list[tuple[float, int]]] = {"read": [], "perfetto": [], "chrome": []}
    events = 0
    for _ in range(args.rounds):
        for what, runs in results.items():
            n, cpu, kib = measure(what, directory)
            events = max(events, n)
            runs.append((cpu, kib))
    out = directory / "trace.perfetto-trace"
    if out.exists():
        print(f"perfetto output: {out.stat().st_size / 1e6:.0f} MB")
    cpu = {what: statistics.median(c for c, _ in runs) for what, runs in results.items()}
    print(f"{events} events, median of {args.rounds} rounds (CPU s, M events/s, peak RSS MiB):")
    for what, runs in results.items():
        rss = max(k for _, k in runs) / 1024
        print(f"  {what:9} {cpu[what]:6.2f} s  {events / cpu[what] / 1e6:5.2f} M/s  {rss:5.0f}")
    enc = cpu["perfetto"] - cpu["read"]
    print(f"  encoder   {enc:6.2f} s  {events / enc / 1e6:5.2f} M/s  (perfetto - read)")


if __name__ == "__main__":
    main()
