"""Encode + write throughput of the binary trace, per core: a full ring drained to a file.

    python bench/bench_encode.py [--size 1048576] [--rounds 5]

Each core runs in its own subprocess (``TIDESCOPE_CORE=c`` / ``python``), interleaved,
``--rounds`` times. A round fills a ring of ``--size`` slots with fib-like calls (an entry
with ``{"n": n}``, as the import hook passes arguments, and an exit returning an int), then
times in CPU time (``time.process_time``, not wall time: the machine is shared):

- ``pump``: ``Drain.pump()``, everything from the ring to the file (the C core encodes the
  slots in C, ``RingBuffer.drain_encoded``; the pure core encodes ``drain_records()``);
- ``encode``: the same encoding without the file write, on an equal ring.

Prints events/s (median of the rounds) and the file's bytes per event.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def fill(size: int) -> None:
    from tidescope.capture import _core

    entry, exit_ = _core.report_function_entry, _core.report_function_exit
    for i in range(size // 2):
        n = i % 25
        exit_(entry("bench", "fib", {"n": n}), n * 3)


def one_round(size: int) -> dict[str, Any]:
    import tidescope
    from tidescope.capture import _core
    from tidescope.export import _tsformat
    from tidescope.export.drain import Drain

    out: dict[str, Any] = {"core": _core.CORE_NAME}
    with tempfile.TemporaryDirectory() as d:
        session = tidescope.start(buffer_size=size)
        drain = Drain(d)
        fill(size)
        t0 = time.process_time()
        n = drain.pump()
        out["pump_s"] = time.process_time() - t0
        out["events"] = n
        out["bytes"] = drain.writer.path.stat().st_size
        drain.stop(session.stop())
    session = tidescope.start(buffer_size=size)
    fill(size)
    buf = _core.get_buffer()
    assert buf is not None
    kw = {"seq": 1, "events_written": 0, "dropped_events": 0, "internal_errors": 0}
    t0 = time.process_time()
    done = 0
    while True:
        if _core.frame_events_chunk is not None:
            records, k = buf.drain_encoded(4096)
            _core.frame_events_chunk(records, k, **kw, wall_offset_ns=0)
        else:
            recs = buf.drain_records(4096)
            k = len(recs)
            _tsformat.encode_events_chunk(recs, **kw, wall_offset_ns=0)
        done += k
        if not k:
            break
    out["encode_s"] = time.process_time() - t0
    out["encode_events"] = done
    session.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1 << 20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one_round(args.size)))
        return
    results: dict[str, list[dict[str, Any]]] = {"c": [], "python": []}
    for _ in range(args.rounds):
        for core, rs in results.items():
            env = {**os.environ, "TIDESCOPE_CORE": core}
            cmd = [sys.executable, str(Path(__file__)), "--child", "--size", str(args.size)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            rs.append(json.loads(done.stdout))
    print(f"Python {sys.version.split()[0]}, ring of {args.size} slots, {args.rounds} rounds")
    for core, rs in results.items():
        pump = statistics.median(r["events"] / r["pump_s"] for r in rs)
        enc = statistics.median(r["encode_events"] / r["encode_s"] for r in rs)
        bpe = statistics.median(r["bytes"] / r["events"] for r in rs)
        print(
            f"  {core:6}  encode+write {pump / 1e6:6.2f} M events/s CPU   "
            f"encode only {enc / 1e6:6.2f} M events/s CPU   {bpe:5.2f} bytes/event"
        )


if __name__ == "__main__":
    main()
