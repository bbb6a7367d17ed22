"""Handler events for Starlette and FastAPI routes: the matched endpoint's entry and exit.

Starlette decides which endpoint runs inside the application, after every middleware, so
no middleware sees the handler start. The ASGI middleware therefore wraps ``handle`` of
Starlette's ``Route`` (and of FastAPI's ``APIRoute``, which overrides it) once, when it is
created in a process where Starlette is loaded. The wrapper reports only for requests that
the middleware records (their scope carries the request under :data:`_web.REQUEST_KEY`);
every other request, and every request while capture is off, goes straight through.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from tidescope.capture import _core
from tidescope.integrations import _web

__all__ = ["install"]

Handle = Callable[[Any, MutableMapping[str, Any], Any, Any], Awaitable[None]]

_INSIDE: Final = "tidescope.handler"  # set while a wrapped handle runs: APIRoute calls Route's
_ROUTE_CLASSES: Final = (("starlette.routing", "Route"), ("fastapi.routing", "APIRoute"))
_WRAPPED: Final = "__tidescope_wrapped__"


def install() -> None:
    """Wrap ``handle`` of the route classes already imported (idempotent, never raises)."""
    for module_name, class_name in _ROUTE_CLASSES:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if cls is None:
            continue
        try:
            original = cls.__dict__.get("handle")
            if original is None or getattr(original, _WRAPPED, False):
                continue
            cls.handle = _wrap(original)
        except Exception as exc:
            _core.count_error(exc)


def _wrap(original: Handle) -> Handle:
    async def handle(route: Any, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        req = scope.get(_web.REQUEST_KEY)
        if req is None or _INSIDE in scope or scope.get("type") != "http":
            return await original(route, scope, receive, send)
        names = None
        try:
            scope[_INSIDE] = True
            metadata = {
                "route": getattr(route, "path", None),
                "name": getattr(route, "name", None),
                "path_params": scope.get("path_params"),
            }
            names = _web.enter_handler(req.cid, getattr(route, "endpoint", None), metadata)
        except Exception as exc:
            _core.count_error(exc)
        try:
            await original(route, scope, receive, send)
        except BaseException as exc:
            _web.fail_handler(req.cid, names, req.summary(), exc)
            raise
        finally:
            scope.pop(_INSIDE, None)
        _web.exit_handler(req.cid, names, {"status_code": req.status})

    setattr(handle, _WRAPPED, True)
    handle.__wrapped__ = original  # type: ignore[attr-defined]
    handle.__name__ = "handle"
    handle.__qualname__ = getattr(original, "__qualname__", "handle")
    handle.__doc__ = getattr(original, "__doc__", None)
    return handle
