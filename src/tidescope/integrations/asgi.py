"""ASGI middleware: each HTTP request and websocket connection recorded under one correlation.

Wrap any ASGI 3 application (Starlette, FastAPI, Django's ``get_asgi_application()``,
Channels' ``ProtocolTypeRouter``)::

    from tidescope.integrations.asgi import TideScopeMiddleware

    app = TideScopeMiddleware(app)          # or, in Starlette/FastAPI:
    app.add_middleware(TideScopeMiddleware)

Per HTTP request: ``http_request_start`` (method, path, query parameters, client address),
a ``remote_call_receive`` when the caller sent a W3C ``traceparent`` header, the matched
endpoint's ``controller_entry``/``controller_exit`` in Starlette and FastAPI, an ``error``
for an exception escaping the application (which is re-raised unchanged), and
``http_request_complete`` (status, content type, duration) when the application returns
(after the response and its background tasks). One correlation id is bound for the whole
request, so every call recorded while it runs, in its tasks and in the threads Starlette
and Django hand sync handlers to, carries it.

Per websocket connection, under one correlation: ``channel_join_start`` when the client
connects and ``channel_join_complete`` when the application accepts or refuses it; for each
client message (and the disconnect) ``channel_message_start``, then
``channel_message_complete`` when the application asks for the next message or returns;
every message the application sends afterwards as ``message_send``.

Lifespan and other scopes pass through untouched. With capture off the middleware only
checks one flag per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from tidescope.capture import _core
from tidescope.capture.runtime import (
    report_channel_join_complete,
    report_channel_join_start,
    report_channel_message_complete,
    report_channel_message_start,
    report_message_send,
    report_remote_call_receive,
)
from tidescope.integrations import _web, _web_starlette

__all__ = ["TideScopeMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TideScopeMiddleware:
    """Records the HTTP requests and websocket connections that reach ``app``.

    Args:
        app: the ASGI 3 application to wrap.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        _web_starlette.install()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _web.capturing():
            return await self.app(scope, receive, send)
        try:
            # a scope already recorded by an outer instance goes through
            kind = scope["type"] if _web.REQUEST_KEY not in scope else None
        except Exception as exc:
            _core.count_error(exc)
            kind = None
        if kind == "http":
            return await self._http(scope, receive, send)
        if kind == "websocket":
            return await self._websocket(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        req = _begin_http(scope)
        if req is None:
            return await self.app(scope, receive, send)

        async def traced_send(message: Message) -> None:
            try:
                if message["type"] == "http.response.start":
                    req.status = message.get("status")
                    req.content_type = _web.content_type_of(message.get("headers") or ())
            except Exception as exc:
                _core.count_error(exc)
            await send(message)

        token = _web.bind(req.cid)
        try:
            await self.app(scope, receive, traced_send)
        except BaseException as exc:
            req.fail(exc)
            raise
        finally:
            req.finish()
            _web.unbind(token)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn = _Connection.begin(scope)
        if conn is None:
            return await self.app(scope, receive, send)

        async def traced_receive() -> Message:
            conn.end_message(None)  # asking for the next message: the last one is handled
            message = await receive()
            conn.received(message)
            return message

        async def traced_send(message: Message) -> None:
            conn.sending(message)
            await send(message)

        token = _web.bind(conn.req.cid)
        try:
            await self.app(scope, traced_receive, traced_send)
        except BaseException as exc:
            conn.req.fail(exc)
            conn.end_message(exc)
            raise
        finally:
            conn.end_message(None)
            _web.unbind(token)


def _header(headers: Iterable[Any] | None, name: bytes) -> str | None:
    """The value of request header ``name`` (lowercase, as ASGI gives them), or None."""
    for pair in headers or ():
        if pair[0] == name:
            value = pair[1]
            return value.decode("latin-1") if isinstance(value, bytes | bytearray) else value
    return None


def _client(scope: Scope) -> tuple[Any, Any]:
    """``(ip, "ip:port")`` of the client, or Nones (a Unix socket, a test client)."""
    client = scope.get("client")
    if not client:
        return None, None
    return client[0], f"{client[0]}:{client[1]}" if len(client) > 1 else client[0]


def _begin_http(scope: Scope) -> _web.WebRequest | None:
    try:
        traceparent = _header(scope.get("headers"), b"traceparent")
        client = scope.get("client")
        # "ip:port" is made only for the remote call a traceparent asks for
        source = _client(scope)[1] if traceparent is not None else None
        req = _web.begin(
            scope.get("method"),
            scope.get("path"),
            scope.get("query_string"),
            client[0] if client else None,
            traceparent,
            source,
        )
        if req is not None:
            scope[_web.REQUEST_KEY] = req
        return req
    except Exception as exc:
        _core.count_error(exc)
        return None


class _Connection:
    """One websocket connection: its join, and the client message being handled."""

    __slots__ = ("joined", "message", "payload", "req", "sent", "socket", "topic")

    def __init__(self, req: _web.WebRequest, topic: Any, payload: Any, socket: Any) -> None:
        self.req = req
        self.topic = topic
        self.payload = payload
        self.socket = socket
        self.joined = False
        self.message: tuple[Any, Any] | None = None  # (event, payload) being handled
        self.sent = 0

    @classmethod
    def begin(cls, scope: Scope) -> _Connection | None:
        """Start recording the connection of ``scope`` (None on an internal error)."""
        try:
            path = scope.get("path")
            source = _client(scope)[1]
            traceparent = _header(scope.get("headers"), b"traceparent")
            req = _web.WebRequest(_web.correlation_for(traceparent), "WEBSOCKET", path)
            payload = {
                "params": _web.parse_query(scope.get("query_string")),
                "subprotocols": scope.get("subprotocols"),
            }
            conn = cls(req, path, payload, {"client": source, "path": path})
            if traceparent is not None:
                report_remote_call_receive(
                    req.cid, source, traceparent, {"method": "WEBSOCKET", "path": path}
                )
            scope[_web.REQUEST_KEY] = req
            return conn
        except Exception as exc:
            _core.count_error(exc)
            return None

    def received(self, message: Message) -> None:
        """Report a message the application received from the client."""
        try:
            kind = message["type"]
            cid = self.req.cid
            if kind == "websocket.receive":
                text = message.get("text")
                payload = text if text is not None else message.get("bytes")
                self._open("receive", payload)
            elif kind == "websocket.connect":
                report_channel_join_start(cid, self.topic, self.payload, self.socket)
            elif kind == "websocket.disconnect":
                self._open(
                    "disconnect", {"code": message.get("code"), "reason": message.get("reason")}
                )
        except Exception as exc:
            _core.count_error(exc)

    def _open(self, event: str, payload: Any) -> None:
        self.message = (event, payload)
        self.sent = 0
        report_channel_message_start(self.req.cid, event, payload, self.socket)

    def sending(self, message: Message) -> None:
        """Report a message the application sends: the join's outcome, or a message out."""
        try:
            kind = message["type"]
            if self.joined:
                self.sent += 1
                report_message_send(self.topic, message)
                return
            if kind == "websocket.accept":
                result = {"accepted": True, "subprotocol": message.get("subprotocol")}
            elif kind == "websocket.close":
                result = {"accepted": False, "code": message.get("code", 1000)}
            elif kind == "websocket.http.response.start":
                result = {"accepted": False, "status": message.get("status")}
            else:  # out of protocol; the server will say so
                report_message_send(self.topic, message)
                return
            self.joined = True
            report_channel_join_complete(self.req.cid, self.topic, self.payload, result)
        except Exception as exc:
            _core.count_error(exc)

    def end_message(self, exc: BaseException | None) -> None:
        """Report the end of the message being handled, if any: how many messages the
        application sent meanwhile, and the exception that ended it (``error``) or the
        cancellation (``interrupted``)."""
        message = self.message
        if message is None:
            return
        self.message = None
        try:
            result: dict[str, Any] = {"sent": self.sent}
            if exc is not None:
                key = "error" if issubclass(type(exc), Exception) else "interrupted"
                result[key] = _web.exception_name(exc)
            report_channel_message_complete(self.req.cid, message[0], message[1], result)
        except Exception as err:
            _core.count_error(err)
