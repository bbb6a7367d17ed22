"""Builds events from raw values (through the bounded snapshot) and writes them to a buffer.

Python port of the seed's ``Ingestor``. Each ``ingest_*`` takes the buffer first, then the
event's values, then the envelope ids as keywords; it returns True when the event was
written and False when the buffer dropped it. Every value passes through the bounded
snapshot, with one byte budget per event. Unlike the seed, every event has timestamps,
ids and correlation, and ``ingest_batch`` attempts every event.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Iterable, Mapping
from typing import Any, Final

from tidescope.capture import _core
from tidescope.capture._core import Limits, snapshot, snapshot_many
from tidescope.capture._snapshot import Snapper, exception_snapshot, type_name
from tidescope.capture.ring_buffer import RingBuffer
from tidescope.events import Event, EventType, ObjectSnapshot, Truncated

__all__ = [
    "BatchResult",
    "diff_state",
    "ingest_batch",
    "ingest_error",
    "ingest_function_call",
    "ingest_function_return",
    "ingest_generic_event",
    "ingest_message_send",
    "ingest_performance_metric",
    "ingest_process_spawn",
    "ingest_state_change",
    "snapshot",
    "snapshot_exception",
    "snapshot_traceback",
]

MAX_TRACEBACK_FRAMES: Final = 32
"""Innermost frames kept from a traceback."""


def _write(
    buffer: RingBuffer,
    event_type: EventType | str,
    data: dict[str, Any],
    call_id: Any,
    parent_id: Any,
    correlation_id: Any,
    ast_node_id: Any,
) -> bool:
    if ast_node_id is not None and type(ast_node_id) is not str:
        ast_node_id = snapshot(ast_node_id)
    return _core.write_event(
        buffer,
        event_type,
        data,
        call_id=call_id,
        parent_id=parent_id,
        correlation_id=correlation_id,
        ast_node_id=ast_node_id,
    )


def ingest_function_call(
    buffer: RingBuffer,
    module: Any,
    function: Any,
    args: Any,
    *,
    call_id: Any = None,
    parent_id: Any = None,
    correlation_id: Any = None,
    ast_node_id: Any = None,
) -> bool:
    """Write a ``function_entry`` event: ``{module, function, arity, args}``.

    ``arity`` is counted before truncation, so 1000 arguments give arity 1000.
    """
    arity = len(args) if type(args) in (list, tuple, dict) else None
    m, f, a = snapshot_many(module, function, args)
    data = {"module": m, "function": f, "arity": arity, "args": a}
    return _write(
        buffer, EventType.FUNCTION_ENTRY, data, call_id, parent_id, correlation_id, ast_node_id
    )


def ingest_function_return(
    buffer: RingBuffer,
    return_value: Any,
    duration_ns: Any,
    *,
    exit_reason: str = "normal",
    call_id: Any = None,
    parent_id: Any = None,
    correlation_id: Any = None,
    ast_node_id: Any = None,
) -> bool:
    """Write a ``function_exit`` event: ``{return_value, exception, duration_ns, exit_reason}``.

    With ``exit_reason="exception"``, ``return_value`` is the exception; it is recorded under
    ``exception`` (see :func:`snapshot_exception`) and ``return_value`` is None.
    """
    if exit_reason == "normal":
        result, exc = snapshot(return_value), None
    else:
        result, exc = None, exception_snapshot(Snapper(_core.get_limits()), return_value)
    data = {
        "return_value": result,
        "exception": exc,
        "duration_ns": duration_ns if type(duration_ns) is int else snapshot(duration_ns),
        "exit_reason": exit_reason if type(exit_reason) is str else snapshot(exit_reason),
    }
    return _write(
        buffer, EventType.FUNCTION_EXIT, data, call_id, parent_id, correlation_id, ast_node_id
    )


def ingest_process_spawn(
    buffer: RingBuffer,
    child_pid: Any,
    *,
    parent_pid: int | None = None,
    call_id: Any = None,
    parent_id: Any = None,
    correlation_id: Any = None,
) -> bool:
    """Write a ``process_spawn`` event: ``{parent_pid, child_pid}`` (parent defaults to us)."""
    data = {
        "parent_pid": os.getpid() if parent_pid is None else snapshot(parent_pid),
        "child_pid": snapshot(child_pid),
    }
    return _write(buffer, EventType.PROCESS_SPAWN, data, call_id, parent_id, correlation_id, None)


def ingest_message_send(
    buffer: RingBuffer,
    to: Any,
    message: Any,
    *,
    sender: Any = None,
    message_id: int | None = None,
    call_id: Any = None,
    parent_id: Any = None,
    correlation_id: Any = None,
) -> bool:
    """Write a ``message_send`` event: ``{sender, to, message, message_id}``.

    ``message_id`` (a new id unless given) lets the matching receive join this send.
    """
    s, t, m = snapshot_many(sender, to, message)
    data = {
        "sender": s,
        "to": t,
        "message": m,
        "message_id": _core.next_id() if message_id is None else message_id,
    }
    return _write(buffer, EventType.MESSAGE_SEND, data, call_id, parent_id, correlation_id, None)


def diff_state(old: Any, new: Any, limits: Limits | None = None) -> dict[str, Any]:
    """Compare two snapshots: ``{"changed": False}``, or what was added, removed and changed.

    Mappings and objects' attributes are compared key by key (bounded by ``max_items``);
    other values only as a whole. Snapshots are plain data, so no user ``__eq__`` runs.
    """
    max_items = (limits or _core.get_limits()).max_items
    try:
        if old == new:
            return {"changed": False}
        a, b = _as_mapping(old), _as_mapping(new)
        if a is None or b is None:
            return {"changed": True}
        added = {k: b[k] for k in b if k not in a}
        removed = [k for k in a if k not in b]
        changed = {k: {"old": a[k], "new": b[k]} for k in a if k in b and a[k] != b[k]}
        out: dict[str, Any] = {"changed": True}
        for name, part in (("added", added), ("removed", removed), ("modified", changed)):
            if len(part) > max_items:
                kept = (
                    dict(list(part.items())[:max_items])
                    if isinstance(part, dict)
                    else part[:max_items]
                )
                out[name] = Truncated(type(part).__name__, len(part), "length", kept)
            else:
                out[name] = part
        return out
    except Exception as exc:
        _core.count_error(exc)
        return {"changed": True, "error": type_name(type(exc))}


def _as_mapping(v: Any) -> dict[Any, Any] | None:
    if type(v) is dict:
        return v
    if type(v) is ObjectSnapshot and type(v.attrs) is dict:
        return v.attrs
    return None


def ingest_state_change(
    buffer: RingBuffer,
    old_state: Any,
    new_state: Any,
    *,
    callback: Any = None,
    server: Any = None,
    call_id: Any = None,
    parent_id: Any = None,
    correlation_id: Any = None,
) -> bool:
    """Write a ``state_change`` event: ``{server, callback, old_state, new_state, state_diff}``.

    The diff is computed on the two snapshots, so it describes exactly what was recorded.
    """
    old, new, srv, cb = snapshot_many(old_state, new_state, server, callback)
    data = {
        "server": srv,
        "callback": cb,
        "old_state": old,
        "new_state": new,
        "state_diff": diff_state(old, new),
    }
    return _write(buffer, EventType.STATE_CHANGE, data, call_id, parent_id, correlation_id, None)


def snapshot_traceback(tb: Any) -> list[dict[str, Any]] | Truncated:
    """The innermost frames of a traceback as ``{file, line, function}`` dicts."""
    frames: list[dict[str, Any]] = []
    total = 0
    while isinstance(tb, types.TracebackType):
        code = tb.tb_frame.f_code
        frames.append(
            {"file": code.co_filename, "line": tb.tb_lineno, "function": code.co_qualname}
        )
        total += 1
        if len(frames) > MAX_TRACEBACK_FRAMES:
            del frames[0]
        tb = tb.tb_next
    if total > len(frames):
        return Truncated("traceback", total, "length", frames)
    return frames


def snapshot_exception(exc: BaseException, limits: Limits | None = None) -> dict[str, Any]:
    """An exception as ``{type, args, attrs}``, read without calling its ``__str__``."""
    return exception_snapshot(Snapper(limits or _core.get_limits()), exc)  # type: ignore[no-any-return]


def ingest_error(
    buffer: RingBuffer,
    error: Any,
    reason: Any = None,
    stacktrace: Any = None,
    *,
    error_class: str | None = None,
    call_id: Any = None,
    parent_id: Any = None,
    correlation_id: Any = None,
    ast_node_id: Any = None,
) -> bool:
    """Write an ``error`` event: ``{error_type, error_class, message, reason, stacktrace}``.

    ``error`` is an exception, an exception class or any value; for an exception with no
    ``stacktrace`` given, its ``__traceback__`` is used. A traceback becomes a list of
    ``{file, line, function}`` frames.
    """
    kind = type(error)  # never isinstance(): it reads __class__ through user code
    if issubclass(kind, BaseException):
        exc = snapshot_exception(error)
        error_type, message = exc["type"], exc["args"]
        if stacktrace is None:
            stacktrace = BaseException.__dict__["__traceback__"].__get__(error)
    elif issubclass(kind, type):
        error_type, message = type_name(error), None
    else:
        error_type, message = "unknown", snapshot(error)
    if type(stacktrace) is types.TracebackType:
        trace: Any = snapshot_traceback(stacktrace)
    else:
        trace = snapshot(stacktrace)
    data = {
        "error_type": error_type,
        "error_class": "unknown" if error_class is None else snapshot(error_class),
        "message": message,
        "reason": snapshot(reason),
        "stacktrace": trace,
    }
    return _write(buffer, EventType.ERROR, data, call_id, parent_id, correlation_id, ast_node_id)


def ingest_performance_metric(
    buffer: RingBuffer,
    metric_name: Any,
    value: Any,
    metadata: Any = None,
    *,
    unit: str | None = None,
    call_id: Any = None,
    parent_id: Any = None,
    correlation_id: Any = None,
) -> bool:
    """Write a ``performance_metric`` event: ``{metric_name, value, unit, metadata}``."""
    name, val, meta, u = snapshot_many(
        metric_name, value, {} if metadata is None else metadata, unit
    )
    data = {"metric_name": name, "value": val, "unit": u, "metadata": meta}
    return _write(
        buffer, EventType.PERFORMANCE_METRIC, data, call_id, parent_id, correlation_id, None
    )


def ingest_generic_event(
    buffer: RingBuffer,
    event_type: EventType | str,
    data: Mapping[str, Any] | Any,
    *,
    call_id: Any = None,
    parent_id: Any = None,
    correlation_id: Any = None,
    ast_node_id: Any = None,
) -> bool:
    """Write an event of any type; ``data`` (a mapping, or any value under ``"value"``) is
    snapshotted like every other payload (the seed stored it raw)."""
    etype: EventType | str
    try:
        etype = EventType(event_type)
    except ValueError:
        etype = event_type if type(event_type) is str else str(snapshot(event_type))
    payload = Snapper(_core.get_limits()).payload(data)
    return _write(buffer, etype, payload, call_id, parent_id, correlation_id, ast_node_id)


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """What :func:`ingest_batch` did: events written, and ``(index, reason)`` per failure."""

    written: int
    failures: list[tuple[int, str]]

    @property
    def ok(self) -> bool:
        """True when every event was written."""
        return not self.failures


def ingest_batch(buffer: RingBuffer, events: Iterable[Any]) -> BatchResult:
    """Write every event, attempting each even after a failure, and report every failure.

    Each item is an :class:`Event` (its ``data`` is snapshotted into a copy) or an
    ``(event_type, data)`` pair (stamped now with this context's ids). A dropped event
    fails with ``"dropped"``, anything else that is not an event with ``"invalid_event"``.
    """
    written = 0
    failures: list[tuple[int, str]] = []
    call_id, parent_id, corr = _core.frame_ids()
    for i, item in enumerate(events):
        try:
            if isinstance(item, Event):
                ev = Event(
                    item.event_id, item.timestamp, item.wall_time, item.node, item.pid,
                    item.thread_id, item.task_id, item.correlation_id, item.parent_id,
                    item.call_id, item.ast_node_id, item.event_type,
                    Snapper(_core.get_limits()).payload(item.data),
                )  # fmt: skip
                ok = buffer.write(ev)
            elif type(item) is tuple and len(item) == 2:
                ok = ingest_generic_event(
                    buffer, item[0], item[1], call_id=call_id, parent_id=parent_id,
                    correlation_id=corr,
                )  # fmt: skip
            else:
                failures.append((i, "invalid_event"))
                continue
        except Exception as exc:
            failures.append((i, f"{type(exc).__name__}: {exc}"))
            continue
        if ok:
            written += 1
        else:
            failures.append((i, "dropped"))
    return BatchResult(written, failures)
