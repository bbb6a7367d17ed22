"""Django middleware: one line in ``MIDDLEWARE`` records every request and its view.

::

    MIDDLEWARE = [
        "tidescope.integrations.django.TideScopeMiddleware",  # first, to cover the others
        ...
    ]

Works under WSGI and ASGI (sync and async middleware chains alike). Per request:
``http_request_start`` (method, path, query parameters, client address), a
``remote_call_receive`` for a W3C ``traceparent`` header, ``controller_entry`` when Django
has resolved the view (its module and qualified name, the URL route and name, the view's
arguments), ``controller_exit`` with the response status, or ``action_error``, ``error`` and
``controller_exit`` when the view raises (the exception goes on to Django's own handling
unchanged), and ``http_request_complete`` (status, content type, duration) when the
response is returned, or for a streaming response when the server closes it. One
correlation id is bound while the request runs, so the calls recorded in the view and the
middlewares after this one carry it.

If the request already passed through the WSGI or ASGI middleware of
``tidescope.integrations``, this middleware joins that request's record and adds only the
view's events.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from tidescope.capture import _core
from tidescope.integrations import _web

__all__ = ["TideScopeMiddleware"]

_STATE = "_tidescope"  # request attribute: [WebRequest, handler names, owned by us]


class TideScopeMiddleware:
    """Django middleware recording each request and the view that handles it."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
            # Django runs a synchronous process_view in a worker thread on an async stack
            self.process_view = self._process_view_async  # type: ignore[method-assign,assignment]

    def __call__(self, request: Any) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        if not _web.capturing():
            return self.get_response(request)
        state = _begin(request)
        if state is None:
            return self.get_response(request)
        token = _web.bind(state[0].cid)
        try:
            response = self.get_response(request)
        except BaseException as exc:
            _fail(state, exc)
            if state[2]:
                state[0].finish()  # no response will come
            raise
        finally:
            _web.unbind(token)
        _finish(state, response)
        return response

    async def __acall__(self, request: Any) -> Any:
        """The middleware on an async stack (Django under ASGI)."""
        if not _web.capturing():
            return await self.get_response(request)
        state = _begin(request)
        if state is None:
            return await self.get_response(request)
        token = _web.bind(state[0].cid)
        try:
            response = await self.get_response(request)
        except BaseException as exc:
            _fail(state, exc)
            if state[2]:
                state[0].finish()  # no response will come
            raise
        finally:
            _web.unbind(token)
        _finish(state, response)
        return response

    def process_view(self, request: Any, view_func: Any, view_args: Any, view_kwargs: Any) -> None:
        """Report the view's entry (Django calls this once the URL is resolved)."""
        _enter_view(request, view_func, view_args, view_kwargs)

    async def _process_view_async(
        self, request: Any, view_func: Any, view_args: Any, view_kwargs: Any
    ) -> None:
        _enter_view(request, view_func, view_args, view_kwargs)

    def process_exception(self, request: Any, exception: BaseException) -> None:
        """Report the view's exception; Django's own handling of it goes on unchanged."""
        state = getattr(request, _STATE, None)
        if state is not None:
            _fail(state, exception)


def _begin(request: Any) -> list[Any] | None:
    """The request's record: the outer middleware's if it has one, else a new one."""
    try:
        meta = request.META
        outer = meta.get(_web.REQUEST_KEY) or getattr(request, "scope", {}).get(_web.REQUEST_KEY)
        if outer is not None:
            state = [outer, None, False]
        else:
            ip = meta.get("REMOTE_ADDR")
            port = meta.get("REMOTE_PORT")
            req = _web.begin(
                request.method,
                request.path,
                meta.get("QUERY_STRING"),
                ip,
                meta.get("HTTP_TRACEPARENT"),
                f"{ip}:{port}" if port else ip,
            )
            if req is None:
                return None
            state = [req, None, True]
        setattr(request, _STATE, state)
        return state
    except Exception as exc:
        _core.count_error(exc)
        return None


def _enter_view(request: Any, view_func: Any, view_args: Any, view_kwargs: Any) -> None:
    try:
        state = getattr(request, _STATE, None)
        if state is None or not _web.capturing():
            return
        match = getattr(request, "resolver_match", None)
        metadata = {
            "route": getattr(match, "route", None),
            "name": getattr(match, "view_name", None),
            "args": view_args,
            "kwargs": view_kwargs,
        }
        state[1] = _web.enter_handler(state[0].cid, view_func, metadata)
    except Exception as exc:
        _core.count_error(exc)


def _fail(state: list[Any], exc: BaseException) -> None:
    """The view or a middleware raised ``exc``: report it, once."""
    req, names = state[0], state[1]
    state[1] = None
    _web.fail_handler(req.cid, names, req.summary(), exc)
    req.fail(exc)


def _finish(state: list[Any], response: Any) -> None:
    req, names, owned = state
    state[1] = None
    try:
        status = response.status_code
        _web.exit_handler(req.cid, names, {"status_code": status})
        if not owned:
            return
        req.status = status
        req.content_type = response.get("Content-Type")
        if not response.streaming:
            req.finish()
            return
        close = response.close

        def close_and_complete() -> None:
            try:
                close()
            finally:
                req.finish()

        response.close = close_and_complete
    except Exception as exc:
        _core.count_error(exc)
        req.finish()
