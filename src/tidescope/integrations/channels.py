"""Django Channels consumers: connect, receive, send and disconnect as channel and live-session
events, with the consumer's state before and after each message.

::

    from tidescope.integrations.channels import TideScopeConsumerMixin, traced_consumer

    class ChatConsumer(TideScopeConsumerMixin, AsyncWebsocketConsumer): ...
    # or, for a consumer you do not own:
    path("ws/chat/", traced_consumer(ChatConsumer).as_asgi())

A consumer is the closest Python relative of a Phoenix channel and of a LiveView: one
instance per connection, whose attributes are its state ("assigns": every instance
attribute not starting with ``_``, less Channels' own). Under one correlation id per
connection:

* connect: ``channel_join_start`` and ``live_mount_start`` (the consumer class, the URL
  route's arguments, the session), then ``live_mount_complete`` (the state after
  ``connect()``) and ``channel_join_complete`` (accepted, refused, or not yet decided);
* each client message: ``channel_message_start`` and ``live_handle_event_start`` (the text
  or bytes and the state before), then ``live_handle_event_complete`` (the state after),
  a ``live_assigns_change`` if the state changed, and ``channel_message_complete``;
* each message the consumer sends: ``message_send``;
* disconnect, and each channel-layer message (``group_send``): ``channel_message_start``,
  ``live_callback`` and ``live_callback_success`` (or ``live_callback_error``),
  ``channel_message_complete``.

An exception from a handler is reported (``error``, and the callback's error or complete
event) and re-raised unchanged. Under the ASGI middleware (``tidescope.integrations.asgi``)
the connection keeps the middleware's correlation and channel events, and the consumer adds
the live-session ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, TypeVar

from tidescope.capture import _core
from tidescope.capture.runtime import (
    report_channel_join_complete,
    report_channel_join_start,
    report_channel_message_complete,
    report_channel_message_start,
    report_error,
    report_live_assigns,
    report_live_callback,
    report_live_callback_error,
    report_live_callback_success,
    report_live_handle_event_complete,
    report_live_handle_event_start,
    report_live_mount_complete,
    report_live_mount_start,
    report_message_send,
)
from tidescope.integrations import _web

__all__ = ["TideScopeConsumerMixin", "traced_consumer"]

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
C = TypeVar("C", bound=type)

# set by Channels on every consumer: connection plumbing, not the consumer's state
_PLUMBING: Final = frozenset(
    {"scope", "channel_layer", "channel_name", "channel_receive", "base_send", "groups"}
)
_RECORD: Final = "_tidescope_record"


class TideScopeConsumerMixin:
    """Put first in a consumer's bases to record its connection (see the module docstring)."""

    async def __call__(self, scope: Any, receive: Any, send: Send) -> None:
        parent: Any = super()
        if not _web.capturing():
            return await parent.__call__(scope, receive, send)  # type: ignore[no-any-return]
        record = _Record.begin(self, scope)
        if record is None:
            return await parent.__call__(scope, receive, send)  # type: ignore[no-any-return]
        setattr(self, _RECORD, record)
        token = _web.bind(record.cid)
        try:
            await parent.__call__(scope, receive, record.traced_send(send))
        except BaseException as exc:
            if record.owned and issubclass(type(exc), Exception):
                report_error(exc)
            raise
        finally:
            _web.unbind(token)

    async def dispatch(self, message: Message) -> None:
        """Record the handling of ``message`` (Channels' dispatch does the handling)."""
        parent: Any = super()
        record: _Record | None = getattr(self, _RECORD, None)
        if record is None:
            return await parent.dispatch(message)  # type: ignore[no-any-return]
        started = record.before(self, message)
        try:
            await parent.dispatch(message)
        except BaseException as exc:
            record.after(self, started, None if _stops_consumer(exc) else exc)
            raise
        record.after(self, started, None)


def traced_consumer(consumer_class: C) -> C:
    """A subclass of ``consumer_class`` with :class:`TideScopeConsumerMixin` first."""
    name = consumer_class.__name__
    traced = type(name, (TideScopeConsumerMixin, consumer_class), {})
    traced.__qualname__ = consumer_class.__qualname__
    traced.__module__ = consumer_class.__module__
    traced.__doc__ = consumer_class.__doc__
    return traced  # type: ignore[return-value]


def _stops_consumer(exc: BaseException) -> bool:
    """Channels ends a consumer with StopConsumer: a normal exit, not an error."""
    from channels.exceptions import StopConsumer  # noqa: PLC0415 - only when used

    return issubclass(type(exc), StopConsumer)


def _status(exc: BaseException | None) -> dict[str, str]:
    """How a handling ended, for a result: ``{}``, ``{"error": ...}`` for an exception, or
    ``{"interrupted": ...}`` for a cancellation or exit (not the consumer's fault)."""
    if exc is None:
        return {}
    key = "error" if issubclass(type(exc), Exception) else "interrupted"
    return {key: _web.exception_name(exc)}


def _assigns(consumer: Any) -> dict[str, Any]:
    """The consumer's state: its public instance attributes, less Channels' plumbing."""
    return {
        k: v
        for k, v in vars(consumer).items()
        if k[:1] != "_" and k not in _PLUMBING and type(k) is str
    }


class _Record:
    """One consumer's connection: ids, join state, messages sent."""

    __slots__ = ("accepted", "cid", "module", "owned", "payload", "sent", "socket", "topic")

    def __init__(self, cid: Any, owned: bool, module: Any, topic: Any, payload: Any) -> None:
        self.cid = cid
        self.owned = owned  # no ASGI middleware outside: channel events are ours to report
        self.module = module
        self.topic = topic
        self.payload = payload
        self.socket: Any = None
        self.accepted: Any = None  # True, False, None (not decided yet)
        self.sent = 0

    @classmethod
    def begin(cls, consumer: Any, scope: Any) -> _Record | None:
        try:
            outer = scope.get(_web.REQUEST_KEY)
            owned = outer is None
            cid = _core.next_id() if owned else outer.cid
            route = scope.get("url_route") or {}
            payload = {
                "params": _web.parse_query(scope.get("query_string")),
                "route": route.get("kwargs"),
            }
            cls_ = type(consumer)
            module = f"{cls_.__module__}.{cls_.__qualname__}"
            record = cls(cid, owned, module, scope.get("path"), payload)
            client = scope.get("client")
            record.socket = {
                "client": f"{client[0]}:{client[1]}" if client else None,
                "path": scope.get("path"),
                "consumer": module,
            }
            return record
        except Exception as exc:
            _core.count_error(exc)
            return None

    def traced_send(self, send: Send) -> Send:
        """``send`` reporting each message the consumer sends."""

        async def traced(message: Message) -> None:
            try:
                kind = message.get("type")
                if self.accepted is None and kind == "websocket.accept":
                    self.accepted = True
                elif self.accepted is None and kind == "websocket.close":
                    self.accepted = False
                else:
                    self.sent += 1
                    if self.owned:
                        report_message_send(self.topic, message)
            except Exception as exc:
                _core.count_error(exc)
            await send(message)

        return traced

    def before(self, consumer: Any, message: Message) -> tuple[Any, ...] | None:
        """Report that ``message`` is about to be handled; returns what :meth:`after` needs."""
        try:
            cid, kind = self.cid, message.get("type")
            assigns = _assigns(consumer)
            self.sent = 0
            if kind == "websocket.connect":
                if self.owned:
                    report_channel_join_start(cid, self.topic, self.payload, self.socket)
                report_live_mount_start(
                    cid, self.module, self.payload, consumer.scope.get("session")
                )
                return (kind, None, None)
            if kind == "websocket.receive":
                text = message.get("text")
                payload = text if text is not None else message.get("bytes")
                event: Any = "receive"
            else:  # the disconnect, or a channel-layer message: the handle_info shape
                event = "disconnect" if kind == "websocket.disconnect" else kind
                payload = message
            if self.owned:
                report_channel_message_start(cid, event, payload, self.socket)
            if event == "receive":
                report_live_handle_event_start(cid, event, payload, assigns)
            else:
                report_live_callback(event, assigns)
            return (event, payload, _core.snapshot(assigns))
        except Exception as exc:
            _core.count_error(exc)
            return None

    def after(
        self, consumer: Any, started: tuple[Any, ...] | None, exc: BaseException | None
    ) -> None:
        """Report the end of the handling :meth:`before` started (``exc``: what it raised)."""
        if started is None:
            return
        try:
            cid = self.cid
            event, payload, before = started
            assigns = _assigns(consumer)
            status = _status(exc)
            if event == "websocket.connect":
                report_live_mount_complete(cid, self.module, assigns)
                if self.owned:
                    result = {"accepted": self.accepted, **status}
                    report_channel_join_complete(cid, self.topic, self.payload, result)
                return
            if event == "receive":
                outcome = {"assigns": assigns, **status}
                report_live_handle_event_complete(cid, event, payload, before, outcome)
                if _core.snapshot(assigns) != before:
                    report_live_assigns(event, assigns, True)
            elif exc is None:
                report_live_callback_success(event, assigns, None)
            else:
                report_live_callback_error(event, assigns, _web.exception_name(exc), exc)
            if self.owned:
                result = {"sent": self.sent, **status}
                report_channel_message_complete(cid, event, payload, result)
        except Exception as err:
            _core.count_error(err)
