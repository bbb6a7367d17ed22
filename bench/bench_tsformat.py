"""The binary trace format: bytes per event of fib under ``tidescope run``, and the pure
encoder's throughput (CPU time) on the same program's ring records.

    python bench/bench_tsformat.py [--n 22] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import tidescope
from tidescope.capture import runtime
from tidescope.export import _tsformat

FIB = """
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

print(fib({n}))
"""


def bytes_per_event(n: int) -> tuple[int, int]:
    """``tidescope run`` of fib(n) at calls level, with a ring that drops nothing: the trace
    file's size and its events."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "fib.py"
        script.write_text(textwrap.dedent(FIB.format(n=n)))
        out = Path(tmp) / "trace"
        subprocess.run(
            [sys.executable, "-m", "tidescope", "run", "--level", "calls",
             "--buffer-size", str(1 << 20), "-o", str(out), str(script)],
            check=True, capture_output=True,
        )  # fmt: skip
        (f,) = tidescope.open_trace(out).files
        assert f.counts["dropped_events"] == 0
        return os.path.getsize(f.path), f.counts["events_written"]


def records_of_fib(n: int) -> list[tuple[object, ...]]:
    session = tidescope.start(buffer_size=1 << 20)

    def fib(k: int) -> int:
        cid = runtime.report_function_entry("fib", "fib", (k,))
        r = k if k < 2 else fib(k - 1) + fib(k - 2)
        runtime.report_function_exit(cid, r)
        return r

    fib(n)
    records = session.buffer.drain_records()
    session.stop()
    return records


def record_sizes(records: list[tuple[object, ...]]) -> list[int]:
    """The bytes each record takes in its chunk (batches of 4096, as the drain writes)."""
    sizes = []
    for i in range(0, len(records), 4096):
        enc = _tsformat._Encoder(_tsformat.CHUNK_EVENTS, 1, (0, 0, 0))
        for r in records[i : i + 4096]:
            before = len(enc.out)
            enc.record(r)
            sizes.append(len(enc.out) - before)
    return sorted(sizes)


def encode_rate(records: list[tuple[object, ...]], repeat: int) -> list[float]:
    batches = [records[i : i + 4096] for i in range(0, len(records), 4096)]
    rates = []
    for _ in range(repeat):
        t0 = time.process_time()
        for b in batches:
            _tsformat.encode_events_chunk(
                b, seq=1, events_written=len(b), dropped_events=0, internal_errors=0,
                wall_offset_ns=0,
            )  # fmt: skip
        rates.append(len(records) / (time.process_time() - t0))
    return sorted(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=22)
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    size, events = bytes_per_event(opts.n)
    print(f"# Python {sys.version.split()[0]}, core {tidescope.core_info()['core']}")
    print(
        f"tidescope run fib({opts.n}): {events} events, {size} bytes, {size / events:.2f} B/event"
    )
    records = records_of_fib(opts.n)
    sizes = record_sizes(records)
    print(
        f"records of fib({opts.n}) in chunks of 4096: median {sizes[len(sizes) // 2]} B, "
        f"90th percentile {sizes[len(sizes) * 9 // 10]} B, max {sizes[-1]} B"
    )
    rates = encode_rate(records, opts.repeat)
    print(
        f"pure encoder: median {rates[len(rates) // 2] / 1e6:.3f} M events/s CPU "
        f"(min {rates[0] / 1e6:.3f}, max {rates[-1] / 1e6:.3f}), batches of 4096"
    )


if __name__ == "__main__":
    main()
