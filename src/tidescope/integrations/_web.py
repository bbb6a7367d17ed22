"""What the web integrations share: one request's correlation and events, and safe HTTP reading.

A :class:`WebRequest` is one HTTP request (or websocket connection) being recorded: it owns
the correlation id bound for the whole request and reports the request's start, its end
(once) and its unhandled error (once). Every function here fails open: an internal error
is counted in ``tidescope.stats()["internal_errors"]`` and never reaches the application;
``begin`` returns None then, and the caller passes the request through untraced.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import parse_qsl

from tidescope.capture import _core, _redact
from tidescope.capture.runtime import (
    report_action_error,
    report_controller_entry,
    report_controller_exit,
    report_error,
    report_http_request_complete,
    report_http_request_start,
    report_remote_call_receive,
)
from tidescope.capture.runtime.distributed import new_trace_id, parse_traceparent

__all__ = [
    "CAPTURE_OFF",
    "REQUEST_KEY",
    "WebRequest",
    "app_traceback",
    "begin",
    "bind",
    "capturing",
    "content_type_of",
    "correlation_for",
    "endpoint_names",
    "enter_handler",
    "exception_name",
    "exit_handler",
    "fail_handler",
    "parse_query",
    "unbind",
    "wsgi_text",
]

REQUEST_KEY: Final = "tidescope.request"
"""Key under which the :class:`WebRequest` is left in the ASGI scope or the WSGI environ, so
that inner integrations (route handlers, the Django middleware, a Channels consumer) join
the outer one's request instead of reporting it twice."""

MAX_QUERY: Final = 8192
"""A longer query string is recorded as it is (the snapshot cuts it) instead of parsed: parsing
time grows with a size the client chooses."""

_perf_ns = time.perf_counter_ns
_UNBOUND: Final = object()


def capturing() -> bool:
    """True if a request arriving here now is recorded (capture on in this context).

    The first time in a process that a request arrives with capture not started at all, a
    warning on the ``tidescope`` logger says so (a middleware under a plain ``python -m
    uvicorn``, say, records nothing).
    """
    try:
        if _core.active_buffer() is not None:
            return True
        if not _core.is_started() and _warned_pid != os.getpid():
            _warn_capture_off()
        return False
    except Exception as exc:
        _core.count_error(exc)
        return False


_warned_pid = 0  # the process that logged the capture-off warning (a fork logs its own)
_warn_lock = threading.Lock()
CAPTURE_OFF: Final = (
    "tidescope: a web middleware is installed but capture is off in this process, so "
    "nothing is recorded; run the server under `tidescope run` (for example `tidescope run "
    "-m uvicorn app:app`) or call tidescope.start() in the application factory"
)
"""The warning logged once per process when a request arrives with capture off."""


def _warn_capture_off() -> None:
    global _warned_pid
    pid = os.getpid()
    with _warn_lock:
        if _warned_pid == pid:
            return
        _warned_pid = pid
    logging.getLogger("tidescope").warning(CAPTURE_OFF)


def bind(cid: Any) -> Any:
    """Bind correlation ``cid`` in this context; the token :func:`unbind` takes."""
    try:
        return _core.bind_correlation(cid)
    except Exception as exc:
        _core.count_error(exc)
        return _UNBOUND


def unbind(token: Any) -> None:
    """Undo a :func:`bind`."""
    if token is _UNBOUND:
        return
    try:
        _core.restore_context(token)
    except Exception as exc:
        _core.count_error(exc)


class WebRequest:
    """One request or websocket connection being recorded under correlation ``cid``."""

    __slots__ = ("cid", "content_type", "done", "error", "method", "path", "started", "status")

    def __init__(self, cid: Any, method: Any, path: Any) -> None:
        self.cid = cid
        self.method = method
        self.path = path
        self.started = _perf_ns()
        self.status: Any = None
        self.content_type: Any = None
        self.done = False
        self.error: BaseException | None = None

    def summary(self) -> dict[str, Any]:
        """The request as the action reporters' ``request`` argument: method and path."""
        return {"method": self.method, "path": self.path}

    def finish(self) -> None:
        """Report the request complete with its status and duration (only the first call)."""
        if self.done:
            return
        self.done = True
        try:
            duration_ms = (_perf_ns() - self.started) / 1e6
            report_http_request_complete(self.cid, self.status, self.content_type, duration_ms)
        except Exception as exc:
            _core.count_error(exc)

    def fail(self, exc: BaseException) -> None:
        """Report ``exc`` escaping the application (once per exception); a response not yet
        started becomes a 500, as every server answers then. Cancellation and exits are not
        errors: they end the request without one."""
        try:
            if self.error is exc:
                return
            self.error = exc
            if issubclass(type(exc), Exception):  # not isinstance: it reads __class__
                report_error(exc, None, app_traceback(exc))
                if self.status is None:
                    self.status = 500
        except Exception as err:
            _core.count_error(err)


def begin(
    method: Any,
    path: Any,
    query: str | bytes | None,
    remote_ip: Any,
    traceparent: Any,
    source: Any,
) -> WebRequest | None:
    """Start recording a request: its correlation id, the request start event and, when the
    caller sent a ``traceparent`` header, the remote call it continues. None on an internal
    error (the request then runs untraced).

    The correlation id is the trace id of a valid ``traceparent`` (so the caller's events and
    this request's share it, as ``integrations._propagation`` maps them), else a new id.
    """
    try:
        req = WebRequest(correlation_for(traceparent), method, path)
        report_http_request_start(req.cid, method, path, parse_query(query), remote_ip)
        if traceparent is not None:
            report_remote_call_receive(
                req.cid, source, traceparent, {"method": method, "path": path}
            )
        return req
    except Exception as exc:
        _core.count_error(exc)
        return None


def correlation_for(traceparent: Any) -> str:
    """The correlation id of a request that came with ``traceparent`` (None: no header):
    a W3C trace id, 32 lowercase hex digits, in every service. The caller's when its header
    is valid, else a new one, which the HTTP client integrations then pass on as it is."""
    if traceparent is not None:
        parsed = parse_traceparent(traceparent)
        if parsed is not None:
            return str(parsed.trace_id)
    return new_trace_id()


_PACKAGE_DIR: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_traceback_of: Final = BaseException.__dict__["__traceback__"].__get__


def app_traceback(exc: BaseException) -> Any:
    """``exc``'s traceback from the first frame that is not tidescope's (the middleware that
    caught it), so an ``error`` event's stack starts in the application; the whole
    traceback when every frame is tidescope's."""
    first = tb = _traceback_of(exc)
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    return first if tb is None else tb


def parse_query(query: str | bytes | None) -> Any:
    """A query string as ``{name: value}`` (``{name: [values]}`` for a repeated name).

    Bytes (ASGI) are read as UTF-8; a WSGI string is first turned back into its bytes (PEP
    3333 delivers them as latin-1). Invalid escapes become U+FFFD. Strings past
    :data:`MAX_QUERY` are returned unparsed, the values of secret names (``token=``) replaced
    by ``[REDACTED]``; parsed, the snapshot redacts them as it does any dict's.
    """
    if not query:
        return {}
    text = query.decode("utf-8", "replace") if isinstance(query, bytes) else wsgi_text(query)
    if len(text) > MAX_QUERY:
        return _redact.strip_query(text)
    out: dict[str, Any] = {}
    for name, value in parse_qsl(text, keep_blank_values=True, errors="replace"):
        if name in out:
            old = out[name]
            if type(old) is list:
                old.append(value)
            else:
                out[name] = [old, value]
        else:
            out[name] = value
    return out


def wsgi_text(value: str) -> str:
    """A WSGI environ string (bytes carried as latin-1, PEP 3333) as the UTF-8 text it encodes."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a server that already decoded it
        return value


def content_type_of(headers: Iterable[Any]) -> Any:
    """The Content-Type of ASGI (bytes) or WSGI (str) response headers, as text; None if absent."""
    for pair in headers:
        name, value = pair[0], pair[1]
        if isinstance(name, bytes):
            if name.lower() == b"content-type":
                return value.decode("latin-1") if isinstance(value, bytes) else value
        elif name.lower() == "content-type":
            return value
    return None


def exception_name(exc: BaseException) -> str:
    """``module.QualName`` of an exception's class (just ``QualName`` for builtins)."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def endpoint_names(endpoint: Any) -> tuple[Any, Any]:
    """``(controller, action)`` of a handler: its module and qualified name, as the seed's
    Phoenix controller module and action."""
    target = getattr(endpoint, "view_class", None) or endpoint  # a Django class-based view
    module = getattr(target, "__module__", None)
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    return module, name


def enter_handler(cid: Any, endpoint: Any, metadata: dict[str, Any]) -> tuple[Any, Any] | None:
    """Report that a request's handler is entered; returns its ``(controller, action)`` for
    :func:`exit_handler`, or None on an internal error."""
    try:
        controller, action = endpoint_names(endpoint)
        report_controller_entry(cid, controller, action, metadata)
        return controller, action
    except Exception as exc:
        _core.count_error(exc)
        return None


def exit_handler(cid: Any, names: tuple[Any, Any] | None, result: Any) -> None:
    """Report that the handler entered with ``names`` returned ``result``."""
    if names is None:
        return
    try:
        report_controller_exit(cid, names[0], names[1], result)
    except Exception as exc:
        _core.count_error(exc)


def fail_handler(cid: Any, names: tuple[Any, Any] | None, request: Any, exc: BaseException) -> None:
    """Report that the handler entered with ``names`` raised ``exc``: an action error, then
    the handler's exit with the exception's type as its result."""
    if names is None:
        return
    try:
        report_action_error(names[1], request, exception_name(exc), exc)
        report_controller_exit(cid, names[0], names[1], {"exception": exception_name(exc)})
    except Exception as err:
        _core.count_error(err)
