"""requests integration: outgoing requests carry a W3C ``traceparent`` and are recorded.

One line enables it for every session (and ``requests.get`` and friends)::

    tidescope.integrations.requests.instrument_requests()

or use :class:`TracedSession` in place of ``requests.Session``. While capture is on, each
``Session.send`` is recorded as a call ``requests`` / ``Session.send`` with ``{method, url}``
(credentials removed), its exit carrying ``{status_code}`` or the exception; the request
gets a ``traceparent`` header (trace id from this context's correlation, parent id the id of
this call) and a ``remote_call_send`` event records it, to be joined with the server's
``remote_call_receive`` on ``(trace_id, span_id)``.

requests follows redirects by calling ``send`` again inside the first call: each hop is a
call of its own (nested in the first) with a header of its own. A ``traceparent`` set by
the application or another tracer is kept. With capture off, ``send`` runs untouched.
Importing :mod:`tidescope` never imports requests; this module does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Final

import requests

from tidescope.capture import _core
from tidescope.integrations._propagation import begin_remote_call, end_remote_call

__all__ = ["TracedSession", "instrument_requests", "uninstrument_requests"]

_MARK: Final = "__tidescope_traced__"
_saved: dict[type, Any] = {}


def _send(
    real: Callable[..., requests.Response],
    session: requests.Session,
    request: requests.PreparedRequest,
    args: Any,
    kwargs: Any,
) -> requests.Response:
    if _core.active_buffer() is None:
        return real(session, request, *args, **kwargs)
    call = begin_remote_call(
        "requests", "Session.send", request.method, request.url, request.headers
    )
    if call is None:
        return real(session, request, *args, **kwargs)
    try:
        response = real(session, request, *args, **kwargs)
    except BaseException as exc:
        end_remote_call(call, error=exc)
        raise
    end_remote_call(call, response.status_code)
    return response


def _traced_send(real: Callable[..., requests.Response]) -> Callable[..., requests.Response]:
    @functools.wraps(real)
    def send(
        self: requests.Session, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        return _send(real, self, request, args, kwargs)

    setattr(send, _MARK, True)
    return send


class TracedSession(requests.Session):
    """A ``requests.Session`` whose requests are recorded and carry ``traceparent``."""

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        real = requests.Session.send
        if getattr(real, _MARK, False):  # instrument_requests() is on: it records
            return real(self, request, *args, **kwargs)
        return _send(real, self, request, args, kwargs)


def instrument_requests() -> None:
    """Record the requests of every ``requests.Session`` (and of ``requests.get`` and
    friends, which make one); calling it twice changes nothing."""
    if not getattr(requests.Session.send, _MARK, False):
        _saved[requests.Session] = requests.Session.send
        requests.Session.send = _traced_send(requests.Session.send)  # type: ignore[method-assign]


def uninstrument_requests() -> None:
    """Undo :func:`instrument_requests` (:class:`TracedSession` stays traced). A ``send``
    patched over ours since is left in place."""
    if getattr(requests.Session.send, _MARK, False) and requests.Session in _saved:
        requests.Session.send = _saved.pop(requests.Session)  # type: ignore[method-assign]
