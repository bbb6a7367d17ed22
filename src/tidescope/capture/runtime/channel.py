"""Websocket channel reporters (the seed's Phoenix Channel reporting): join and message.

Each takes the connection's ``correlation_id``, which becomes the envelope correlation
(None: this context's correlation).
"""

from __future__ import annotations

from typing import Any

from tidescope.capture.runtime._domain import emit
from tidescope.events import EventType

__all__ = [
    "report_channel_join_complete",
    "report_channel_join_start",
    "report_channel_message_complete",
    "report_channel_message_start",
]


def report_channel_join_start(correlation_id: Any, topic: Any, payload: Any, socket: Any) -> bool:
    """Record that a client asks to join ``topic``; True if recorded.

    Ports ``PhoenixReporting.report_phoenix_channel_join_start/4``.
    """
    return emit(
        EventType.CHANNEL_JOIN_START, correlation_id, topic=topic, payload=payload, socket=socket
    )


def report_channel_join_complete(
    correlation_id: Any, topic: Any, payload: Any, result: Any
) -> bool:
    """Record a join's outcome; True if recorded.

    Ports ``PhoenixReporting.report_phoenix_channel_join_complete/4``.
    """
    return emit(
        EventType.CHANNEL_JOIN_COMPLETE, correlation_id, topic=topic, payload=payload, result=result
    )


def report_channel_message_start(
    correlation_id: Any, event: Any, payload: Any, socket: Any
) -> bool:
    """Record an incoming channel message; True if recorded.

    Ports ``PhoenixReporting.report_phoenix_channel_message_start/4``.
    """
    return emit(
        EventType.CHANNEL_MESSAGE_START, correlation_id, event=event, payload=payload, socket=socket
    )


def report_channel_message_complete(
    correlation_id: Any, event: Any, payload: Any, result: Any
) -> bool:
    """Record a handled channel message's result (a reply, a push, nothing); True if recorded.

    Ports ``PhoenixReporting.report_phoenix_channel_message_complete/4``.
    """
    return emit(
        EventType.CHANNEL_MESSAGE_COMPLETE, correlation_id,
        event=event, payload=payload, result=result,
    )  # fmt: skip
