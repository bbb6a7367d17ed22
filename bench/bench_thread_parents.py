"""Cost per submission of the thread-parent wrappers (``capture/_threads.py``).

    python bench/bench_thread_parents.py [--n 20000] [--rounds 7]

``ThreadPoolExecutor(max_workers=1).submit(noop).result()`` round trips inside a traced
call with capture on, the wrappers switched on and off in alternate rounds; the best round
of each is printed in ns per round trip. Wall-clock: the round trip crosses two threads.
The report path itself is unchanged (nothing is added per call).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import time

import tidescope
from tidescope.capture import _core, _threads


def noop() -> None:
    return None


def trial(pool: concurrent.futures.ThreadPoolExecutor, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        pool.submit(noop).result()
    return (time.perf_counter() - t) / n * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    tidescope.start(buffer_size=1 << 16)
    cid = _core.report_function_entry("bench", "caller", ())
    on: list[float] = []
    off: list[float] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        for _ in range(args.rounds):
            _threads.set_on(True)
            on.append(trial(pool, args.n))
            _threads.set_on(False)
            off.append(trial(pool, args.n))
    _core.report_function_exit(cid, None)
    tidescope.stop()
    print(
        f"python {sys.version.split()[0]}, {_core.CORE_NAME} core: submit+result "
        f"{min(off):.0f} ns unwrapped, {min(on):.0f} ns wrapped "
        f"(+{min(on) - min(off):.0f} ns per submission)"
    )


if __name__ == "__main__":
    main()
