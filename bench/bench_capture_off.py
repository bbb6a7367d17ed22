"""Capture off at each level: rewritten workloads against the untraced program.

    python bench/bench_capture_off.py [--rounds 15]           # CPU time, interleaved
    python bench/bench_capture_off.py --callgrind [--runs 2]  # instructions per fib call
    python bench/bench_capture_off.py --callgrind --on        # the same, capture on
    python bench/bench_capture_off.py --size                  # code size of the rewrite

``macro_workloads.py``'s source is rewritten by ``tidescope.instrument.rewrite_source`` at
``calls``, ``values`` and ``lines`` and exec'd into fresh namespaces; tidescope is imported
and capture is off (never started), as in a program that imports instrumented modules
without recording. Timing: CPU time (``time.process_time_ns``) of ``fib(24)`` and
``mixed(20000)``, untraced and at each level, in an order rotated every round; the table
gives the median and the ratio to the untraced median.

``--callgrind`` runs ``fib(n)`` under ``valgrind --tool=callgrind`` for n = 18 and 22 in a
child per level and reports (instructions(22) - instructions(18)) / (calls(22) - calls(18)):
instructions per fib call, start-up and set-up cancelled out. Instruction counts do not
drift with the machine's load.

``--size``: bytes of bytecode (``co_code``, all code objects) of ``macro_workloads`` and a few
stdlib modules, plain and rewritten at each level, with and without the unreported copy.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from typing import Any

import macro_workloads  # bench/ is sys.path[0] when run as a script

import tidescope
from tidescope.instrument import LEVELS, _rewrite, rewrite_source

FIB_N = 24
MIXED_N = 20_000


def rewritten(level: str, path: str | None = None, module: str = "macro_workloads") -> Any:
    path = path or macro_workloads.__file__
    assert path is not None
    with open(path, encoding="utf-8") as f:
        source = f.read()
    tree, _ = rewrite_source(source, path, module, level=level)
    return compile(tree, path, "exec", dont_inherit=True)


def namespace(level: str) -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": "macro_workloads", "__file__": macro_workloads.__file__}
    exec(rewritten(level), ns)
    assert ns["__tidescope_on__"] is False
    return ns


def cpu(fn: Callable[[], Any]) -> int:
    gc.collect()
    t = time.process_time_ns()
    fn()
    return time.process_time_ns() - t


def timing(rounds: int) -> None:
    configs: dict[str, dict[str, Any]] = {"untraced": vars(macro_workloads)}
    for level in LEVELS:
        configs[f"off at {level}"] = namespace(level)
    works: dict[str, Callable[[dict[str, Any]], Any]] = {
        f"fib({FIB_N})": lambda ns: ns["fib"](FIB_N),
        f"mixed({MIXED_N})": lambda ns: ns["mixed"](MIXED_N),
    }
    for work in works.values():  # same results everywhere
        assert len({repr(work(ns)) for ns in configs.values()}) == 1
    names = list(configs)
    times: dict[tuple[str, str], list[int]] = {(w, c): [] for w in works for c in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for w, work in works.items():
            for c in order:
                ns = configs[c]
                times[w, c].append(cpu(lambda: work(ns)))  # noqa: B023
    print(f"Python {platform.python_version()}, {rounds} rounds, CPU time, median")
    print(f"| workload | {' | '.join(names)} |")
    print(f"|---|{'---|' * len(names)}")
    for w in works:
        base = statistics.median(times[w, "untraced"])
        cells = []
        for c in names:
            m = statistics.median(times[w, c])
            cells.append(f"{m / 1e6:.1f} ms" + ("" if c == "untraced" else f" ({m / base:.2f}x)"))
        print(f"| {w} | {' | '.join(cells)} |")


def fib_calls(n: int) -> int:
    return 1 if n < 2 else 1 + fib_calls(n - 1) + fib_calls(n - 2)


def callgrind_child(level: str, n: int) -> None:
    """``level`` is ``untraced`` or ``off at <level>`` / ``on at <level>`` (``nocopy at
    <level>``: capture off, the rewrite without the unreported copy, as before it)."""
    if level.startswith("nocopy "):
        _rewrite._Rewriter._unreported = staticmethod(lambda at, body: [])  # type: ignore[method-assign, assignment]
    ns = vars(macro_workloads) if level == "untraced" else namespace(level.split()[-1])  # noqa: PLC0207
    if level.startswith("on "):
        # capture on, into a ring that holds every event (no drain, nothing dropped)
        tidescope.start(buffer_size=1 << 18)
    gc.disable()
    ns["fib"](n)


def callgrind(runs: int, levels: list[str]) -> None:
    here = os.path.abspath(__file__)
    print(f"Python {platform.python_version()}, instructions per fib call (callgrind)")
    base = 0.0
    for level in ("untraced", *levels):
        per: list[float] = []
        for _ in range(runs):
            ir: dict[int, int] = {}
            for n in (18, 22):
                with tempfile.TemporaryDirectory() as d:
                    out = os.path.join(d, "cg.out")
                    subprocess.run(
                        [
                            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                            sys.executable, here, "--child", level, str(n),
                        ],
                        check=True, capture_output=True,
                        env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict layouts
                    )  # fmt: skip
                    with open(out, encoding="utf-8") as f:
                        m = re.search(r"^summary: (\d+)", f.read(), re.M)
                    assert m is not None
                    ir[n] = int(m.group(1))
            per.append((ir[22] - ir[18]) / (fib_calls(22) - fib_calls(18)))
        v = statistics.median(per)
        if level == "untraced":
            base = v
            print(f"  untraced: {v:.0f}")
        else:
            print(f"  {level}: {v:.0f} ({v - base:+.0f}, {v / base:.2f}x)")


def code_bytes(code: types.CodeType) -> int:
    return len(code.co_code) + sum(
        code_bytes(c) for c in code.co_consts if isinstance(c, types.CodeType)
    )


def size() -> None:
    import argparse as m1
    import json.decoder as m2
    import textwrap as m3

    paths = [("macro_workloads", macro_workloads.__file__)] + [
        (m.__name__, m.__file__) for m in (m1, m2, m3)
    ]
    print(f"Python {platform.python_version()}, bytes of bytecode (co_code, all code objects)")
    print("| module | plain | " + " | ".join(f"{lv} (no copy / copy)" for lv in LEVELS) + " |")
    print("|---|---|" + "---|" * len(LEVELS))
    keep = _rewrite._Rewriter.__dict__["_unreported"]
    for name, path in paths:
        assert path is not None
        with open(path, encoding="utf-8") as f:
            plain = code_bytes(compile(f.read(), path, "exec", dont_inherit=True))
        cells = []
        for level in LEVELS:
            with_copy = code_bytes(rewritten(level, path, name))
            _rewrite._Rewriter._unreported = staticmethod(lambda at, body: [])  # type: ignore[method-assign, assignment]
            try:
                without = code_bytes(rewritten(level, path, name))
            finally:
                _rewrite._Rewriter._unreported = keep
            cells.append(f"{without} / {with_copy} (+{with_copy / without - 1:.0%})")
        print(f"| {name} | {plain} | {' | '.join(cells)} |")


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        callgrind_child(sys.argv[2], int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--size", action="store_true")
    ap.add_argument("--on", action="store_true", help="--callgrind with capture on")
    ap.add_argument("--no-copy", action="store_true", help="--callgrind without the copy")
    ap.add_argument("--level", action="append", choices=LEVELS, help="--callgrind: only these")
    opts = ap.parse_args()
    if opts.callgrind:
        levels = opts.level or LEVELS
        mode = "on" if opts.on else "nocopy" if opts.no_copy else "off"
        callgrind(opts.runs, [f"{mode} at {lv}" for lv in levels])
    elif opts.size:
        size()
    else:
        timing(opts.rounds)


if __name__ == "__main__":
    main()
