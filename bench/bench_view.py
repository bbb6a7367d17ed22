"""``tidescope view`` on big traces: first view after the index exists, and server memory.

    python bench/bench_view.py [--events 1000000 10000000] [--dir /tmp/tidescope-view]
                               [--chromium /usr/bin/chromium] [--rounds 3]

For each size, a program of nested calls (``top`` -> ``mid`` x k -> ``leaf`` x 999, two
events a call) is recorded with ``tidescope run --level calls`` into ``DIR/<events>``
unless it is there, and its index is built once (``tidescope.query.open_index``; timed,
but not part of the first view). Then, ``--rounds`` times, a fresh ``tidescope view``
server is started and headless chromium opens its page: the figure is the time from the
navigation's start to the timeline drawn (``main[data-ready]``, all its answers in), as
the page measures it (``performance.now()``). Within that round the view is zoomed in and
out (a dozen window queries) and the exceptions and search views opened; the server's
peak resident memory (``VmHWM``) is read after, and each answer timed once over HTTP (the
whole trace's slices, a call's page, exceptions, search by name and by value). Medians
are printed per size. ``index ready`` is the time to build the index, or to open it when
it is already there.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

PROGRAM = """
import sys


def leaf(i):
    return i + 1


def mid(n):
    total = 0
    for i in range(n):
        total += leaf(i)
    return total


def top(k, n):
    for _ in range(k):
        mid(n)


top(int(sys.argv[1]), 999)
"""


def record(directory: Path, events: int) -> Path:
    trace = directory / str(events)
    if trace.is_dir():
        return trace
    directory.mkdir(parents=True, exist_ok=True)
    program = directory / "nested.py"
    program.write_text(PROGRAM)
    k = max(1, events // 2000)  # each mid() makes 1000 calls: 2000 events
    subprocess.run(
        [sys.executable, "-m", "tidescope", "run", "-o", str(trace), str(program), str(k)],
        check=True,
    )
    return trace


def build_index(trace: Path) -> float:
    code = (
        "import sys, time\nfrom tidescope.query import open_index\n"
        "t = time.perf_counter()\nopen_index(sys.argv[1]).close()\n"
        "print(time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(trace)], check=True, capture_output=True, text=True
    )
    return float(out.stdout.split()[-1])  # after DuckDB's progress bar


def hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def one_round(trace: Path, chromium: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    server = subprocess.Popen(
        [sys.executable, "-m", "tidescope", "view", str(trace)], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    started = time.perf_counter()
    url = server.stdout.readline().split()[2]
    ready_s = time.perf_counter() - started
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url)
            page.wait_for_selector("main[data-ready='timeline']", timeout=120_000)
            first_ms = page.evaluate("performance.now()")
            page.locator("canvas").focus()
            for key in "++++++------":
                with page.expect_response(lambda r: "/api/slices" in r.url):
                    page.keyboard.press(key)
            for view, route in (("exceptions", "#/exceptions"), ("search", "#/search?q=mid")):
                page.goto(url + route)
                page.wait_for_function(
                    "v => document.querySelector('main').dataset.ready === v"
                    " && document.querySelector('main').dataset.shown === location.hash",
                    arg=view,
                    timeout=120_000,
                )
            browser.close()
        with urllib.request.urlopen(url + "api/summary") as res:
            summary = json.load(res)
        calls = summary["calls"]
        whole = f"t0={summary['t0']}&t1={summary['t1'] + 1}"
        some = _get(url, f"api/slices?{whole}&width=1400")["slices"][3]["call_id"]
        timings = {
            name: _timed(url, path)
            for name, path in (
                ("slices_ms", f"api/slices?{whole}&width=1400"),
                ("call_ms", f"api/call?id={some}"),
                ("exceptions_ms", "api/exceptions"),
                ("search_name_ms", "api/search?kind=function&q=mid"),
                ("search_value_ms", "api/search?kind=value&q=4999"),
            )
        }
        return {
            **timings,
            "start_s": ready_s,
            "first_view_ms": first_ms,
            "hwm_mib": hwm_kib(server.pid) / 1024,
            "calls": calls,
        }
    finally:
        server.terminate()
        server.wait()
        server.stdout.close()


def _get(url: str, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + path) as res:
        answer: dict[str, Any] = json.load(res)
    return answer


def _timed(url: str, path: str) -> float:
    started = time.perf_counter()
    _get(url, path)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/tidescope-view"))
    parser.add_argument("--chromium", default=shutil.which("chromium"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"# {platform.python_implementation()} {platform.python_version()}, {platform.machine()}")
    for events in args.events:
        trace = record(args.dir, events)
        index_s = build_index(trace)
        rounds = [one_round(trace, args.chromium) for _ in range(args.rounds)]
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        print(
            f"{events:>11,} events ({int(med['calls']):,} calls): index ready {index_s:.1f} s; "
            f"server up {med['start_s']:.2f} s; first view {med['first_view_ms']:.0f} ms; "
            f"server peak RSS {med['hwm_mib']:.0f} MiB (median of {args.rounds})"
        )
        print(
            "    answers over HTTP: "
            + ", ".join(
                f"{k[:-3]} {v:.0f} ms"
                for k, v in med.items()
                if k.endswith("_ms") and k != "first_view_ms"
            )
        )


if __name__ == "__main__":
    main()
