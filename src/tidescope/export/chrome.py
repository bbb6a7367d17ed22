"""Chrome Trace Event JSON (opens in Perfetto and chrome://tracing), written as a stream.

Each stretch of a call that runs becomes a complete ("X") event with the entry's
arguments and ``call_id`` (the exit's result or exception on its last stretch); every other
event becomes an instant ("i") event with its data. A call is one stretch unless it is a
generator, async generator or coroutine whose stretches interleave with its caller's: the
stretches are found, and kept nested on their track, as the Perfetto export does
(:mod:`tidescope.export.perfetto`); every stretch but the last is marked ``suspended``,
every one but the first ``resumed``, and all carry the call's ``call_id``. Each thread and
each asyncio task gets a track of its own, named by metadata events from the trace's
notes (a thread by its ``threading`` name, a task by its asyncio name); a thread whose
ident the OS gave to an ended thread gets its own. Only calls still open are held in
memory, so a trace of ten million events exports with memory bounded by the deepest
stacks, not the event count.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Final

from tidescope.export._tracks import Tracks
from tidescope.export.jsonl import encode_line
from tidescope.export.reader import read_trace, trace_files

__all__ = ["chrome_events", "write_chrome", "write_records"]

_MAX_SUSPENDED: Final = 1 << 16


class _Stack:
    __slots__ = ("calls", "tid")

    def __init__(self, tid: int) -> None:
        self.tid = tid
        self.calls: list[Any] = []  # call ids whose stretch is open, innermost last


class _Chrome:
    """The open stretches, the suspended calls and the tracks of one export."""

    def __init__(self) -> None:
        self.names = Tracks()
        self.tracks: dict[Any, _Stack] = {}
        self.current: dict[Any, _Stack] = {}  # (pid, ident, task) -> its track now
        self.open: dict[Any, dict[str, Any]] = {}  # (pid, call id) -> its open stretch
        self.suspended: dict[Any, dict[str, Any]] = {}  # (pid, call id) -> its last stretch

    def track(self, rec: dict[str, Any]) -> tuple[_Stack, dict[str, Any] | None]:
        """The event's track, and its ``thread_name`` metadata event if it is new."""
        pid, task = rec["pid"], rec.get("task_id")
        now = (pid, rec["thread_id"], task)
        if not self.names.waiting:  # no thread changes pending: the ident's track stands
            stack = self.current.get(now)
            if stack is not None:
                return stack, None
        t = self.names.thread(pid, rec["thread_id"], rec["timestamp"])
        key = (pid, rec["thread_id"], t.gen, task)
        stack = self.tracks.get(key)
        if stack is not None:
            self.current[now] = stack
            return stack, None
        stack = self.tracks[key] = self.current[now] = _Stack(len(self.tracks) + 1)
        if task is not None:
            name = self.names.task(pid, task) or f"task {task}"
        else:
            name = t.name or f"thread {rec['thread_id']}"
        meta = {"ph": "M", "name": "thread_name", "pid": pid, "tid": stack.tid,
                "args": {"name": name}}  # fmt: skip
        return stack, meta

    def settle(self, pid: Any, stack: _Stack, owner: Any, ts: float, root: bool) -> Iterator[Any]:
        """Make ``owner`` the running call of ``stack``: end the stretches above it (they
        are suspended), or resume it; with ``root``, end them all."""
        key = (pid, owner)
        call = self.open.get(key)
        if call is not None and call["track"] is stack:
            while stack.calls and stack.calls[-1] != owner:
                yield self.suspend(pid, stack, stack.calls.pop(), ts)
            return
        call = self.suspended.get(key)
        if call is not None and call["track"] is stack:
            del self.suspended[key]
            caller = self.open.get((pid, call["parent"]))
            if caller is not None and caller["track"] is stack:  # resumed by its caller
                while stack.calls[-1] != call["parent"]:
                    yield self.suspend(pid, stack, stack.calls.pop(), ts)
            self.open[key] = call = {**call, "ts": ts}
            call["args"] = {**call["args"], "resumed": True}
            stack.calls.append(owner)
        elif root:
            while stack.calls:
                yield self.suspend(pid, stack, stack.calls.pop(), ts)

    def suspend(self, pid: Any, stack: _Stack, call_id: Any, ts: float) -> dict[str, Any]:
        call = self.open.pop((pid, call_id))
        if len(self.suspended) >= _MAX_SUSPENDED:  # lost exits: forget the oldest
            del self.suspended[next(iter(self.suspended))]
        self.suspended[(pid, call_id)] = call
        return _complete(call, ts, {"suspended": True})


def _complete(call: dict[str, Any], ts: float, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "ph": "X", "name": call["name"], "pid": call["pid"], "tid": call["track"].tid,
        "ts": call["ts"], "dur": max(0.0, ts - call["ts"]), "args": {**call["args"], **extra},
    }  # fmt: skip


def chrome_events(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Turn trace records (as :func:`read_trace` yields them) into Chrome trace events."""
    c = _Chrome()
    for rec in records:
        if "event_type" not in rec:  # $header, $note, $counts, $stats, $damaged...
            if "$note" in rec:
                c.names.note(rec["$note"])
            continue
        pid = rec["pid"]
        etype = rec["event_type"]
        data = rec.get("data") or {}
        call_id = rec["call_id"]
        stack, meta = c.track(rec)
        call = None
        if etype == "function_exit":
            key = (pid, call_id)
            call = c.open.get(key) or c.suspended.get(key)
            if call is not None:
                stack = call["track"]
        if meta is not None:
            yield meta
        ts = rec["timestamp"] / 1000.0
        ids = {"call_id": call_id, "parent_id": rec["parent_id"]}
        if rec.get("ast_node_id"):
            ids["ast_node_id"] = rec["ast_node_id"]
        if etype == "function_entry" and (pid, call_id) not in c.open:
            parent = rec["parent_id"]
            if (stack.calls[-1] if stack.calls else None) != parent:
                yield from c.settle(pid, stack, parent, ts, parent is None)
            name = f"{data.get('module')}.{data.get('function')}"
            c.open[(pid, call_id)] = {
                "name": name, "pid": pid, "track": stack, "ts": ts, "parent": parent,
                "args": {"args": data.get("args"), **ids},
            }  # fmt: skip
            stack.calls.append(call_id)
            continue
        if etype == "function_exit" and call is not None:
            if (pid, call_id) in c.suspended or stack.calls[-1] != call_id:
                yield from c.settle(pid, stack, call_id, ts, False)
            stack.calls.pop()
            call = c.open.pop((pid, call_id))
            args = call["args"]  # its own: the last stretch's
            args["return_value"] = data.get("return_value")
            args["exception"] = data.get("exception")
            args["exit_reason"] = data.get("exit_reason")
            yield {
                "ph": "X", "name": call["name"], "pid": pid, "tid": stack.tid, "ts": call["ts"],
                "dur": max(0.0, ts - call["ts"]), "args": args,
            }  # fmt: skip
            continue
        owner = None if etype == "function_exit" else call_id  # an exit here: no entry
        if owner is not None and (not stack.calls or stack.calls[-1] != owner):
            yield from c.settle(pid, stack, owner, ts, False)
        yield {
            "ph": "i", "s": "t", "name": etype, "pid": pid, "tid": stack.tid, "ts": ts,
            "args": {**data, **ids},
        }  # fmt: skip
    for call in c.open.values():  # never exited: the process died or it still runs
        yield {"ph": "B", "name": call["name"], "pid": call["pid"], "tid": call["track"].tid,
               "ts": call["ts"], "args": call["args"]}  # fmt: skip


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
