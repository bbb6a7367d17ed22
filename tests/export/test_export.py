"""Drain, trace files, and their exports: written as they go, readable after a crash, exported."""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

import tidescope
from tidescope import EventType
from tidescope.capture import runtime
from tidescope.export.chrome import write_chrome
from tidescope.export.drain import Drain
from tidescope.export.reader import read_trace, trace_files
from tidescope.export.summary import format_summary, summarize


def record_calls(n: int) -> None:
    for i in range(n):
        cid = runtime.report_function_entry("app", "work", (i,))
        runtime.report_function_exit(cid, i * 2)


def events_of(path: Path) -> list[dict[str, object]]:
    return [r for r in read_trace(path) if "event_type" in r]


def test_drain_writes_header_every_event_and_closing_stats(tmp_path: Path) -> None:
    session = tidescope.start(buffer_size=1024)
    drain = Drain(tmp_path, interval=0.01).start()
    record_calls(500)  # 1000 events through a 1024-slot ring while the drain empties it
    stats = session.stop()
    drain.stop(stats)
    (path,) = trace_files(tmp_path)
    assert path.name == f"events-{os.getpid()}.tstrace"
    records = list(read_trace(path))
    assert records[0]["$header"]["pid"] == os.getpid()
    assert records[-1]["$stats"]["total_writes"] == 1000
    assert records[-1]["$stats"]["events_written"] == 1000
    assert records[-1]["$stats"]["duration_s"] > 0
    assert records[-1]["$stats"]["drain_errors"] == 0
    events = [r for r in records if "event_type" in r]
    assert len(events) == 1000 and drain.writer.events_written == 1000
    counts = [r["$counts"] for r in records if "$counts" in r]
    assert counts and counts[-1]["events_written"] == 1000
    entries = [e for e in events if e["event_type"] == "function_entry"]
    exits = {e["call_id"]: e for e in events if e["event_type"] == "function_exit"}
    assert all(
        exits[e["call_id"]]["data"]["return_value"] == e["data"]["args"][0] * 2 for e in entries
    )


def test_a_process_killed_with_sigkill_leaves_a_readable_trace(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, time
        import tidescope
        from tidescope.capture import runtime
        from tidescope.export.drain import Drain
        tidescope.start(buffer_size=1 << 16)
        drain = Drain({str(tmp_path)!r}, interval=0.01).start()
        for i in range(3000):
            runtime.report_function_exit(runtime.report_function_entry("app", "f", (i,)), i)
        deadline = time.monotonic() + 10
        while drain.writer.events_written < 6000 and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in range(100):  # a last batch that may not reach the file
            runtime.report_function_entry("app", "late", (i,))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (path,) = trace_files(tmp_path)
    records = list(read_trace(path))
    assert "$header" in records[0] and "$stats" not in records[-1]
    assert len(records) - 1 >= 6000  # everything drained before the kill is there
    assert summarize(tmp_path)["processes"][0]["complete"] is False


def test_forked_child_writes_its_own_file_from_a_fresh_buffer(tmp_path: Path) -> None:
    session = tidescope.start(buffer_size=4096)
    drain = Drain(tmp_path, interval=0.01).start()
    record_calls(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with the drain thread alive
        pid = os.fork()
    if pid == 0:  # child
        try:
            cid = runtime.report_function_entry("child", "task", ())
            runtime.report_function_exit(cid, "done")
            drain.stop(tidescope.stats())
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    drain.stop(session.stop())
    files = {p.name: p for p in trace_files(tmp_path)}
    assert set(files) == {f"events-{os.getpid()}.tstrace", f"events-{pid}.tstrace"}
    child = events_of(files[f"events-{pid}.tstrace"])
    assert [e["data"]["module"] for e in child if e["event_type"] == "function_entry"] == ["child"]
    assert all(e["pid"] == pid for e in child)
    parent = events_of(files[f"events-{os.getpid()}.tstrace"])
    assert len(parent) == 6 and all(e["pid"] == os.getpid() for e in parent)


def _mp_child() -> None:
    cid = runtime.report_function_entry("mp", "child", ())
    runtime.report_function_exit(cid, 1)


@pytest.mark.skipif(sys.platform != "linux", reason="the fork start method")
def test_multiprocessing_fork_child_flushes_through_its_finalizers(tmp_path: Path) -> None:
    session = tidescope.start(buffer_size=4096)
    drain = Drain(tmp_path, interval=5.0).start()  # no periodic pass: only the exit flush
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        proc = multiprocessing.get_context("fork").Process(target=_mp_child)
        proc.start()
        proc.join()
    assert proc.exitcode == 0
    drain.stop(session.stop())
    child = trace_files(tmp_path)
    child_file = [p for p in child if p.name == f"events-{proc.pid}.tstrace"]
    assert child_file, [p.name for p in child]
    records = list(read_trace(child_file[0]))
    assert "$stats" in records[-1]
    assert [e["data"]["module"] for e in records if e.get("event_type") == "function_entry"] == [
        "mp"
    ]


def test_chrome_export_pairs_calls_into_complete_events_per_thread_and_task(tmp_path: Path) -> None:
    session = tidescope.start(buffer_size=4096)
    drain = Drain(tmp_path, interval=0.01).start()
    outer = runtime.report_function_entry("app", "outer", ("x",))
    runtime.report_ast_variable_snapshot(outer, {"x": 1}, 3, "app:outer:3:4:Assign")
    worker = threading.Thread(target=record_calls, args=(2,))
    worker.start()
    worker.join()

    async def task_body() -> None:
        cid = runtime.report_function_entry("app", "in_task", ())
        await asyncio.sleep(0)
        runtime.report_function_exit(cid, None)

    async def main() -> None:
        await asyncio.gather(task_body(), task_body())

    asyncio.run(main())
    runtime.report_function_exit(outer, "ok")
    runtime.report_function_entry("app", "never_exits", ())
    drain.stop(session.stop())
    out = io.StringIO()
    n = write_chrome(tmp_path, out)
    trace = json.loads(out.getvalue())["traceEvents"]
    assert len(trace) == n
    complete = [e for e in trace if e["ph"] == "X"]
    names = sorted(e["name"] for e in complete)
    assert names == ["app.in_task", "app.in_task", "app.outer", "app.work", "app.work"]
    outer_ev = next(e for e in complete if e["name"] == "app.outer")
    assert outer_ev["args"]["return_value"] == "ok" and outer_ev["dur"] >= 0
    assert outer_ev["args"]["args"] == ["x"]
    tracks = {e["tid"] for e in complete}
    assert len(tracks) == 4  # main thread, worker thread, two tasks
    named = {e["tid"] for e in trace if e["ph"] == "M"}
    assert tracks <= named
    instants = [e for e in trace if e["ph"] == "i"]
    assert instants[0]["name"] == "local_variable_snapshot"
    assert instants[0]["args"]["ast_node_id"] == "app:outer:3:4:Assign"
    assert [e["name"] for e in trace if e["ph"] == "B"] == ["app.never_exits"]


def test_summary_counts_types_calls_time_exceptions_and_drops(tmp_path: Path) -> None:
    session = tidescope.start(buffer_size=8)
    drain = Drain(tmp_path, interval=60)  # not started: only the final pump writes
    for i in range(10):
        cid = runtime.report_function_entry("app", "f", (i,))
        runtime.report_function_exit(cid, ValueError("bad"), exit_reason="exception")
    drain.stop(session.stop())
    s = summarize(tmp_path)
    assert s["events"] == 8 and s["dropped"] == 12
    assert dict(s["by_type"]) == {"function_entry": 4, "function_exit": 4}
    assert s["raises"] == {"escaped": 4, "caught": 0, "reported": 0}  # each a root call
    assert [(e["type"], e["count"]) for e in s["escaped"]] == [("builtins.ValueError", 4)]
    text = format_summary(s)
    assert "12 dropped" in text and "builtins.ValueError" in text


def test_writer_encodes_markers_odd_keys_and_big_values(tmp_path: Path) -> None:
    session = tidescope.start(buffer_size=64)
    drain = Drain(tmp_path)
    value = {(1, 2): "tuple key", "long": "x" * 1000, "big": 10**30, "raw": b"\x00", "s": {3}}
    cid = runtime.report_function_entry("app", "odd", (value,))
    runtime.report_function_exit(cid, 2**70)
    drain.stop(session.stop())
    entry, exit_ = events_of(trace_files(tmp_path)[0])
    (arg,) = entry["data"]["args"]
    assert arg["(1, 2)"] == "tuple key" and arg["raw"] == {"$bytes": "AA=="} and arg["s"] == [3]
    assert arg["long"]["$truncated"] == "str" and arg["long"]["size"] == 1000
    assert arg["big"] == 10**30
    assert exit_["data"]["return_value"] == 2**70
    assert entry["event_type"] == "function_entry"
    # the events themselves keep the captured values as they were
    (file,) = tidescope.open_trace(tmp_path).files
    entry_ev, exit_ev = file.events()
    (arg,) = entry_ev.data["args"]
    assert arg[(1, 2)] == "tuple key" and arg["raw"] == b"\x00" and arg["s"] == {3}
    assert arg["long"] == tidescope.Truncated("str", 1000, "length", "x" * 256)
    assert exit_ev.data["return_value"] == 2**70 and exit_ev.event_type is EventType.FUNCTION_EXIT


@pytest.mark.parametrize(
    ("fmt", "name"), [("chrome", "trace.chrome.json"), ("jsonl", "events.all.jsonl")]
)
def test_exports_replace_a_planted_symlink_and_never_write_through_it(
    tmp_path: Path, fmt: str, name: str
) -> None:
    session = tidescope.start(buffer_size=1024)
    drain = Drain(tmp_path / "trace", interval=60)
    record_calls(3)
    drain.stop(session.stop())
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "trace" / name).symlink_to(victim)
    proc = subprocess.run(
        [sys.executable, "-m", "tidescope", "export", str(tmp_path / "trace"), "--format", fmt],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "trace" / name
    assert victim.read_text() == "keep" and not out.is_symlink()
    assert out.stat().st_mode & 0o777 == 0o600 and out.stat().st_size > 0
    assert not [p for p in os.listdir(tmp_path / "trace") if p.endswith(".tmp")]


@pytest.mark.parametrize("pace", [False, True])
def test_only_a_pacing_drain_asks_writers_to_wait(
    tmp_path: Path, pace: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # invariant 1: a report blocks only under `block`, unless the drain paces (tidescope
    # run's): then the writer at three quarters of the ring waits for its pass, bounded
    session = tidescope.start(buffer_size=1024)
    drain = Drain(tmp_path, interval=0.02, pace=pace)
    armed: list[tuple[int, float]] = []
    kind = type(session.buffer)
    real = kind.wake_at

    def spy(
        self: Any, position: int, callback: Any, *, wait_at: int = -1, wait: float = 0.0
    ) -> None:
        armed.append((wait_at, wait))
        real(self, position, callback, wait_at=wait_at, wait=wait)

    monkeypatch.setattr(kind, "wake_at", spy)
    drain.start()
    record_calls(2000)
    drain.stop(session.stop())
    assert armed
    if pace:
        assert all(at >= 0 and 0 < wait <= 0.02 for at, wait in armed)
    else:  # a loop four times the ring, the drain thread starved: losses, never waits
        assert all((at, wait) == (-1, 0.0) for at, wait in armed)
