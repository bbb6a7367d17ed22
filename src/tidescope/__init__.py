"""tidescope: the runtime capture core of an execution-recording debugger for Python.

Quick start::

    import tidescope
    from tidescope.capture import runtime

    with tidescope.capture(buffer_size=4096) as cap:
        cid = runtime.report_function_entry("shop.cart", "add", ["apple", 2])
        runtime.report_function_exit(cid, 3, 1200)
    events = cap.events()

PYTEST_DONT_REWRITE: pytest marks this distribution for assertion rewriting (it has a
pytest plugin) and would warn that the package was imported first under
``tidescope run -m pytest``.
"""

from __future__ import annotations

from tidescope import capture
from tidescope._record import record
from tidescope._session import Session, active_session, core_info, start, stats, stop
from tidescope.capture._core import Limits, snapshot
from tidescope.capture.ring_buffer import RingBuffer, RingBufferError
from tidescope.config import Config, ConfigError
from tidescope.events import (
    Event,
    EventType,
    ObjectSnapshot,
    Redacted,
    Truncated,
    Unsupported,
)
from tidescope.export.reader import Trace, TraceError, TraceFile, open_trace
from tidescope.testing import Capture

__version__ = "0.1.0.dev0"

__all__ = [
    "Capture",
    "Config",
    "ConfigError",
    "Event",
    "EventType",
    "Limits",
    "ObjectSnapshot",
    "Redacted",
    "RingBuffer",
    "RingBufferError",
    "Session",
    "Trace",
    "TraceError",
    "TraceFile",
    "Truncated",
    "Unsupported",
    "__version__",
    "active_session",
    "capture",
    "core_info",
    "open_trace",
    "record",
    "snapshot",
    "start",
    "stats",
    "stop",
]
