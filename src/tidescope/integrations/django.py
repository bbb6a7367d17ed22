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

ORM queries. With ``TIDESCOPE_QUERIES = True`` in the settings, the middleware also records
every query Django runs (the ORM's and ``connection.cursor()``'s) as database events, the
shape of the other database integrations (``db_query_start`` / ``db_query_complete`` joined by
``query_id``, repo ``"<vendor>:<database>"``, an ``error`` event for a failing query). It
installs a ``connection.execute_wrapper`` on every connection made from then on (Django's
``connection_created`` signal) and on this thread's open ones; :func:`record_queries` does
the same without the middleware. Query parameters are recorded as Django passes them
(positional ``%s`` parameters have no names to redact by).
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from tidescope.capture import _core
from tidescope.integrations import _db, _web

__all__ = ["TideScopeMiddleware", "record_queries"]

_STATE = "_tidescope"  # request attribute: [WebRequest, handler names, owned by us]


class TideScopeMiddleware:
    """Django middleware recording each request and the view that handles it."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        _record_queries_if_set()
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


# ---------------------------------------------------------------------------------------
# ORM queries


def _record_queries_if_set() -> None:
    try:
        from django.conf import settings  # noqa: PLC0415

        if getattr(settings, "TIDESCOPE_QUERIES", False) is True:
            record_queries()
    except Exception as exc:
        _core.count_error(exc)


def record_queries() -> None:
    """Record every query Django runs from now on as database events (see the module
    docstring); calling it again changes nothing."""
    from django.db import connections  # noqa: PLC0415
    from django.db.backends.signals import connection_created  # noqa: PLC0415

    connection_created.connect(_on_connection_created, dispatch_uid=_UID)
    try:
        opened = connections.all(initialized_only=True)
    except TypeError:  # Django before 4.1: every alias (connecting none of them)
        opened = connections.all()
    for connection in opened:
        _wrap(connection)


_UID = "tidescope.integrations.django.record_queries"


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    _wrap(connection)


def _wrap(connection: Any) -> None:
    try:
        if _execute not in connection.execute_wrappers:
            connection.execute_wrappers.append(_execute)
    except Exception as exc:
        _core.count_error(exc)


def _repo(connection: Any) -> Any:
    try:
        return _db.repo_name(connection.vendor, connection.settings_dict.get("NAME"))
    except Exception as exc:
        _core.count_error(exc)
        return None


def _execute(execute: Any, sql: Any, params: Any, many: bool, context: dict[str, Any]) -> Any:
    """The execute wrapper: one query reported around Django's own execute."""
    if not _db.capturing():
        return execute(sql, params, many, context)
    query = _db.start_query(sql, params, bool(many), _repo(context.get("connection")))
    if query is None:
        return execute(sql, params, many, context)
    try:
        result = execute(sql, params, many, context)
    except BaseException as exc:
        _db.fail_query(query, exc)
        raise
    _db.finish_query(query, _db.rowcount_of(context.get("cursor")))
    return result
