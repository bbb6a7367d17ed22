"""``tidescope show``: what a trace holds, by event type, function, exception and loss."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from tidescope.config import MAX_BUFFER_SIZE
from tidescope.export.reader import read_trace, trace_files

__all__ = ["format_summary", "keep_hint", "summarize"]


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


def summarize(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Count a trace directory's events, calls (count and total time), exceptions, drops,
    internal errors and damaged chunks skipped.

    A file without a closing ``$stats`` (its process was killed) takes its drops and
    internal errors from the running counts of its last whole chunk.

    Raises:
        TraceError: a file cannot be read, or is not a trace.
    """
    by_type: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    time_ns: Counter[str] = Counter()
    exceptions: Counter[str] = Counter()
    processes: list[dict[str, Any]] = []
    open_calls: dict[Any, str] = {}
    for path in trace_files(directory):
        proc: dict[str, Any] = {"file": path.name, "events": 0, "complete": False, "damaged": 0}
        counts: dict[str, Any] = {}
        stats: dict[str, Any] = {}
        for rec in read_trace(path):
            if "event_type" not in rec:
                if "$header" in rec:
                    proc.update(pid=rec["$header"].get("pid"), node=rec["$header"].get("node"))
                elif "$counts" in rec:
                    counts = rec["$counts"]
                elif "$stats" in rec:
                    stats = rec["$stats"]
                    proc["complete"] = True
                elif "$damaged" in rec:
                    proc["damaged"] += 1
                    proc.setdefault("first_damaged", rec["$damaged"])
                continue
            proc["events"] += 1
            etype = rec["event_type"]
            by_type[etype] += 1
            data = rec["data"]
            if etype == "function_entry":
                name = f"{data.get('module')}.{data.get('function')}"
                calls[name] += 1
                open_calls[rec["call_id"]] = name
            elif etype == "function_exit":
                name = open_calls.pop(rec["call_id"], "?")
                if type(data.get("duration_ns")) is int:
                    time_ns[name] += data["duration_ns"]
                exc = data.get("exception")
                if isinstance(exc, dict) and exc.get("type"):
                    exceptions[str(exc["type"])] += 1
            elif etype == "error":
                exceptions[str(data.get("error_type"))] += 1
        for key, field in (("dropped", "dropped_events"), ("internal_errors", "internal_errors")):
            # the closing $stats when it has the count, else the last batch's running total
            value = stats.get(field, counts.get(field))
            if value is not None:
                proc[key] = value
        if hint := keep_hint(stats):
            proc["hint"] = hint
        processes.append(proc)
    return {
        "processes": processes,
        "events": sum(by_type.values()),
        "by_type": by_type.most_common(),
        "top_by_count": calls.most_common(10),
        "top_by_time_ns": time_ns.most_common(10),
        "exceptions": exceptions.most_common(10),
        "dropped": sum(p.get("dropped", 0) for p in processes),
        "internal_errors": sum(p.get("internal_errors", 0) for p in processes),
        "damaged": sum(p["damaged"] for p in processes),
    }


def format_summary(s: dict[str, Any]) -> str:
    """A human-readable page of :func:`summarize` output."""
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
        if p["damaged"]:
            first = p["first_damaged"]
            line += (
                f", {p['damaged']} damaged chunk(s) skipped"
                f" (first: at byte {first['offset']}, {first['reason']})"
            )
        lines.append(line)
    lines.append("events by type:")
    lines += [f"  {n:>8}  {t}" for t, n in s["by_type"]]
    lines.append("top functions by calls:")
    lines += [f"  {n:>8}  {f}" for f, n in s["top_by_count"]]
    lines.append("top functions by total time:")
    lines += [f"  {ns / 1e6:>8.3f} ms  {f}" for f, ns in s["top_by_time_ns"]]
    lines.append("exceptions:")
    lines += [f"  {n:>8}  {e}" for e, n in s["exceptions"]] or ["  none"]
    return "\n".join(lines)
