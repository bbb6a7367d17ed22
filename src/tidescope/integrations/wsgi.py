"""WSGI middleware: each request recorded under one correlation, until its body is done.

Wrap any WSGI application (Flask's ``app.wsgi_app``, Django's ``get_wsgi_application()``)::

    from tidescope.integrations.wsgi import TideScopeMiddleware

    application = TideScopeMiddleware(application)

Per request: ``http_request_start`` (method, path, query parameters, client address), a
``remote_call_receive`` when the caller sent a W3C ``traceparent`` header, an ``error`` for
an exception escaping the application or its body iterable (re-raised unchanged), and
``http_request_complete`` (status, content type, duration) when the server closes the body
iterable or it is exhausted (at once for a list or tuple body: it is all made already).
The body iterable's own ``close()`` is always called. One correlation id is bound while
the application runs and again while each body chunk is produced, so every call recorded
meanwhile carries it (a streaming generator's too), and the server's thread is left as it
was between chunks.

The Flask extension (``tidescope.integrations.flask``) and the Django middleware
(``tidescope.integrations.django``) add the view's entry and exit. With capture off the
middleware only checks one flag per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tidescope.capture import _core
from tidescope.integrations import _web

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["TideScopeMiddleware"]

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]


class TideScopeMiddleware:
    """Records the requests that reach ``app``.

    Args:
        app: the WSGI application to wrap.
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not _web.capturing():
            return self.app(environ, start_response)
        req = _begin(environ)
        if req is None:
            return self.app(environ, start_response)

        def traced_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: _ExcInfo | None = None
        ) -> Any:
            try:
                req.status = _status_code(status)
                req.content_type = _web.content_type_of(headers)
            except Exception as exc:
                _core.count_error(exc)
            return start_response(status, headers, exc_info)

        token = _web.bind(req.cid)
        try:
            body = self.app(environ, traced_start_response)
        except BaseException as exc:
            req.fail(exc)
            req.finish()
            raise
        finally:
            _web.unbind(token)
        wrapped: Iterable[bytes] = _wrap_body(body, req, environ)
        return wrapped


def _begin(environ: WSGIEnvironment) -> _web.WebRequest | None:
    try:
        ip = environ.get("REMOTE_ADDR")
        port = environ.get("REMOTE_PORT")
        script, info = environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", "")
        if type(script) is str and type(info) is str:
            path: Any = _web.wsgi_text(script + info)
        else:  # out of PEP 3333: recorded as it is
            path = info
        traceparent = environ.get("HTTP_TRACEPARENT")
        req = _web.begin(
            environ.get("REQUEST_METHOD"),
            path,
            environ.get("QUERY_STRING"),
            ip,
            traceparent,
            # "ip:port" is made only for the remote call a traceparent asks for
            (f"{ip}:{port}" if port else ip) if traceparent is not None else None,
        )
        if req is not None:
            environ[_web.REQUEST_KEY] = req
        return req
    except Exception as exc:
        _core.count_error(exc)
        return None


def _status_code(status: Any) -> Any:
    """``200`` for ``"200 OK"``; the status as given if it has no numeric code."""
    code = str(status).split(" ", 1)[0]
    return int(code) if code.isdigit() else status


def _wrap_body(body: Iterable[bytes], req: _web.WebRequest, environ: WSGIEnvironment) -> Any:
    """``body`` wrapped so that its end completes the request. A list or tuple (the whole
    body, made already: iterating it runs no application code) and a server's file wrapper
    (so the server can still send the file its own way) are returned as they are, and the
    request completes now."""
    try:
        if type(body) is list or type(body) is tuple:
            req.finish()
            return body
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
            req.finish()
            return body
        # a sized body keeps its len(): servers use len() == 1 to set Content-Length
        return _SizedBody(body, req) if hasattr(type(body), "__len__") else _Body(body, req)
    except Exception as exc:
        _core.count_error(exc)
        req.finish()
        return body


class _Body:
    """A response body that completes its request when exhausted or closed."""

    __slots__ = ("_body", "_iterator", "_req")

    def __init__(self, body: Iterable[bytes], req: _web.WebRequest) -> None:
        self._body = body
        self._req = req
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        req = self._req
        token = _web.bind(req.cid)
        try:
            if self._iterator is None:
                self._iterator = iter(self._body)
            return next(self._iterator)
        except StopIteration:
            req.finish()
            raise
        except BaseException as exc:
            req.fail(exc)
            req.finish()
            raise
        finally:
            _web.unbind(token)

    def close(self) -> None:
        """Close the application's body (PEP 3333), then complete the request."""
        req = self._req
        token = _web.bind(req.cid)
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            req.fail(exc)
            raise
        finally:
            _web.unbind(token)
            req.finish()


class _SizedBody(_Body):
    """A :class:`_Body` whose application body has a length."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._body)  # type: ignore[arg-type]
