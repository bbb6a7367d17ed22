"""The only importer of the core implementations: picks C or pure Python and says why.

``TIDESCOPE_CORE=python`` forces the pure-Python twin; ``TIDESCOPE_CORE=c`` fails loudly if
the C accelerator is not built; unset, the C core is used when it imports. Every other
module reaches the core through the names below, never through ``_pure`` directly.

A ``TIDESCOPE_CORE`` that cannot be honoured never breaks ``import tidescope`` (a program
that imports it must run as it would without): the default choice is loaded, the reason is
kept in ``CORE_ERROR``, and starting a capture raises :class:`CoreSelectionError` with it.
"""

from __future__ import annotations

import os
from typing import Any, Final

__all__ = ["CORE_ERROR", "CORE_NAME", "CORE_REASON", "CoreSelectionError"]


class CoreSelectionError(ImportError):
    """``TIDESCOPE_CORE`` asks for a core that cannot be used."""


_CHOICES: Final = ("c", "python")
_requested = os.environ.get("TIDESCOPE_CORE", "").strip().lower()
CORE_ERROR: str | None = None
"""Why ``TIDESCOPE_CORE`` cannot be honoured (then no capture starts), or None."""
if _requested not in ("", *_CHOICES):
    CORE_ERROR = (
        f"TIDESCOPE_CORE={_requested!r} is invalid: it must be one of 'c', 'python' or unset"
    )
    _requested = ""

CORE_REASON: str
_speedups: Any = None
if _requested == "python":
    CORE_REASON = "TIDESCOPE_CORE=python"
else:
    try:
        from tidescope.capture import _speedups
    except ImportError as exc:
        if _requested == "c":
            CORE_ERROR = (
                f"TIDESCOPE_CORE=c but the C accelerator is not available ({exc}); "
                "reinstall tidescope with a C compiler, or unset TIDESCOPE_CORE"
            )
        CORE_REASON = f"C accelerator not built ({exc})"
    else:
        CORE_REASON = "TIDESCOPE_CORE=c" if _requested == "c" else "C accelerator built"
if CORE_ERROR is not None:
    CORE_REASON = CORE_ERROR

from tidescope.capture._clock import node, pid, resync_clock, set_node  # noqa: E402
from tidescope.capture._pure import (  # noqa: E402
    CORE_NAME,
    active_buffer,
    bind_correlation,
    call_stack,
    clear_context,
    count_error,
    current_call_id,
    current_correlation_id,
    current_task_id,
    disable_here,
    enabled,
    flat_event,
    frame_ids,
    get_buffer,
    get_limits,
    initialize_context,
    internal_errors,
    is_started,
    next_id,
    note_thread_once,
    on_enabled_change,
    pop_call_stack,
    push_call_stack,
    register_buffer,
    report_function_entry,
    report_function_exit,
    report_site_entry,
    report_site_exit,
    report_site_return,
    restore_context,
    save_context,
    set_enabled,
    set_level,
    set_limits,
    set_value_policy,
    snapshot,
    snapshot_many,
    take_notes,
    value_policy,
    write_event,
)
from tidescope.capture._pure_values import value_sites  # noqa: E402
from tidescope.capture._ring import OVERFLOW_STRATEGIES, RingBuffer, RingBufferError  # noqa: E402
from tidescope.capture._snapshot import Limits  # noqa: E402
from tidescope.capture._tokens import call_of  # noqa: E402

encode_events_chunk: Any = None
"""The chosen core's trace-chunk encoder (``_tsformat.encode_events_chunk``'s twin), or None
when it has none: the trace writer then uses the pure one."""
frame_events_chunk: Any = None
"""The C core's framing of ``RingBuffer.drain_encoded()``'s records as an EVENTS chunk, or
None on the pure core (whose ring has no encoded drain)."""

decode_body: Any = None
"""The chosen core's chunk decoder, ``decode_body(body, node, pid, mode)`` (``_decode.c``),
or None when it has none: the reader then uses ``_tsformat.decode_body``."""

if _speedups is not None:
    encode_events_chunk = getattr(_speedups, "encode_events_chunk", None)
    frame_events_chunk = getattr(_speedups, "frame_events_chunk", None)
    decode_body = getattr(_speedups, "decode_body", None)
    # The C twin: its RingBuffer is the shared logic over C slots, and its two report
    # functions replace the pure ones; everything else is shared with _pure.
    from tidescope.capture import _pure, _redact, _ring, _snapshot

    RingBuffer = _ring.ring_class(_speedups.RingStorage)  # type: ignore[misc, assignment]
    _pure.use_accelerator(_speedups, RingBuffer)
    _snapshot._flat_cost = _speedups.flat_cost
    _snapshot._flat_payload = _speedups.flat_payload
    _snapshot._flat_copy = _speedups.flat_copy
    _speedups.deep_init(_snapshot.deep_namespace())
    # a new redaction pattern: the walk forgets the answers it kept for names
    _redact.on_configure(lambda: _speedups.deep_init(_snapshot.deep_namespace()))
    _snapshot._snap_deep = _speedups.snap_deep
    _snapshot._payload_deep = _speedups.payload_deep
    report_function_entry = _speedups.report_function_entry
    report_function_exit = _speedups.report_function_exit
    note_thread_once = _speedups.note_thread_once
    report_site_entry = _speedups.report_site_entry
    report_site_exit = _speedups.report_site_exit
    call_of = _speedups.call_of
    report_site_return = _speedups.report_site_return
    write_event = _speedups.write_event
    from tidescope.capture import _pure_values

    _speedups.values_init(_pure_values.c_namespace())
    value_sites = _speedups.value_sites
    CORE_NAME = _speedups.CORE_NAME  # type: ignore[misc]

__all__ += [
    "OVERFLOW_STRATEGIES",
    "Limits",
    "RingBuffer",
    "RingBufferError",
    "active_buffer",
    "bind_correlation",
    "call_of",
    "call_stack",
    "clear_context",
    "count_error",
    "current_call_id",
    "current_correlation_id",
    "current_task_id",
    "decode_body",
    "disable_here",
    "enabled",
    "encode_events_chunk",
    "flat_event",
    "frame_events_chunk",
    "frame_ids",
    "get_buffer",
    "get_limits",
    "initialize_context",
    "internal_errors",
    "is_started",
    "next_id",
    "node",
    "note_thread_once",
    "on_enabled_change",
    "pid",
    "pop_call_stack",
    "push_call_stack",
    "register_buffer",
    "report_function_entry",
    "report_function_exit",
    "report_site_entry",
    "report_site_exit",
    "report_site_return",
    "restore_context",
    "resync_clock",
    "save_context",
    "set_enabled",
    "set_level",
    "set_limits",
    "set_node",
    "set_value_policy",
    "snapshot",
    "snapshot_many",
    "take_notes",
    "value_policy",
    "value_sites",
    "write_event",
]
