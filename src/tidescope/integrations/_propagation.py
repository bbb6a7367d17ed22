"""The W3C ``traceparent`` a call leaving this context carries: trace id from the correlation,
parent id from the current call.

Shared by the HTTP client and process pool integrations. The receiving side needs nothing
of ours: :func:`tidescope.capture.runtime.parse_traceparent` reads these headers, and both
sides' ``remote_call_send`` / ``remote_call_receive`` events join on ``(trace_id, span_id)``.

The mapping is deterministic, so every call leaving one correlation carries one trace id:

* a correlation that already is a trace id (32 lowercase hex digits, as a server binds it
  from an incoming header) is used as it is; a UUID, or a UUID string, gives its hex;
* an ``int`` correlation (tidescope's own ids: the outermost traced call) is its 32-digit
  hex, so ``int(trace_id, 16)`` gives the correlation back;
* any other ``str`` or ``bytes`` gives the first 32 hex digits of its SHA-256;
* no correlation at all gives a fresh random trace id.

The parent id is the current call's id as 16 hex digits (``int(span_id, 16)`` is the
``call_id`` of the caller's events); outside any traced call it is a fresh random span id.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any, Final

from tidescope.capture import _core
from tidescope.capture.runtime.distributed import (
    format_traceparent,
    new_span_id,
    new_trace_id,
)

__all__ = ["outgoing_traceparent", "span_id_for", "trace_id_for"]

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
