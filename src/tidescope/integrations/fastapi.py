"""FastAPI (and Starlette): the ASGI middleware, added in one line.

::

    from tidescope.integrations.fastapi import instrument

    app = instrument(FastAPI())      # same as app.add_middleware(TideScopeMiddleware)

Everything is recorded by :class:`tidescope.integrations.asgi.TideScopeMiddleware`:
requests, the matched endpoint's entry and exit (route template, name and path
parameters), errors, ``traceparent`` and websocket connections. The endpoint's own
arguments, as FastAPI resolved them, are in the endpoint's ``function_entry`` when its
module is instrumented by the import hook (``tidescope run``).
"""

from __future__ import annotations

from typing import Any, TypeVar

from tidescope.integrations.asgi import TideScopeMiddleware

__all__ = ["TideScopeMiddleware", "instrument"]

A = TypeVar("A")


def instrument(app: A) -> A:
    """Add the tidescope ASGI middleware to a FastAPI or Starlette ``app``; returns ``app``.

    Raises:
        RuntimeError: the application has already started (Starlette refuses new
            middleware then).
    """
    target: Any = app
    target.add_middleware(TideScopeMiddleware)
    return app
