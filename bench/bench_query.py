"""The query index: build time and memory for a big trace, then the example questions.

    python bench/bench_query.py [--calls 5000000] [--dir /tmp/tidescope-query] [--rounds 3]

A program is recorded with ``tidescope run --level calls`` (C core, a ring large enough to
drop nothing) unless ``--dir`` already holds a trace: ``f(i)`` for i in 0..N, each running
``fib(25)`` (242,785 calls) and every seventh raising ValueError, until about ``--calls``
calls (2 events each; the default gives 10.2 M events). Then, each in a fresh
subprocess:

- ``build``: ``open_index(dir, rebuild=True)``: wall time, CPU time of the process (user +
  sys, DuckDB's threads included) and its peak RSS;
- each question in ``QUESTIONS``, ``--rounds`` times: ``open_index`` (reusing the index)
  plus the query, wall time, and the query alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

PROGRAM = """
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def f(i):
    if i % 7 == 3:
        raise ValueError(f"bad {{i}}")
    return fib(25)

for i in range({n}):
    try:
        f(i)
    except ValueError:
        pass
"""
FIB25 = 242_785  # calls fib(25) makes

QUESTIONS = {
    "10 slowest calls": (
        "SELECT qualname, duration_ns, args FROM calls ORDER BY duration_ns DESC LIMIT 10"
    ),
    "args of the last call of f that raised": (
        "SELECT args, exception_type, exception_message FROM calls"
        " WHERE qualname = 'f' AND exception_type IS NOT NULL ORDER BY start_ns DESC LIMIT 1"
    ),
}

MEASURE = """
import json, os, resource, sys, time
what, directory = sys.argv[1], sys.argv[2]
w0, t0 = time.perf_counter(), os.times()
from tidescope.query import open_index
if what == "build":
    index = open_index(directory, rebuild=True)
    q = None
else:
    index = open_index(directory)
    q0 = time.perf_counter()
    names, rows = index.sql(what)
    q = time.perf_counter() - q0
n = index.sql("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM calls)")[1][0]
index.close()
w1, t1 = time.perf_counter(), os.times()
print(json.dumps({
    "wall": w1 - w0, "cpu": (t1.user - t0.user) + (t1.system - t0.system), "query": q,
    "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "events": n[0], "calls": n[1],
}))
"""


def measure(what: str, directory: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, what, str(directory)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/tidescope-query"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    directory: Path = args.dir
    if not list(directory.glob("events-*.tstrace")):
        directory.mkdir(parents=True, exist_ok=True)
        script = directory.parent / f"{directory.name}.py"
        n = max(1, args.calls // FIB25)
        # n calls that return, plus the ones that raise (at least one: f(3))
        script.write_text(textwrap.dedent(PROGRAM.format(n=max(4, n + (n + 3) // 7))))
        subprocess.run(
            [sys.executable, "-m", "tidescope", "run", "--level", "calls",
             "--buffer-size", "8388608", "-o", str(directory), str(script)],
            check=True,
        )  # fmt: skip
    print(f"# CPython {platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    build = measure("build", directory)
    print(
        f"build: {build['events']:,} events, {build['calls']:,} calls: wall {build['wall']:.1f} s,"
        f" CPU {build['cpu']:.1f} s, peak RSS {build['rss_mb']:.0f} MB,"
        f" index {os.path.getsize(directory / 'index.duckdb') / 1e6:.0f} MB"
    )
    for name, sql in QUESTIONS.items():
        runs = [measure(sql, directory) for _ in range(args.rounds)]
        walls = sorted(r["wall"] for r in runs)
        queries = sorted(r["query"] for r in runs)
        print(
            f"{name}: open + query {walls[len(walls) // 2]:.3f} s (median of {len(runs)},"
            f" max {walls[-1]:.3f}), query alone {queries[len(queries) // 2]:.3f} s"
        )


if __name__ == "__main__":
    main()
