"""The C core's drain encodes in C (``RingBuffer.drain_encoded``); the pure core's drain
encodes ``drain_records`` in Python: a ``tidescope run`` trace of the same program reads
back to the same events from either core (ids and clocks aside)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import tidescope
from tidescope import open_trace
from tidescope.capture import _core
from tidescope.export.drain import Drain

PROGRAM = """
import datetime

class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def shapes(p, tags, when):
    return {"p": p, "tags": tags, "sum": p.x + p.y, "when": when}

def boom(n):
    raise ValueError(n)

fib(12)
shapes(Point(1, 2.5), ["a", "é", b"x"], datetime.date(2020, 1, 2))
try:
    boom(3)
except ValueError:
    pass
"""


def run(tmp_path: Path, core: str) -> list[tuple[Any, ...]]:
    (tmp_path / "prog.py").write_text(textwrap.dedent(PROGRAM))
    out = tmp_path / f"trace-{core}"
    env = {**os.environ, "TIDESCOPE_CORE": core}
    done = subprocess.run(
        [sys.executable, "-m", "tidescope", "run", "--output", str(out), "prog.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    trace = open_trace(out)
    (f,) = trace.files
    assert f.header["core"] == core
    assert f.complete and not f.damaged
    evs = list(trace.events())
    calls = {e.call_id: n for n, e in enumerate(e for e in evs if e.event_type == "function_entry")}
    # ids, clocks and object addresses differ from run to run: compare what they point to
    return [
        (e.event_type, re.sub(r"#[0-9a-f]+", "#", repr(e.data if e.event_type == "function_entry"
         else {k: v for k, v in e.data.items() if k != "duration_ns"})),
         calls.get(e.call_id), calls.get(e.parent_id), e.thread_id == evs[0].thread_id)
        for e in evs
    ]  # fmt: skip


@pytest.mark.skipif(_core.CORE_NAME != "c", reason="needs the C core")
def test_both_cores_traces_of_one_program_read_back_to_the_same_events(tmp_path: Path) -> None:
    c = run(tmp_path, "c")
    pure = run(tmp_path, "python")
    assert len(c) > 400  # fib(12) alone is 465 calls
    assert c == pure


@pytest.mark.skipif(_core.CORE_NAME != "c", reason="needs the C core")
def test_the_c_cores_drain_encodes_the_ring_itself_and_skips_stray_objects(
    tmp_path: Path,
) -> None:
    session = tidescope.start(buffer_size=64)
    try:
        drain = Drain(tmp_path, batch=4)
        buf = drain.buffer
        assert buf is not None and drain._encoded
        buf.write("stray")  # not an Event: consumed, never written
        for n in range(10):
            cid = _core.report_function_entry("m", "f", {"n": n})
            _core.report_function_exit(cid, n)
        assert drain.pump() == 20
        assert buf.stats()["consumed_events"] == 21
        drain.stop(session.stop())
    finally:
        tidescope.stop()
    (f,) = open_trace(tmp_path).files
    evs = list(f.events())
    assert [e.data.get("args", e.data.get("return_value")) for e in evs][:4] == [
        {"n": 0}, 0, {"n": 1}, 1,
    ]  # fmt: skip
    assert f.counts["events_written"] == 20 and f.complete
