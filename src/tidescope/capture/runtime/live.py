"""Live-session reporters (the seed's LiveView reporting): mount, UI events, assigns, callbacks.

A live session is server-driven UI over a websocket: the server mounts a view, receives UI
events and changes the view's state ("assigns"). Mount and handle_event reporters take the
session's ``correlation_id``, which becomes the envelope correlation (None: this context's);
the others carry this context's correlation. As in the seed, ``report_live_assigns`` and
``report_live_event`` record only when ``should_capture`` is exactly ``True``, and
``report_live_assigns`` writes a ``live_assigns_change`` event.
"""

from __future__ import annotations

from typing import Any

from tidescope.capture.runtime._domain import emit
from tidescope.events import EventType

__all__ = [
    "report_live_assigns",
    "report_live_callback",
    "report_live_callback_error",
    "report_live_callback_success",
    "report_live_event",
    "report_live_handle_event_complete",
    "report_live_handle_event_start",
    "report_live_mount_complete",
    "report_live_mount_start",
]


def report_live_mount_start(correlation_id: Any, module: Any, params: Any, session: Any) -> bool:
    """Record that a live view starts mounting; True if recorded.

    Ports ``PhoenixReporting.report_liveview_mount_start/4``.
    """
    return emit(
        EventType.LIVE_MOUNT_START, correlation_id, module=module, params=params, session=session
    )


def report_live_mount_complete(correlation_id: Any, module: Any, socket_assigns: Any) -> bool:
    """Record a mounted live view's assigns; True if recorded.

    Ports ``PhoenixReporting.report_liveview_mount_complete/3``.
    """
    return emit(
        EventType.LIVE_MOUNT_COMPLETE, correlation_id, module=module, socket_assigns=socket_assigns
    )


def report_live_handle_event_start(
    correlation_id: Any, event: Any, params: Any, socket_assigns: Any
) -> bool:
    """Record that a UI event is being handled, with the assigns before; True if recorded.

    Ports ``PhoenixReporting.report_liveview_handle_event_start/4``.
    """
    return emit(
        EventType.LIVE_HANDLE_EVENT_START, correlation_id,
        event=event, params=params, socket_assigns=socket_assigns,
    )  # fmt: skip


def report_live_handle_event_complete(
    correlation_id: Any, event: Any, params: Any, before_assigns: Any, result: Any
) -> bool:
    """Record a handled UI event's result; True if recorded.

    Ports ``PhoenixReporting.report_liveview_handle_event_complete/5``.
    """
    return emit(
        EventType.LIVE_HANDLE_EVENT_COMPLETE, correlation_id,
        event=event, params=params, before_assigns=before_assigns, result=result,
    )  # fmt: skip


def report_live_assigns(callback_name: Any, socket: Any, should_capture: Any) -> bool:
    """Record a view's state after ``callback_name`` if ``should_capture`` is exactly True;
    True if recorded.

    Ports ``PhoenixReporting.report_liveview_assigns/3`` (event ``live_assigns_change``).
    """
    if should_capture is not True:
        return False
    return emit(EventType.LIVE_ASSIGNS_CHANGE, None, callback_name=callback_name, socket=socket)


def report_live_event(event: Any, params: Any, socket: Any, should_capture: Any) -> bool:
    """Record a UI event if ``should_capture`` is exactly True; True if recorded.

    Ports ``PhoenixReporting.report_liveview_event/4``.
    """
    if should_capture is not True:
        return False
    return emit(EventType.LIVE_EVENT, None, event=event, params=params, socket=socket)


def report_live_callback(callback_name: Any, socket: Any) -> bool:
    """Record that a view callback starts; True if recorded.

    Ports ``PhoenixReporting.report_liveview_callback/2``.
    """
    return emit(EventType.LIVE_CALLBACK, None, callback_name=callback_name, socket=socket)


def report_live_callback_success(callback_name: Any, socket: Any, result: Any) -> bool:
    """Record a view callback's result; True if recorded.

    Ports ``PhoenixReporting.report_liveview_callback_success/3``.
    """
    return emit(
        EventType.LIVE_CALLBACK_SUCCESS, None,
        callback_name=callback_name, socket=socket, result=result,
    )  # fmt: skip


def report_live_callback_error(callback_name: Any, socket: Any, kind: Any, reason: Any) -> bool:
    """Record a view callback's failure; True if recorded.

    Ports ``PhoenixReporting.report_liveview_callback_error/4``.
    """
    return emit(
        EventType.LIVE_CALLBACK_ERROR, None,
        callback_name=callback_name, socket=socket, kind=kind, reason=reason,
    )  # fmt: skip
