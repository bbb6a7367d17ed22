"""httpx integration: outgoing requests carry a W3C ``traceparent`` and are recorded.

One line enables it for every client, sync and async, made before or after::

    tidescope.integrations.httpx.instrument_httpx()

or use :class:`TracedClient` / :class:`TracedAsyncClient` where a client is made. While
capture is on, each ``send`` (``get``, ``post``, ``stream``... all go through it) is recorded
as a call ``httpx`` / ``Client.send`` with ``{method, url}`` (credentials removed), its exit
carrying ``{status_code}`` or the exception; inside it the request gets a ``traceparent``
header (trace id from this context's correlation, parent id the id of this call, see
:mod:`tidescope.integrations._propagation`) and a ``remote_call_send`` event records it.
The server side (the ASGI/WSGI middleware, or any service using
``tidescope.capture.runtime.parse_traceparent``) records the matching
``remote_call_receive``; the two join on ``(trace_id, span_id)``.

A ``traceparent`` already on the request (set by the application or another tracer) is kept
and recorded as it is. Redirects followed by the client are one call: the header travels
with them. With capture off, ``send`` runs untouched. Importing :mod:`tidescope` never
imports httpx; this module does.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final

import httpx

from tidescope.capture import _core
from tidescope.integrations._propagation import begin_remote_call, end_remote_call

__all__ = ["TracedAsyncClient", "TracedClient", "instrument_httpx", "uninstrument_httpx"]

_MARK: Final = "__tidescope_traced__"
_saved: dict[type, Any] = {}


def _send(
    real: Callable[..., httpx.Response],
    label: str,
    client: httpx.Client,
    request: httpx.Request,
    args: Any,
    kwargs: Any,
) -> httpx.Response:
    if _core.active_buffer() is None:
        return real(client, request, *args, **kwargs)
    call = begin_remote_call("httpx", label, request.method, str(request.url), request.headers)
    if call is None:
        return real(client, request, *args, **kwargs)
    try:
        response = real(client, request, *args, **kwargs)
    except BaseException as exc:
        end_remote_call(call, error=exc)
        raise
    end_remote_call(call, response.status_code)
    return response


async def _send_async(
    real: Callable[..., Awaitable[httpx.Response]],
    label: str,
    client: httpx.AsyncClient,
    request: httpx.Request,
    args: Any,
    kwargs: Any,
) -> httpx.Response:
    if _core.active_buffer() is None:
        return await real(client, request, *args, **kwargs)
    call = begin_remote_call("httpx", label, request.method, str(request.url), request.headers)
    if call is None:
        return await real(client, request, *args, **kwargs)
    try:
        response = await real(client, request, *args, **kwargs)
    except BaseException as exc:
        end_remote_call(call, error=exc)
        raise
    end_remote_call(call, response.status_code)
    return response


def _traced_send(real: Callable[..., httpx.Response]) -> Callable[..., httpx.Response]:
    @functools.wraps(real)
    def send(self: httpx.Client, request: httpx.Request, *args: Any, **kwargs: Any) -> Any:
        return _send(real, "Client.send", self, request, args, kwargs)

    setattr(send, _MARK, True)
    return send


def _traced_async_send(
    real: Callable[..., Awaitable[httpx.Response]],
) -> Callable[..., Awaitable[httpx.Response]]:
    @functools.wraps(real)
    async def send(
        self: httpx.AsyncClient, request: httpx.Request, *args: Any, **kwargs: Any
    ) -> Any:
        return await _send_async(real, "AsyncClient.send", self, request, args, kwargs)

    setattr(send, _MARK, True)
    return send


class TracedClient(httpx.Client):
    """An ``httpx.Client`` whose requests are recorded and carry ``traceparent``."""

    def send(self, request: httpx.Request, *args: Any, **kwargs: Any) -> httpx.Response:
        real = httpx.Client.send
        if getattr(real, _MARK, False):  # instrument_httpx() is on: it records
            return real(self, request, *args, **kwargs)
        return _send(real, "Client.send", self, request, args, kwargs)


class TracedAsyncClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose requests are recorded and carry ``traceparent``."""

    async def send(self, request: httpx.Request, *args: Any, **kwargs: Any) -> httpx.Response:
        real = httpx.AsyncClient.send
        if getattr(real, _MARK, False):
            return await real(self, request, *args, **kwargs)
        return await _send_async(real, "AsyncClient.send", self, request, args, kwargs)


def instrument_httpx() -> None:
    """Record the requests of every ``httpx.Client`` and ``httpx.AsyncClient`` (and of
    ``httpx.get`` and friends); calling it twice changes nothing."""
    if not getattr(httpx.Client.send, _MARK, False):
        _saved[httpx.Client] = httpx.Client.send
        httpx.Client.send = _traced_send(httpx.Client.send)  # type: ignore[method-assign]
    if not getattr(httpx.AsyncClient.send, _MARK, False):
        _saved[httpx.AsyncClient] = httpx.AsyncClient.send
        traced = _traced_async_send(httpx.AsyncClient.send)
        httpx.AsyncClient.send = traced  # type: ignore[method-assign,assignment]


def uninstrument_httpx() -> None:
    """Undo :func:`instrument_httpx` (:class:`TracedClient` stays traced). A ``send`` patched
    over ours since (by a mocking library, say) is left in place."""
    for cls in (httpx.Client, httpx.AsyncClient):
        if getattr(cls.send, _MARK, False) and cls in _saved:
            cls.send = _saved.pop(cls)  # type: ignore[method-assign]
