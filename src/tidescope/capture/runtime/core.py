"""Core reporters (the seed's ``CoreReporting``): calls, process spawns, messages, state, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tidescope.capture import _core, ingestor
from tidescope.capture._core import report_function_entry, report_function_exit

__all__ = [
    "report_error",
    "report_function_entry",
    "report_function_exit",
    "report_message_send",
    "report_process_spawn",
    "report_state_change",
]


def emit_in_context(ingest: Callable[..., bool], *args: Any, **kwargs: Any) -> bool:
    """Call ``ingest(buffer, *args, call_id=..., parent_id=..., correlation_id=...)`` with this
    context's ids if capture is on here; count and swallow any failure. The gate every
    non-hot reporter shares."""
    buf = _core.active_buffer()
    if buf is None:
        return False
    try:
        call_id, parent_id, corr = _core.frame_ids()
        return ingest(
            buf, *args, call_id=call_id, parent_id=parent_id, correlation_id=corr, **kwargs
        )
    except Exception as exc:
        _core.count_error(exc)
        return False


def report_process_spawn(child_pid: Any) -> bool:
    """Record that this process started ``child_pid``; True if recorded.

    Ports ``CoreReporting.report_process_spawn/1``.
    """
    return emit_in_context(ingestor.ingest_process_spawn, child_pid)


def report_message_send(to: Any, message: Any) -> bool:
    """Record a message sent to ``to`` (a queue, task, actor, pid...); True if recorded.

    Ports ``CoreReporting.report_message_send/2``; the event carries a ``message_id``.
    """
    return emit_in_context(ingestor.ingest_message_send, to, message)


def report_state_change(old_state: Any, new_state: Any) -> bool:
    """Record a state transition with a diff of the two snapshots; True if recorded.

    Ports ``CoreReporting.report_state_change/2``.
    """
    return emit_in_context(ingestor.ingest_state_change, old_state, new_state)


def report_error(error: Any, reason: Any = None, stacktrace: Any = None) -> bool:
    """Record an error (an exception, an exception class or any value); True if recorded.

    Ports ``CoreReporting.report_error/3``. An exception's own traceback is used when
    ``stacktrace`` is None.
    """
    return emit_in_context(ingestor.ingest_error, error, reason, stacktrace)
