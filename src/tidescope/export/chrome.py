"""Chrome Trace Event JSON (opens in Perfetto and chrome://tracing), written as a stream.

Each call becomes a complete ("X") event built from its entry and exit, with the entry's
arguments and the exit's result or exception; every other event becomes an instant ("i")
event with its data. Each thread and each asyncio task gets a track of its own, named by
metadata events. Only calls still open are held in memory, so a trace of ten million
events exports with memory bounded by the deepest stacks, not the event count.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tidescope.export.jsonl import encode_line
from tidescope.export.reader import read_trace, trace_files

__all__ = ["chrome_events", "write_chrome", "write_records"]


def _track(ev: dict[str, Any], tracks: dict[tuple[int, Any, Any], int]) -> tuple[int, bool]:
    key = (ev["pid"], ev["thread_id"], ev.get("task_id"))
    tid = tracks.get(key)
    if tid is None:
        tid = len(tracks) + 1
        tracks[key] = tid
        return tid, True
    return tid, False


def chrome_events(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Turn trace records (as :func:`read_trace` yields them) into Chrome trace events."""
    tracks: dict[tuple[int, Any, Any], int] = {}
    open_calls: dict[Any, dict[str, Any]] = {}
    for rec in records:
        if "event_type" not in rec:  # $header, $counts, $stats, $damaged...
            continue
        pid = rec["pid"]
        tid, new = _track(rec, tracks)
        if new:
            task = rec.get("task_id")
            name = f"task {task}" if task is not None else f"thread {rec['thread_id']}"
            yield {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}}
        ts = rec["timestamp"] / 1000.0
        etype = rec["event_type"]
        data = rec.get("data") or {}
        ids = {"call_id": rec["call_id"], "parent_id": rec["parent_id"]}
        if rec.get("ast_node_id"):
            ids["ast_node_id"] = rec["ast_node_id"]
        if etype == "function_entry":
            name = f"{data.get('module')}.{data.get('function')}"
            open_calls[rec["call_id"]] = {
                "name": name, "pid": pid, "tid": tid, "ts": ts,
                "args": {"args": data.get("args"), **ids},
            }  # fmt: skip
        elif etype == "function_exit" and rec["call_id"] in open_calls:
            call = open_calls.pop(rec["call_id"])
            call["ph"] = "X"
            call["dur"] = max(0.0, ts - call["ts"])
            call["args"].update(
                return_value=data.get("return_value"),
                exception=data.get("exception"),
                exit_reason=data.get("exit_reason"),
            )
            yield call
        else:
            yield {
                "ph": "i", "s": "t", "name": etype, "pid": pid, "tid": tid, "ts": ts,
                "args": {**data, **ids},
            }  # fmt: skip
    for call in open_calls.values():  # never exited: the process died or it still runs
        call["ph"] = "B"
        yield call


def write_chrome(directory: str | os.PathLike[str], out: IO[str]) -> int:
    """Write every trace file of ``directory`` as one Chrome trace to ``out``; returns events.

    Raises:
        TraceError: a file cannot be read, or is not a trace.
    """

    def records() -> Iterator[dict[str, Any]]:
        for path in trace_files(directory):
            yield from read_trace(path)

    return write_records(records(), out)


def write_records(records: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """Write trace records (as :func:`read_trace` yields them) as one Chrome trace to ``out``;
    returns the number of Chrome events written."""
    out.write('{"displayTimeUnit":"ns","traceEvents":[\n')
    n = 0
    for ev in chrome_events(records):
        if n:
            out.write(",\n")
        out.write(encode_line(ev).decode())
        n += 1
    out.write("\n]}\n")
    return n


def default_output(directory: str | os.PathLike[str]) -> Path:
    """Where ``tidescope export --format chrome`` writes by default."""
    return Path(directory) / "trace.chrome.json"
