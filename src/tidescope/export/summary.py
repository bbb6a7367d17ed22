"""``tidescope show``: what a trace holds: loss first, then calls, exceptions, threads, tasks.

Everything is counted in one pass over the records, holding per-function and per-exception
aggregates, the calls still open and one pending exception per thread or task: memory does
not grow with the trace's length.

How the figures are counted:

- A call's *inclusive* time is its recorded duration; a function's is the sum over its
  outermost calls only (no call of the same function among their open ancestors), so
  recursion is counted once (``fib``'s inclusive time is never more than that of the call
  that started it). *Self* time is a call's duration minus its recorded children's. A
  generator's duration runs from its first step to its end, suspensions included.
- An exception is counted once per raise: the exits of the N recorded calls it passes
  through (each exit's exception the same type, arguments and place, each call the
  previous one's parent) are one raise, and an ``error`` event that reports it again is
  not counted. A raise is *escaped* when it left the outermost recorded call of its thread
  or task, else *caught* (by the caller of the last call it left). ``docs/show.md`` has
  the JSON shape.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any, Final

from tidescope.config import MAX_BUFFER_SIZE
from tidescope.events import jsonable
from tidescope.export._tracks import Tracks
from tidescope.export.reader import read_trace, trace_files

__all__ = ["format_summary", "keep_hint", "summarize"]

TOP: Final = 10
"""Functions and exceptions listed in each table."""
MAX_WALK: Final = 256
"""Ancestors looked at to tell recursion from interleaved generators of one function."""
OTLP_FIELDS: Final = (
    "spans_exported", "spans_dropped", "spans_over_budget", "events_dropped",
    "requests_failed", "last_error",
)  # fmt: skip
"""The live OTLP export's counts a process's closing stats carry (``otlp_*``), shown."""
MAX_KEYS: Final = 10_000
"""Exception groups and tracks kept: past them a raise counts in its fate's total only, and
a track's events in ``other_tracks``."""


def keep_hint(stats: dict[str, Any]) -> str:
    """Which setting would have kept the events a process dropped, from its closing stats
    (the buffer's ``size``, ``overflow_strategy``, ``dropped_events`` and the drain's
    ``peak_backlog``); "" when none were dropped or the stats cannot say."""
    dropped, size, peak = (stats.get(k) for k in ("dropped_events", "size", "peak_backlog"))
    if type(dropped) is not int or dropped <= 0 or type(size) is not int or size <= 0:
        return ""
    # a buffer holding the most events that ever waited for the drain keeps them all
    need = max(peak if type(peak) is int else 0, size + 1)
    bigger = min(1 << (need - 1).bit_length(), MAX_BUFFER_SIZE)
    ways = [f"--buffer-size {bigger}"] if bigger > size else []
    if stats.get("overflow_strategy") == "block":
        ways.append("a longer block timeout (TIDESCOPE_BLOCK_TIMEOUT)")
    else:
        ways.append("--overflow-strategy block")
    return "to keep them, use " + " or ".join(ways)


def _message(exc: Any) -> str | None:
    """An exception snapshot's message: its one argument, or its arguments as text."""
    args: Any = exc.get("args") if isinstance(exc, dict) else None
    if type(args) in (list, tuple) and len(args) == 1:
        return args[0] if type(args[0]) is str else repr(args[0])
    return None if not args else repr(args)


class _Call:
    __slots__ = ("args", "child_ns", "name", "outer", "parent", "track")

    def __init__(self, name: str, track: Any, parent: Any, args: Any, outer: bool) -> None:
        self.name, self.track, self.parent, self.args = name, track, parent, args
        self.outer = outer
        self.child_ns = 0


class _Raise:
    """An exception on its way out through recorded calls."""

    __slots__ = ("args", "frames", "function", "ident", "message", "parent", "where")

    def __init__(self, ident: Any, exc: dict[str, Any], parent: Any, call: _Call | None) -> None:
        self.ident, self.parent = ident, parent
        self.frames = 1
        self.where = jsonable(exc.get("where"))
        self.message = _message(exc)
        self.args = None if call is None else call.args
        self.function = "?" if call is None else call.name


class _Summary:
    """The running aggregates of one pass."""

    def __init__(self) -> None:
        self.by_type: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.self_ns: Counter[str] = Counter()
        self.inclusive_ns: Counter[str] = Counter()
        self.open: dict[Any, _Call] = {}
        self.active: Counter[Any] = Counter()  # (track, function) -> its calls open there
        self.pending: dict[Any, _Raise] = {}  # track -> the exception leaving its calls
        self.last_raise: dict[Any, Any] = {}  # track -> (type, message) of its last raise
        self.raises: dict[Any, dict[str, Any]] = {}
        self.fates: Counter[str] = Counter()  # "escaped" / "caught" / "reported" -> raises
        self.tracks: dict[Any, dict[str, Any]] = {}
        self.other_tracks = 0
        self.names = Tracks()

    def track(self, rec: dict[str, Any]) -> Any:
        pid, task = rec["pid"], rec.get("task_id")
        thread = self.names.thread(pid, rec["thread_id"], rec["timestamp"])
        key = (pid, rec["thread_id"], thread.gen, task)
        info = self.tracks.get(key)
        if info is None:
            if len(self.tracks) >= MAX_KEYS:
                self.other_tracks += 1
                return key
            name = thread.name if task is None else self.names.task(pid, task)
            info = self.tracks[key] = {
                "pid": pid, "thread_id": key[1], "native_id": thread.native_id,
                "task_id": task, "name": name, "events": 0,
            }  # fmt: skip
        info["events"] += 1
        return key

    def add(self, rec: dict[str, Any]) -> None:
        etype = rec["event_type"]
        self.by_type[etype] += 1
        track = self.track(rec)
        data = rec["data"] if type(rec["data"]) is dict else {}
        if etype == "function_entry":
            self.settle(track)
            name = f"{data.get('module')}.{data.get('function')}"
            self.calls[name] += 1
            others = self.active[(track, name)]
            self.active[(track, name)] = others + 1
            pid, parent = rec["pid"], rec["parent_id"]
            caller = None if parent is None else (pid, parent)
            # recursion only if one of them is an ancestor (not a generator it interleaves with)
            outer = not others or not self.recursive(caller, name)
            self.open[(pid, rec["call_id"])] = _Call(name, track, caller, data.get("args"), outer)
        elif etype == "function_exit":
            self.exit(rec, track, data)
        elif etype == "error":
            self.error(track, data)
        else:
            self.settle(track)

    def recursive(self, caller: Any, name: str) -> bool:
        """True if a call of ``name`` is among the open ancestors from ``caller`` up (a
        long chain, past :data:`MAX_WALK`, counts as recursive: never counted twice)."""
        for _ in range(MAX_WALK):
            call = self.open.get(caller) if caller is not None else None
            if call is None:
                return False
            if call.name == name:
                return True
            caller = call.parent
        return True

    def exit(self, rec: dict[str, Any], track: Any, data: dict[str, Any]) -> None:
        key = (rec["pid"], rec["call_id"])
        call = self.open.get(key)
        if call is not None:
            track = call.track
        exc = data.get("exception")
        if data.get("exit_reason") == "exception" and isinstance(exc, dict):
            self.raised(key, call, track, exc)
        else:
            self.settle(track)  # before the pop: the caller of a caught raise is still open
        if call is None:
            return
        del self.open[key]
        name = call.name
        left = self.active[(track, name)] - 1
        if left > 0:
            self.active[(track, name)] = left
        else:
            del self.active[(track, name)]
        duration = data.get("duration_ns")
        if type(duration) is int:
            self.self_ns[name] += max(0, duration - call.child_ns)
            if call.outer:
                self.inclusive_ns[name] += duration
            caller = self.open.get(call.parent) if call.parent is not None else None
            if caller is not None:
                caller.child_ns += duration

    def raised(self, key: Any, call: _Call | None, track: Any, exc: dict[str, Any]) -> None:
        ident = (exc.get("type"), repr(exc.get("args")), repr(exc.get("where")))
        parent = None if call is None else call.parent
        p = self.pending.get(track)
        if p is not None and p.parent == key and p.ident == ident:
            p.frames += 1  # the same exception, leaving the caller of its last call
            p.parent = parent
            return
        self.settle(track)
        self.pending[track] = _Raise(ident, exc, parent, call)
        self.last_raise[track] = ident[:2]

    def settle(self, track: Any) -> None:
        """Something else happened on ``track``: its pending exception went no further."""
        p = self.pending.pop(track, None)
        if p is not None:
            caller = self.open.get(p.parent) if p.parent is not None else None
            self.count(p, "escaped" if caller is None or caller.track != track else "caught")

    def count(self, p: _Raise, fate: str) -> None:
        self.fates[fate] += 1
        group = (fate, p.ident[0], repr(p.where), p.function)
        entry = self.raises.get(group)
        if entry is None:
            if len(self.raises) >= MAX_KEYS:
                return  # counted in its fate's total only
            entry = self.raises[group] = {
                "type": p.ident[0], "message": p.message, "where": p.where,
                "function": p.function, "arguments": jsonable(p.args), "frames": p.frames,
                "count": 0,
                "fate": fate,
            }  # fmt: skip
        entry["count"] += 1
        entry["frames"] = max(entry["frames"], p.frames)

    def error(self, track: Any, data: dict[str, Any]) -> None:
        """An ``error`` event: a raise already counted on its track is not counted again."""
        exc = {"type": data.get("error_type"), "args": data.get("message")}
        if self.last_raise.get(track) == (exc["type"], repr(exc["args"])):
            return
        self.settle(track)
        stack = data.get("stacktrace")
        if type(stack) is list and stack and type(stack[-1]) is dict:
            exc["where"] = stack[-1]
        p = _Raise((exc["type"], repr(exc["args"]), None), exc, None, None)
        self.count(p, "reported")
        self.last_raise[track] = p.ident[:2]

    def result(self, processes: list[dict[str, Any]]) -> dict[str, Any]:
        for track in list(self.pending):
            self.settle(track)
        groups = sorted(self.raises.values(), key=lambda e: -e["count"])
        tracks = list(self.tracks.values())
        return {
            "processes": processes,
            "dropped": sum(p.get("dropped", 0) for p in processes),
            "internal_errors": sum(p.get("internal_errors", 0) for p in processes),
            "damaged": sum(p["damaged"] for p in processes),
            "events": sum(self.by_type.values()),
            "by_type": self.by_type.most_common(),
            "functions": len(self.calls),
            "top_by_count": self.calls.most_common(TOP),
            "top_by_self_ns": self.self_ns.most_common(TOP),
            "top_by_inclusive_ns": self.inclusive_ns.most_common(TOP),
            "raises": {k: self.fates.get(k, 0) for k in ("escaped", "caught", "reported")},
            "escaped": [e for e in groups if e["fate"] == "escaped"][:TOP],
            "caught": [e for e in groups if e["fate"] == "caught"][:TOP],
            "reported": [e for e in groups if e["fate"] == "reported"][:TOP],
            "threads": [t for t in tracks if t["task_id"] is None],
            "tasks": [t for t in tracks if t["task_id"] is not None],
            "other_tracks": self.other_tracks,
        }


def summarize(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Summarise a trace directory in one pass: see the module's docstring and
    ``docs/show.md`` for the figures and the JSON shape (``tidescope show --json``).

    A file without a closing ``$stats`` (its process was killed) takes its drops and
    internal errors from the running counts of its last whole chunk.

    Raises:
        TraceError: a file cannot be read, or is not a trace.
    """
    s = _Summary()
    processes: list[dict[str, Any]] = []
    for path in trace_files(directory):
        proc: dict[str, Any] = {"file": path.name, "events": 0, "complete": False, "damaged": 0}
        counts: dict[str, Any] = {}
        stats: dict[str, Any] = {}
        for rec in read_trace(path):
            if "event_type" in rec:
                proc["events"] += 1
                s.add(rec)
            elif "$note" in rec:
                s.names.note(rec["$note"])
            elif "$header" in rec:
                proc.update(pid=rec["$header"].get("pid"), node=rec["$header"].get("node"))
            elif "$counts" in rec:
                counts = rec["$counts"]
            elif "$stats" in rec:
                stats = rec["$stats"]
                proc["complete"] = True
            elif "$damaged" in rec:
                proc["damaged"] += 1
                proc.setdefault("first_damaged", rec["$damaged"])
        for key, field in (("dropped", "dropped_events"), ("internal_errors", "internal_errors")):
            # the closing $stats when it has the count, else the last batch's running total
            value = stats.get(field, counts.get(field))
            if value is not None:
                proc[key] = value
        if hint := keep_hint(stats):
            proc["hint"] = hint
        if "otlp_spans_exported" in stats:  # the live OTLP export's counts
            proc["otlp"] = {k: stats.get(f"otlp_{k}") for k in OTLP_FIELDS}
        processes.append(proc)
    return s.result(processes)


def _place(where: Any) -> str:
    if isinstance(where, dict):
        return f"{where.get('file')}:{where.get('line')} in {where.get('function')}"
    return "place not recorded"


def _exceptions(title: str, entries: list[dict[str, Any]], total: int) -> list[str]:
    lines = [f"{title}: {total}"]
    for e in entries:
        lines.append(f"  {e['count']:>8}  {e['type']}: {e['message']}")
        lines.append(f"            at {_place(e['where'])}")
        if e["function"] != "?":
            lines.append(f"            in call {e['function']}({_arguments(e['arguments'])})"
                         f", through {e['frames']} recorded frame(s)")  # fmt: skip
    return lines


def _arguments(args: Any) -> str:
    if isinstance(args, dict):
        return ", ".join(f"{k}={v!r}" for k, v in args.items())[:200]
    return "" if args is None else repr(args)[:200]


def _name(t: dict[str, Any]) -> str:
    ident = f"task {t['task_id']}" if t["task_id"] is not None else f"thread {t['thread_id']}"
    return f"{t['name']} ({ident})" if t["name"] else ident


def _otlp_line(o: dict[str, Any]) -> str:
    line = f"OTLP: {o['spans_exported']} spans exported live"
    if o.get("spans_dropped"):
        line += f", {o['spans_dropped']} dropped in {o.get('requests_failed')} failed request(s)"
        if o.get("last_error"):
            line += f" ({o['last_error']})"
    if o.get("spans_over_budget"):
        line += f", {o['spans_over_budget']} over the per-trace budget"
    if o.get("events_dropped"):
        line += f", {o['events_dropped']} events not exported (queue full)"
    return line


def format_summary(s: dict[str, Any]) -> str:
    """A human-readable page of :func:`summarize` output."""
    # loss first: a page that hides it would be read as the whole story
    head = f"{s['events']} events in {len(s['processes'])} process file(s), {s['dropped']} dropped"
    if s["internal_errors"]:
        head += f", {s['internal_errors']} internal errors"
    if s["damaged"]:
        head += f", {s['damaged']} damaged chunk(s) skipped"
    lines = [head]
    for p in s["processes"]:
        state = "complete" if p["complete"] else "incomplete (killed?)"
        line = f"  {p['file']}: pid {p.get('pid')}, {p['events']} events, {state}"
        if not p["complete"] and "dropped" in p:
            line += f", at least {p['dropped']} dropped"
        if "hint" in p:
            line += f", {p.get('dropped')} dropped ({p['hint']})"
        if p.get("internal_errors"):
            line += f", {p['internal_errors']} internal errors"
        if p["damaged"]:
            first = p["first_damaged"]
            line += (
                f", {p['damaged']} damaged chunk(s) skipped"
                f" (first: at byte {first['offset']}, {first['reason']})"
            )
        lines.append(line)
        if "otlp" in p:
            lines.append(f"    {_otlp_line(p['otlp'])}")
    lines.append("events by type:")
    lines += [f"  {n:>8}  {t}" for t, n in s["by_type"]]
    lines.append("top functions by calls:")
    lines += [f"  {n:>8}  {f}" for f, n in s["top_by_count"]]
    lines.append("top functions by self time:")
    lines += [f"  {ns / 1e6:>8.3f} ms  {f}" for f, ns in s["top_by_self_ns"]]
    lines.append("top functions by inclusive time (recursion counted once):")
    lines += [f"  {ns / 1e6:>8.3f} ms  {f}" for f, ns in s["top_by_inclusive_ns"]]
    raises = s["raises"]
    lines += _exceptions("exceptions that escaped", s["escaped"], raises["escaped"])
    lines += _exceptions("exceptions caught", s["caught"], raises["caught"])
    if raises["reported"]:
        lines += _exceptions("errors reported", s["reported"], raises["reported"])
    for kind in ("threads", "tasks"):
        lines.append(f"{kind}: {len(s[kind])}")
        lines += [f"  {t['events']:>8}  {_name(t)}" for t in s[kind][:50]]
        if len(s[kind]) > 50:
            lines.append(f"  ... and {len(s[kind]) - 50} more")
    return "\n".join(lines)
