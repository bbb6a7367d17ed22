"""Actor reporters (the seed's GenServer reporting): callbacks with real state snapshots and diffs.

An actor is a stateful server driven by messages (an asyncio task reading a queue, a thread,
an object whose methods are its callbacks). Instrumented code reports one callback as
``start`` (the state before), then ``success`` (result and new state) or ``error``, then
``complete`` (the state after). The seed passed booleans where the state belonged; these
take the state itself and record a bounded snapshot of it.

State diffs. ``start`` remembers its state snapshot in this context (thread or asyncio task)
for this capture session's buffer, keyed by the actor and the callback name; ``success`` and
``complete`` record a ``state_diff`` against it (None when no start is remembered), and
``complete`` forgets it. Nested starts of one key are a stack. At most
:data:`MAX_PENDING_STARTS` starts are kept per context (the oldest goes first, and those of
ended sessions with it), so a start never followed by ``complete`` cannot grow memory.
An actor given as a ``str`` or ``int`` is keyed by value (one name, one actor); any other
object by ``id()``, so never compare two callbacks of an object that died in between.

The state is snapshotted right after the callback name and before anything else, with the
event's budget still whole, so two snapshots of an unchanged state are equal and the diff
never reports a change that is only a different cut.
"""

from __future__ import annotations

import contextvars
import weakref
from typing import Any, Final

from tidescope.capture import _core
from tidescope.capture._snapshot import Snapper
from tidescope.capture.ingestor import diff_state
from tidescope.capture.ring_buffer import RingBuffer
from tidescope.capture.runtime.core import emit_in_context
from tidescope.events import EventType

__all__ = [
    "MAX_PENDING_STARTS",
    "report_actor_callback_complete",
    "report_actor_callback_error",
    "report_actor_callback_start",
    "report_actor_callback_success",
]

MAX_PENDING_STARTS: Final = 32
"""Remembered start states per context."""

# Entries are ((actor key, callback key), weakref to the buffer, state snapshot). The buffer
# ties a start to its session: a later session never diffs against it, and a dead buffer's
# entries are dropped. The tuple is immutable and replaced on each change, so a task that
# copied this context never sees its creator's later starts, nor its creator the task's.
_Entry = tuple[tuple[Any, Any], "weakref.ref[RingBuffer]", Any]
_starts: contextvars.ContextVar[tuple[_Entry, ...]] = contextvars.ContextVar(
    "tidescope_actor_starts", default=()
)
_MISSING: Final = object()


def _identity(v: Any) -> Any:
    t = type(v)
    if t is str or t is int:
        return v
    return ("id", id(v))  # never hash or compare a user object: its code could run


def _key(actor: Any, callback_name: Any) -> tuple[Any, Any]:
    return (_identity(actor), _identity(callback_name))


def _remember(buffer: RingBuffer, key: tuple[Any, Any], state: Any) -> None:
    pending = tuple(e for e in _starts.get() if e[1]() is not None)
    if len(pending) >= MAX_PENDING_STARTS:
        pending = pending[len(pending) - MAX_PENDING_STARTS + 1 :]
    _starts.set((*pending, (key, weakref.ref(buffer), state)))


def _recall(buffer: RingBuffer, key: tuple[Any, Any], *, forget: bool) -> Any:
    pending = _starts.get()
    for i in range(len(pending) - 1, -1, -1):
        e = pending[i]
        if e[0] == key and e[1]() is buffer:
            if forget:
                _starts.set(pending[:i] + pending[i + 1 :])
            return e[2]
    return _MISSING


def _write(
    buffer: RingBuffer,
    event_type: EventType,
    data: dict[str, Any],
    call_id: Any,
    parent_id: Any,
    correlation_id: Any,
) -> bool:
    return _core.write_event(
        buffer,
        event_type,
        data,
        call_id=call_id,
        parent_id=parent_id,
        correlation_id=correlation_id,
    )


def _ingest_start(
    buffer: RingBuffer,
    callback_name: Any,
    actor: Any,
    state: Any,
    *,
    call_id: Any,
    parent_id: Any,
    correlation_id: Any,
) -> bool:
    s = Snapper(_core.get_limits())
    callback = s.snap(callback_name)
    old = s.snap(state)
    _remember(buffer, _key(actor, callback_name), old)
    data = {"callback": callback, "server": s.snap(actor), "old_state": old}
    return _write(buffer, EventType.ACTOR_CALLBACK_START, data, call_id, parent_id, correlation_id)


def _ingest_after(
    buffer: RingBuffer,
    event_type: EventType,
    callback_name: Any,
    actor: Any,
    new_state: Any,
    result: Any,
    *,
    call_id: Any,
    parent_id: Any,
    correlation_id: Any,
) -> bool:
    s = Snapper(_core.get_limits())
    callback = s.snap(callback_name)
    new = s.snap(new_state)
    complete = event_type is EventType.ACTOR_CALLBACK_COMPLETE
    old = _recall(buffer, _key(actor, callback_name), forget=complete)
    data = {"callback": callback, "server": s.snap(actor)}
    if not complete:
        data["result"] = s.snap(result)
    data["new_state"] = new
    # the diff holds parts of two bounded snapshots, bounded again by max_items
    data["state_diff"] = None if old is _MISSING else diff_state(old, new)
    return _write(buffer, event_type, data, call_id, parent_id, correlation_id)


def _ingest_error(
    buffer: RingBuffer,
    callback_name: Any,
    actor: Any,
    kind: Any,
    reason: Any,
    *,
    call_id: Any,
    parent_id: Any,
    correlation_id: Any,
) -> bool:
    data = Snapper(_core.get_limits()).payload(
        {"callback": callback_name, "server": actor, "kind": kind, "reason": reason}
    )
    return _write(buffer, EventType.ACTOR_CALLBACK_ERROR, data, call_id, parent_id, correlation_id)


def report_actor_callback_start(callback_name: Any, actor: Any, state: Any) -> bool:
    """Record that ``actor`` runs ``callback_name`` with ``state`` (snapshotted, remembered
    for the diffs of success and complete); True if recorded.

    Ports ``GenServerReporting.report_genserver_callback_start/3``. Data:
    ``{callback, server, old_state}``.
    """
    return emit_in_context(_ingest_start, callback_name, actor, state)


def report_actor_callback_success(
    callback_name: Any, actor: Any, result: Any, new_state: Any
) -> bool:
    """Record a callback's result and the state it leaves; True if recorded.

    Ports ``GenServerReporting.report_genserver_callback_success/3``. Data:
    ``{callback, server, result, new_state, state_diff}``, the diff against the remembered
    start state (None if there is none).
    """
    return emit_in_context(
        _ingest_after, EventType.ACTOR_CALLBACK_SUCCESS, callback_name, actor, new_state, result
    )


def report_actor_callback_error(callback_name: Any, actor: Any, kind: Any, reason: Any) -> bool:
    """Record a callback's failure (``kind``: an exception class or a label; ``reason``: the
    exception or a value); True if recorded.

    Ports ``GenServerReporting.report_genserver_callback_error/4``. Data:
    ``{callback, server, kind, reason}``. The start state stays remembered for ``complete``.
    """
    return emit_in_context(_ingest_error, callback_name, actor, kind, reason)


def report_actor_callback_complete(callback_name: Any, actor: Any, state: Any) -> bool:
    """Record the state a callback ends with and forget its start state; True if recorded.

    Ports ``GenServerReporting.report_genserver_callback_complete/3``. Data:
    ``{callback, server, new_state, state_diff}``.
    """
    return emit_in_context(
        _ingest_after, EventType.ACTOR_CALLBACK_COMPLETE, callback_name, actor, state, None
    )
