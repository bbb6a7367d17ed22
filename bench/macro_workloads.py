"""The plain macro workloads of ``bench_macro.py``, in a module of their own.

``bench_macro`` runs them as they are (untraced, cProfile, VizTracer) and, for the import
hook configuration, reads this file's source, rewrites it with
``tidescope.instrument.rewrite_source(..., level="calls")`` and execs the result into a
fresh namespace. The hand-instrumented copies stay in ``bench_macro``.
"""

from __future__ import annotations

import asyncio
from typing import Any

# ---------------------------------------------------------------------------------------
# workload 1: fib(24)


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


# ---------------------------------------------------------------------------------------
# workload 2: mixed (no comprehensions: on 3.11 they are calls of their own to the tracers)

NAMES = ("apple", "pear", "plum", "fig", "kiwi", "lime", "date", "yuzu")


class ValidationError(ValueError):
    pass


def validate(name: str, qty: int) -> int:
    if qty <= 0:
        raise ValidationError(name)
    return qty


def price(name: str, qty: int, unit: float) -> float:
    return validate(name, qty) * unit


def make_line(i: int, name: str, qty: int) -> dict[str, Any]:
    unit = 1.5 + i % 3
    try:
        total = price(name, qty, unit)
    except ValidationError:
        total = 0.0
    return {"i": i, "name": name, "qty": qty, "total": total}


def tally(counts: dict[str, int], key: str) -> int:
    n = counts.get(key, 0) + 1
    counts[key] = n
    return n


def window(lines: list[dict[str, Any]], k: int) -> list[float]:
    out = []
    for line in lines[-k:]:
        out.append(line["total"])  # noqa: PERF401 - a comprehension is a call on 3.11
    return out


def mixed(n: int) -> tuple[int, int, float]:
    counts: dict[str, int] = {}
    lines: list[dict[str, Any]] = []
    acc = 0.0
    for i in range(n):
        name = NAMES[i % len(NAMES)]
        lines.append(make_line(i, name, i % 7 - 1))  # qty <= 0 (a raise) 2 times in 7
        tally(counts, name)
        if i % 10 == 0:
            acc += sum(window(lines, 5))
    return len(lines), len(counts), acc


# ---------------------------------------------------------------------------------------
# workload 3: asyncio (gathers of a few hundred tasks awaiting small coroutines)


async def fetch(i: int) -> int:
    await asyncio.sleep(0)
    return i % 97


async def scale(x: int, k: int) -> int:
    return x * k


async def job(i: int) -> int:
    a = await fetch(i)
    b = await scale(a, 3)
    return a + b


async def batch(first: int, n: int) -> int:
    coros = []
    for i in range(first, first + n):
        coros.append(job(i))  # noqa: PERF401
    total = 0
    for r in await asyncio.gather(*coros):
        total += r
    return total


async def amain(batches: int, n: int) -> int:
    total = 0
    for b in range(batches):
        total += await batch(b * n, n)
    return total
