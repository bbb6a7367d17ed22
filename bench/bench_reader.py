"""Reader throughput: ``read_trace``, ``TraceFile.events()`` and the exports, per decoder.

    python bench/bench_reader.py [--fib 27] [--dir /tmp/tidescope-reader] [--rounds 3]
                                 [--before SRC]

A fib script is recorded with ``tidescope run --level calls`` (C core, a ring large enough
to drop nothing; fib(27) is 1.27 M events) unless ``--dir`` already holds a trace. Then,
each in a fresh subprocess, rounds interleaved, CPU time (user + sys, ``os.times``):

- ``records``: iterate ``read_trace`` (dict records, what ``show`` and the exports read);
- ``events``: iterate ``TraceFile.events()`` (Event objects);
- ``perfetto`` / ``chrome``: ``tidescope export --format ...`` (reader + encoder + write);

for the C decoder (the default) and the pure one (``TIDESCOPE_CORE=python``) of this
checkout, and with ``--before SRC`` for another source tree too (``SRC`` is put first on
``PYTHONPATH``; e.g. ``git archive <commit> src | tar -x -C /tmp/base`` plus a built
``_speedups`` copied into it). Figures are the median over rounds, in M events/s of CPU.
"""

from __future__ import annotations

import argparse
import os
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
import os, sys
t0 = os.times()
what, directory = sys.argv[1], sys.argv[2]
n = 0
if what == "records":
    from tidescope.export.reader import read_trace, trace_files
    for path in trace_files(directory):
        for rec in read_trace(path):
            n += "event_type" in rec
elif what == "events":
    from tidescope.export.reader import TraceFile, trace_files
    for path in trace_files(directory):
        for ev in TraceFile(path).events():
            n += 1
else:
    from tidescope.cli import main
    main(["export", directory, "--format", what, "-o", os.devnull if what == "chrome" else
          os.path.join(directory, "out.perfetto-trace")])
t1 = os.times()
print(n, (t1.user - t0.user) + (t1.system - t0.system))
"""
WHATS = ("records", "events", "perfetto", "chrome")


def measure(what: str, directory: Path, env: dict[str, str]) -> tuple[int, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, what, str(directory)],
        capture_output=True, text=True, check=True, env={**os.environ, **env},
    )  # fmt: skip
    n, cpu = out.stdout.split()[-2:]
    return int(n), float(cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fib", type=int, default=27)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/tidescope-reader"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another source tree to measure")
    args = parser.parse_args()
    directory: Path = args.dir
    if not list(directory.glob("events-*")):
        directory.mkdir(parents=True, exist_ok=True)
        script = directory.parent / f"fib{args.fib}.py"
        script.write_text(textwrap.dedent(FIB.format(n=args.fib)))
        subprocess.run(
            [sys.executable, "-m", "tidescope", "run", "--level", "calls", "--buffer-size",
             str(1 << 23), "-o", str(directory), str(script)],
            check=True, env={**os.environ, "TIDESCOPE_CORE": "c"},
        )  # fmt: skip
    size = sum(p.stat().st_size for p in directory.glob("events-*"))
    print(f"CPython {platform.python_version()}, trace {directory} ({size / 1e6:.0f} MB)")
    variants = {"C decoder": {"TIDESCOPE_CORE": "c"}, "pure": {"TIDESCOPE_CORE": "python"}}
    if args.before is not None:
        variants = {"before": {"PYTHONPATH": str(args.before)}, **variants}
    cpu: dict[tuple[str, str], list[float]] = {}
    events = 0
    for _ in range(args.rounds):
        for name, env in variants.items():
            for what in WHATS:
                n, t = measure(what, directory, env)
                if what in ("records", "events"):
                    events = max(events, n)
                cpu.setdefault((name, what), []).append(t)
    print(f"{events} events, median CPU of {args.rounds} rounds (s, M events/s):")
    print(f"  {'':10}" + "".join(f"{what:>20}" for what in WHATS))
    for name in variants:
        cells = []
        for what in WHATS:
            t = statistics.median(cpu[name, what])
            cells.append(f"{t:7.2f} s {events / t / 1e6:6.2f} M/s")
        print(f"  {name:10}" + "".join(f"{c:>20}" for c in cells))


if __name__ == "__main__":
    main()
