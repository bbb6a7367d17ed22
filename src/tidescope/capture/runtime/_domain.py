"""The one write path of the domain reporters (HTTP, live, channel, database, actor, distributed).

Every domain reporter goes through :func:`tidescope.capture.runtime.core.emit_in_context`:
nothing is recorded when capture is off in this context, and any failure is counted and
turns into ``False``. One :class:`Snapper` per event snapshots every value, so the event
shares one byte budget. An explicit ``correlation_id`` (a request id) becomes the event's
envelope ``correlation_id``; ``call_id`` and ``parent_id`` always come from the context.
"""

from __future__ import annotations

from typing import Any

from tidescope.capture import _core
from tidescope.capture._snapshot import Snapper
from tidescope.capture.ring_buffer import RingBuffer
from tidescope.capture.runtime.core import emit_in_context
from tidescope.events import EventType

__all__ = ["emit"]


def emit(event_type: EventType, correlation_id: Any, /, **data: Any) -> bool:
    """Write ``event_type`` with ``data`` if capture is on here; True if recorded.

    ``correlation_id`` None means "this context's correlation".
    """
    return emit_in_context(_ingest, event_type, correlation_id, data)


def _ingest(
    buffer: RingBuffer,
    event_type: EventType,
    request_id: Any,
    data: dict[str, Any],
    *,
    call_id: Any,
    parent_id: Any,
    correlation_id: Any,
) -> bool:
    flat = _core.flat_event(request_id, data)
    if flat is not None:  # nothing to cut: the same result without the full snapshot
        return _core.write_event(
            buffer,
            event_type,
            flat,
            call_id=call_id,
            parent_id=parent_id,
            correlation_id=correlation_id if request_id is None else request_id,
        )
    s = Snapper(_core.get_limits())
    if request_id is not None:
        # first, so a payload that spends the budget cannot cut the id that joins events up
        correlation_id = s.snap(request_id)
    return _core.write_event(
        buffer,
        event_type,
        s.payload(data),
        call_id=call_id,
        parent_id=parent_id,
        correlation_id=correlation_id,
    )
