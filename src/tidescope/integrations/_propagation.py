"""The W3C ``traceparent`` a call leaving this context carries: trace id from the correlation,
parent id from the current call; and the outgoing-call recording the HTTP clients share.

Shared by the HTTP client and process pool integrations. The receiving side needs nothing
of ours: :func:`tidescope.capture.runtime.parse_traceparent` reads these headers, and both
sides' ``remote_call_send`` / ``remote_call_receive`` events join on ``(trace_id, span_id)``.

The mapping is deterministic, so every call leaving one correlation carries one trace id:

* a correlation that already is a trace id (32 lowercase hex digits, as a server binds it
  from an incoming header) is used as it is; a UUID, or a UUID string, gives its hex;
* an ``int`` correlation (tidescope's own ids: the outermost traced call) is its 32-digit
  hex, so ``int(trace_id, 16)`` gives the correlation back;
* any other ``str`` or ``bytes`` gives the first 32 hex digits of its SHA-256, and any other
  object the same of its identity (stable while it lives; its code never runs);
* no correlation at all gives a fresh random trace id.

The parent id is the current call's id as 16 hex digits (``int(span_id, 16)`` is the
``call_id`` of the caller's events); outside any traced call it is a fresh random span id.
"""

from __future__ import annotations

import contextvars
import hashlib
import re
import uuid
from asyncio import CancelledError as _CancelledError
from typing import Any, Final

from tidescope.capture import _core, _redact
from tidescope.capture.runtime.distributed import (
    format_traceparent,
    new_span_id,
    new_trace_id,
    report_remote_call_send,
)

__all__ = [
    "TRACEPARENT",
    "RemoteCall",
    "begin_remote_call",
    "end_remote_call",
    "outgoing_traceparent",
    "span_id_for",
    "trace_id_for",
]

_HEX32: Final = re.compile(r"[0-9a-f]{32}")
_ZERO_TRACE: Final = "0" * 32
_MAX_TRACE: Final = 1 << 128
_MAX_SPAN: Final = 1 << 64
TRACEPARENT: Final = "traceparent"
"""The header's name (W3C Trace Context, lowercase as HTTP/2 sends it)."""


def trace_id_for(correlation_id: Any) -> str:
    """The trace id calls leaving ``correlation_id`` carry (see the module docstring)."""
    t = type(correlation_id)
    candidate: str | None = None
    if t is str:
        text: str = correlation_id
        if _HEX32.fullmatch(text):
            candidate = text
        else:
            compact = text.replace("-", "").lower()
            if len(compact) == 32 and _HEX32.fullmatch(compact):
                candidate = compact
            else:
                candidate = _digest(text.encode("utf-8", "surrogatepass"))
    elif t is int:
        # beyond 128 bits or negative: folded (str() of a huge int would raise)
        candidate = f"{correlation_id % _MAX_TRACE:032x}"
    elif t is uuid.UUID:
        candidate = correlation_id.hex
    elif t is bytes:
        candidate = _digest(correlation_id)
    elif correlation_id is not None:
        # any other object: its identity (its own code is never run), stable while it lives
        candidate = _digest(f"{id(t)}:{id(correlation_id)}".encode())
    if candidate is None or candidate == _ZERO_TRACE:
        return new_trace_id()
    return candidate


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:32]


def span_id_for(call_id: Any) -> str:
    """The parent id for calls leaving the call ``call_id``: its 16-digit hex, or a random id."""
    if type(call_id) is int and 0 < call_id < _MAX_SPAN:
        return f"{call_id:016x}"
    return new_span_id()


def outgoing_traceparent() -> str:
    """A ``traceparent`` for a call leaving this context now: this correlation's trace id,
    the current call as parent id, sampled (the caller records)."""
    return format_traceparent(
        trace_id_for(_core.current_correlation_id()), span_id_for(_core.current_call_id())
    )


# ---------------------------------------------------------------------------------------
# outgoing remote calls (the HTTP clients)

# The header this context's enclosing outgoing call injected: a nested send of the same
# request (requests follows redirects by calling send again) replaces it, while a header
# the application or another tracer set is left alone.
_injected: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "tidescope_injected_traceparent", default=None
)


class RemoteCall:
    """One outgoing call in flight: its call id, the header it carries, what to restore."""

    __slots__ = ("call_id", "previous", "traceparent")

    def __init__(self, call_id: Any, traceparent: Any, previous: Any) -> None:
        self.call_id = call_id
        self.traceparent = traceparent
        self.previous = previous


def begin_remote_call(
    module: str, function: str, method: Any, url: Any, headers: Any
) -> RemoteCall | None:
    """Start recording an outgoing call; None when capture is off here (or on failure).

    Records a ``function_entry`` for the call (``module``, ``function``, ``{method, url}``)
    and pushes it, so the call's own id is the header's parent id; sets ``traceparent`` in
    ``headers`` (a mutable mapping) unless another tracer or the application set one; and
    records ``remote_call_send``. Pair with :func:`end_remote_call`.
    """
    if _core.active_buffer() is None:
        return None
    try:
        # credentials never reach a trace: no user:password@, no ?token=...
        target = _redact.strip_url(url) if type(url) is str else url
        args = {"method": method, "url": target}
    except Exception as exc:
        _core.count_error(exc)
        return None
    call_id = _core.report_function_entry(module, function, args)
    if call_id is None:
        return None
    previous = _injected.get()
    header: Any = None
    try:
        existing = headers.get(TRACEPARENT)
        if existing is None or existing == previous:
            header = outgoing_traceparent()
            headers[TRACEPARENT] = header
            _injected.set(header)
        else:
            header = existing
        report_remote_call_send(None, target, header, {"method": method})
    except Exception as exc:
        _core.count_error(exc)
    return RemoteCall(call_id, header, previous)


def end_remote_call(call: RemoteCall, status_code: Any = None, error: Any = None) -> None:
    """Record the end of ``call``: its ``function_exit`` with ``{status_code}``, or with
    ``error`` (an exception) and exit reason ``"exception"`` or ``"cancelled"``."""
    try:
        _injected.set(call.previous)
        if error is None:
            _core.report_function_exit(call.call_id, {"status_code": status_code})
        else:
            reason = "cancelled" if issubclass(type(error), _CancelledError) else "exception"
            _core.report_function_exit(call.call_id, error, exit_reason=reason)
    except Exception as exc:
        _core.count_error(exc)
