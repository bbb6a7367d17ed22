"""Distributed reporters (the seed's missing ``DistributedReporting``) and W3C trace context.

Nodes are processes and hosts (the envelope's ``node``); a node event says another one came
up, went down or stopped answering. Remote calls carry a W3C ``traceparent`` header
(https://www.w3.org/TR/trace-context/): the caller records the header it sends, the callee
the header it received, and both events get the header's trace id and parent id, so a
send and its receive join up on ``(trace_id, span_id)`` across processes and hosts.
"""

from __future__ import annotations

import os
import re
from typing import Any, Final, NamedTuple

from tidescope.capture.runtime._domain import emit
from tidescope.events import EventType

__all__ = [
    "TraceParent",
    "format_traceparent",
    "new_span_id",
    "new_trace_id",
    "parse_traceparent",
    "report_node_event",
    "report_partition_detected",
    "report_remote_call_receive",
    "report_remote_call_send",
]


class TraceParent(NamedTuple):
    """A parsed ``traceparent`` header: lowercase hex ids, the flags as an int."""

    version: str
    trace_id: str
    parent_id: str
    flags: int

    @property
    def sampled(self) -> bool:
        """The caller may have recorded this request (flag bit 0)."""
        return bool(self.flags & 1)


# The spec's grammar, matched whole with fullmatch (``$`` would let a final newline through).
_TRACEPARENT: Final = re.compile(
    r"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?[ \t]*"
)
_TRACE_ID: Final = re.compile(r"[0-9a-f]{32}")
_SPAN_ID: Final = re.compile(r"[0-9a-f]{16}")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16


def parse_traceparent(header: Any) -> TraceParent | None:
    """The parts of a W3C ``traceparent`` header, or None if it is not a valid one.

    ``header`` may be ``str`` or ASCII ``bytes`` (as ASGI gives headers). Rejected: anything
    not matching the spec's grammar (uppercase hex included), version ``ff``, an all-zero
    trace id or parent id, and version ``00`` followed by more data. A later version may
    carry more ``-``-separated data, which is ignored. Never raises.
    """
    t = type(header)
    if t is bytes or t is bytearray:
        try:
            header = bytes(header).decode("ascii")
        except UnicodeDecodeError:
            return None
    elif t is not str:
        return None
    m = _TRACEPARENT.fullmatch(header)
    if m is None:
        return None
    version, trace_id, parent_id, flags, rest = m.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    if version == "00" and rest is not None:
        return None
    return TraceParent(version, trace_id, parent_id, int(flags, 16))


def format_traceparent(trace_id: str, parent_id: str, sampled: bool = True) -> str:
    """A version ``00`` ``traceparent`` header for ``trace_id`` and ``parent_id``.

    Raises:
        ValueError: ``trace_id`` is not 32 or ``parent_id`` not 16 lowercase hex digits, or
            either is all zeros.
    """
    if type(trace_id) is not str or not _TRACE_ID.fullmatch(trace_id) or trace_id == _ZERO_TRACE:
        raise ValueError(f"trace_id must be 32 lowercase hex digits, not all zero: {trace_id!r}")
    if type(parent_id) is not str or not _SPAN_ID.fullmatch(parent_id) or parent_id == _ZERO_SPAN:
        raise ValueError(f"parent_id must be 16 lowercase hex digits, not all zero: {parent_id!r}")
    return f"00-{trace_id}-{parent_id}-{'01' if sampled else '00'}"


def _random_hex(n: int) -> str:
    while True:
        raw = os.urandom(n)
        if any(raw):  # the all-zero id is invalid
            return raw.hex()


def new_trace_id() -> str:
    """A random W3C trace id: 32 lowercase hex digits, never all zero."""
    return _random_hex(16)


def new_span_id() -> str:
    """A random W3C span (parent) id: 16 lowercase hex digits, never all zero."""
    return _random_hex(8)


def report_node_event(event_type: Any, node_name: Any, metadata: Any) -> bool:
    """Record that node ``node_name`` changed (``event_type`` such as ``"up"``, ``"down"``,
    ``"net_tick_timeout"``); True if recorded.

    Ports ``DistributedReporting.report_node_event/3`` (missing from the seed at HEAD; its
    ``NodeEvent`` had ``extra_info`` where this has ``metadata``, and BEAM-only fields).
    """
    return emit(
        EventType.NODE_EVENT, None, event_type=event_type, node_name=node_name, metadata=metadata
    )


def report_partition_detected(partitioned_nodes: Any, metadata: Any) -> bool:
    """Record that ``partitioned_nodes`` can no longer be reached; True if recorded.

    Ports ``DistributedReporting.report_partition_detected/2`` (missing from the seed at HEAD).
    """
    return emit(
        EventType.PARTITION_DETECTED, None, partitioned_nodes=partitioned_nodes, metadata=metadata
    )


def _remote(
    event_type: EventType,
    correlation_id: Any,
    peer_key: str,
    peer: Any,
    traceparent: Any,
    metadata: Any,
) -> bool:
    tp = parse_traceparent(traceparent)
    return emit(
        event_type, correlation_id,
        **{peer_key: peer},
        traceparent=traceparent,
        trace_id=None if tp is None else tp.trace_id,
        span_id=None if tp is None else tp.parent_id,
        sampled=None if tp is None else tp.sampled,
        metadata=metadata,
    )  # fmt: skip


def report_remote_call_send(
    correlation_id: Any, target: Any, traceparent: Any, metadata: Any
) -> bool:
    """Record a call to another node (``target``: a URL, host, node name) sending the header
    ``traceparent``; True if recorded.

    Data: ``{target, traceparent, trace_id, span_id, sampled, metadata}``; the last four
    parts come from the header (None if it is not valid). ``span_id`` is the header's
    parent-id: this call's span, which the receiving side records too. No seed counterpart:
    the seed's distributed reporting (``report_node_event/3``, ``report_partition_detected/2``)
    had no remote calls.
    """
    return _remote(
        EventType.REMOTE_CALL_SEND, correlation_id, "target", target, traceparent, metadata
    )


def report_remote_call_receive(
    correlation_id: Any, source: Any, traceparent: Any, metadata: Any
) -> bool:
    """Record a call received from another node (``source``: its address or name) with the
    header ``traceparent``; True if recorded.

    Data: ``{source, traceparent, trace_id, span_id, sampled, metadata}``, as for
    :func:`report_remote_call_send`; the pair joins on ``(trace_id, span_id)``. No seed
    counterpart (see :func:`report_remote_call_send`).
    """
    return _remote(
        EventType.REMOTE_CALL_RECEIVE, correlation_id, "source", source, traceparent, metadata
    )
