"""The trace writer: counts in band with every batch, whole records only, new private files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import tidescope
from tidescope.capture import runtime
from tidescope.export.drain import Drain
from tidescope.export.jsonl import TraceWriter, read_trace


def raw_records(path: Path) -> list[object]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def kinds(records: list[object]) -> list[str]:
    return ["event" if isinstance(r, list) else next(iter(r)) for r in records]  # type: ignore[call-overload]


def test_every_batch_ends_with_the_running_counts_in_band(tmp_path: Path) -> None:
    session = tidescope.start(buffer_size=8)
    base = tidescope.stats()["internal_errors"]  # counted per process, earlier tests included
    drain = Drain(tmp_path, interval=60, batch=4)  # not started: pump() writes
    for i in range(10):  # 20 events through 8 slots: the 12 oldest are lost
        runtime.report_function_exit(runtime.report_function_entry("app", "f", (i,)), i)
    assert drain.pump() == 8
    path = drain.writer.path
    records = raw_records(path)
    assert kinds(records) == [
        "$header",
        "$clock",
        *["event"] * 4,
        "$counts",
        *["event"] * 4,
        "$counts",
    ]
    assert [r["$counts"] for r in records if "$counts" in r] == [  # type: ignore[operator]
        {"events_written": 4, "dropped_events": 12, "internal_errors": base},
        {"events_written": 8, "dropped_events": 12, "internal_errors": base},
    ]
    assert drain.pump() == 0  # nothing new: nothing written
    assert len(raw_records(path)) == len(records)
    # an empty batch writes its counts alone when they moved, and only then
    assert drain.writer.write_records([], dropped_events=15, internal_errors=1) == 0
    assert drain.writer.write_records([], dropped_events=15, internal_errors=1) == 0
    tail = raw_records(path)[len(records) :]
    assert tail == [{"$counts": {"events_written": 8, "dropped_events": 15, "internal_errors": 1}}]
    drain.stop(session.stop())
    read_counts = [r for r in read_trace(path) if "$counts" in r]
    assert read_counts == [r for r in raw_records(path) if "$counts" in r]  # read as records


def test_a_write_that_comes_up_short_is_cut_back_and_the_writer_stops(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, os, resource, signal
        import tidescope
        from tidescope.capture import runtime
        from tidescope.export.drain import Drain
        from tidescope.export.jsonl import trace_files

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # this test is about the file

        def batch():
            for i in range(50):
                runtime.report_function_exit(runtime.report_function_entry("app", "f", (i,)), i)

        session = tidescope.start(buffer_size=1024)
        drain = Drain({str(tmp_path)!r}, interval=60)  # not started: one write per pump()
        (path,) = trace_files({str(tmp_path)!r})
        header = path.stat().st_size
        batch()
        drain.pump()
        size = path.stat().st_size
        # room for one more batch and a half: the one after is cut short by the limit
        limit = size + (size - header) * 3 // 2
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        for _ in range(3):
            batch()
            drain.pump()
        drain.stop(session.stop())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    (path,) = tmp_path.glob("events-*.jsonl")
    data = path.read_bytes()
    assert data.endswith(b"\n")
    records = [json.loads(line) for line in data.splitlines()]  # no torn record anywhere
    stats = records[-1]["$stats"]
    assert stats["write_error"] == "File too large (EFBIG)"
    assert stats["events_written"] == 200 and stats["events_not_written"] == 200
    assert sum(isinstance(r, list) for r in records) == 200
    assert proc.stderr.count("tidescope: stopped writing") == 1


def test_the_writer_never_opens_an_existing_name_or_follows_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "events-7.jsonl").symlink_to(victim)
    (tmp_path / "events-7-1.jsonl").write_text("someone else's")
    (tmp_path / "events-7-2.jsonl").symlink_to(tmp_path / "nowhere")
    writer = TraceWriter(tmp_path / "events-7.jsonl", {"pid": 7})
    writer.close({"done": True})
    assert writer.path == tmp_path / "events-7-3.jsonl"
    assert victim.read_text() == "keep" and not (tmp_path / "nowhere").exists()
    assert (tmp_path / "events-7-1.jsonl").read_text() == "someone else's"
    assert stat.S_IMODE(os.stat(writer.path).st_mode) == 0o600
    assert [next(iter(r)) for r in read_trace(writer.path)] == ["$header", "$stats"]
