"""Flask extension: one line records every request and the view that handles it.

::

    from tidescope.integrations.flask import TideScope

    TideScope(app)            # or: ext = TideScope(); ext.init_app(app)

Requests are recorded by the WSGI middleware (``tidescope.integrations.wsgi``), installed
around ``app.wsgi_app``. Around the view itself: ``controller_entry`` (the view's module and
qualified name; the endpoint, URL rule and view arguments), then ``controller_exit`` with
the value the view returned, or ``action_error`` and ``controller_exit`` if it raised. An
exception Flask turns into a 500 is reported as an ``error`` (from Flask's
``got_request_exception`` signal), once even when Flask propagates it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tidescope.capture import _core
from tidescope.integrations import _web
from tidescope.integrations.wsgi import TideScopeMiddleware

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["TideScope"]

_EXTENSION = "tidescope"


class TideScope:
    """The Flask extension; ``TideScope(app)`` or ``TideScope().init_app(app)``."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Record ``app``'s requests and views (a second call for the same app does nothing)."""
        from flask.signals import got_request_exception  # noqa: PLC0415 - only when used

        if _EXTENSION in app.extensions:
            return
        app.extensions[_EXTENSION] = self
        app.wsgi_app = TideScopeMiddleware(app.wsgi_app)  # type: ignore[method-assign]
        app.dispatch_request = _traced_dispatch(app.dispatch_request)  # type: ignore[method-assign]
        got_request_exception.connect(_report_exception, app, weak=False)


def _current() -> tuple[Any, Any, Any]:
    """``(request, WebRequest, view)`` of the request being dispatched; Nones if unknown."""
    from flask import current_app, request  # noqa: PLC0415

    req = request.environ.get(_web.REQUEST_KEY)
    view = None
    if req is not None and request.routing_exception is None:
        view = current_app.view_functions.get(request.endpoint or "")
    return request, req, view


def _traced_dispatch(dispatch: Callable[..., Any]) -> Callable[..., Any]:
    def dispatch_request(*args: Any, **kwargs: Any) -> Any:
        if not _web.capturing():
            return dispatch(*args, **kwargs)
        names = req = None
        try:
            request, req, view = _current()
            if view is not None:
                rule = request.url_rule
                metadata = {
                    "endpoint": request.endpoint,
                    "route": rule.rule if rule is not None else None,
                    "view_args": request.view_args,
                }
                names = _web.enter_handler(req.cid, view, metadata)
        except Exception as exc:
            _core.count_error(exc)
        try:
            result = dispatch(*args, **kwargs)
        except BaseException as exc:
            if req is not None:
                _web.fail_handler(req.cid, names, req.summary(), exc)
            raise
        if req is not None:
            _web.exit_handler(req.cid, names, result)
        return result

    dispatch_request.__wrapped__ = dispatch  # type: ignore[attr-defined]
    return dispatch_request


def _report_exception(sender: Any, exception: BaseException, **extra: Any) -> None:
    """``got_request_exception``: report the error on the request's record (once)."""
    try:
        from flask import request  # noqa: PLC0415

        req = request.environ.get(_web.REQUEST_KEY)
        if req is not None:
            req.fail(exception)
    except Exception as exc:
        _core.count_error(exc)
