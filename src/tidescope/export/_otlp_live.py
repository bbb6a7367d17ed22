"""Sending OTLP requests: the official exporter's HTTP client, and the live exporter thread.

:class:`Sender` posts ``ExportTraceServiceRequest`` bytes through the HTTP client of
OpenTelemetry's ``OTLPSpanExporter`` (its endpoint, headers, compression, TLS and
``OTEL_EXPORTER_OTLP_*`` settings), never logging: a failure is counted. :class:`LiveExport`
takes the chunks the drain has just written to the trace file (the writer hands each one
over) into a bounded queue, and a thread of its own decodes them, builds the spans and
sends them; a full queue drops the chunk and counts its events, so the program and the
drain never wait on the endpoint.
"""

from __future__ import annotations

import collections
import logging
import os
import struct
import threading
import time
from typing import Any, Final

from tidescope.capture import _core
from tidescope.capture.context import instrumentation_disabled
from tidescope.export import _otlp_wire as w
from tidescope.export.otlp import (
    SCOPE,
    ExportResult,
    OtlpLimits,
    SpanBuilder,
    decode_events,
    require_otlp,
    resource_of,
)

__all__ = ["LiveExport", "Sender"]

_HEAD: Final = struct.Struct("<4sII")
_BATCH: Final = 2048
SEND_INTERVAL: Final = 1.0
"""Seconds the live exporter gathers spans before it sends fewer than a full request."""
QUEUE_BYTES: Final = 32 << 20
"""Bytes of written chunks the live exporter holds before it drops (and counts) more."""

_quiet = logging.getLogger("tidescope.otlp.exporter")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False  # failures are counted and reported, never logged


class Sender:
    """Posts OTLP/HTTP requests through OpenTelemetry's exporter.

    Args:
        endpoint: the full URL (``http://collector:4318/v1/traces``).
        timeout: seconds per request.
        retry: retry a transient failure (the exporter's backoff) within ``timeout``; the
            live exporter does not: its spans are counted as dropped instead.

    Raises:
        ImportError: the ``otlp`` extra is missing (the message names it).
    """

    def __init__(self, endpoint: str, timeout: float, *, retry: bool = True) -> None:
        require_otlp()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        self.endpoint = endpoint
        self._exporter: Any = OTLPSpanExporter(endpoint=endpoint, timeout=timeout)
        client: Any = getattr(self._exporter, "_client", None)
        if client is None or not hasattr(client, "export"):
            raise ImportError(
                "OTLP export needs opentelemetry-exporter-otlp-proto-http >= 1.45:"
                " pip install -U 'tidescope[otlp]'"
            )
        client._logger = _quiet
        if not retry:  # the client's retry loop gives up at once once "shutting down"
            client._shutdown_event.set()
        self._client = client

    def send(self, body: bytes, n: int, result: ExportResult) -> bool:
        """Post one request of ``n`` spans; counts it in ``result``; True if delivered."""
        try:
            outcome = self._client.export(body)
            ok, why = bool(outcome.success), outcome
        except Exception as exc:  # never raises: counted
            ok, why = False, exc
        if ok:
            result.spans_exported += n
            return True
        result.spans_dropped += n
        result.requests_failed += 1
        result.last_error = _describe(why)
        return False

    def abort(self) -> None:
        """Stop any retry now; what is sent from here on fails fast."""
        try:
            self._client._shutdown_event.set()
        except Exception:
            pass

    def close(self) -> None:
        """Release the HTTP session."""
        try:
            self._exporter.shutdown()
        except Exception:
            pass


def _describe(outcome: Any) -> str:
    if isinstance(outcome, BaseException):
        return f"{type(outcome).__name__}: {outcome}"[:200]
    code = getattr(outcome, "status_code", None)
    error = getattr(outcome, "error", None)
    if code is not None:
        return f"HTTP {code} {getattr(outcome, 'reason', '') or ''}".strip()
    if error is not None:
        return f"{type(error).__name__}: {error}"[:200]
    return "export failed"


class LiveExport:
    """Exports a process's spans while it runs, from the chunks its drain writes.

    Args:
        endpoint: the OTLP/HTTP traces URL.
        limits: what a span may hold.
        timeout: seconds per request; :meth:`close` waits at most this long for what is left.
        trace_file: the trace file's name (every span names it).
        header: the trace file's header (the resource: service name, pid, node).
        queue_bytes: chunk bytes held before more are dropped.

    Raises:
        ImportError: the ``otlp`` extra is missing.
    """

    def __init__(
        self,
        endpoint: str,
        limits: OtlpLimits,
        *,
        timeout: float,
        trace_file: str,
        header: dict[str, Any],
        queue_bytes: int = QUEUE_BYTES,
    ) -> None:
        self.endpoint = endpoint
        self.limits = limits
        self.timeout = timeout
        self.queue_bytes = queue_bytes
        self._sender = Sender(endpoint, timeout, retry=False)
        self._header = header
        self._resource = resource_of(header)
        self._builder = SpanBuilder(limits, trace_file)
        self.result = ExportResult()
        self._queue: collections.deque[tuple[bytes, int]] = collections.deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._abandon = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="tidescope-otlp", daemon=True)
        self._thread.start()

    def forked(self, trace_file: str, header: dict[str, Any]) -> LiveExport:
        """A fresh exporter for a forked child (the parent's thread does not exist there)."""
        return LiveExport(
            self.endpoint,
            self.limits,
            timeout=self.timeout,
            trace_file=trace_file,
            header=header,
            queue_bytes=self.queue_bytes,
        )

    def offer(self, data: bytes, n: int) -> None:
        """Take written chunks (``n`` events) without waiting; a full queue counts them lost.
        Called by the drain's writer; never raises."""
        try:
            with self._lock:
                if self._closed or self._queued + len(data) > self.queue_bytes:
                    self.result.events_dropped += n
                    return
                self._queue.append((data, n))
                self._queued += len(data)
            self._wake.set()
        except Exception:
            pass

    def _take(self) -> tuple[bytes, int] | None:
        with self._lock:
            if not self._queue:
                return None
            item = self._queue.popleft()
            self._queued -= len(item[0])
            return item

    def _run(self) -> None:
        from tidescope.export.drain import _leave_signals_to_the_program  # noqa: PLC0415

        _leave_signals_to_the_program()
        with instrumentation_disabled():
            pending: list[bytes] = []
            sent = time.monotonic()
            while True:
                item = self._take()
                if item is None:
                    # a request a second at most while spans trickle in: each costs a few
                    # ms of CPU in the HTTP client
                    due = time.monotonic() - sent >= SEND_INTERVAL
                    if pending and (due or self._stopping):
                        self._send(pending)
                        pending = []
                        sent = time.monotonic()
                    if self._stopping:
                        break
                    self._wake.wait(0.2)
                    self._wake.clear()
                    continue
                if self._abandon:
                    self.result.events_dropped += item[1]
                    continue
                try:
                    self._read(item[0])
                except Exception as exc:  # a chunk that does not decode: its spans are lost
                    self.result.last_error = f"{type(exc).__name__}: {exc}"[:200]
                    self.result.events_dropped += item[1]
                pending += self._builder.take()
                if len(pending) >= _BATCH:
                    self._send(pending)
                    pending = []
                    sent = time.monotonic()
            if not self._abandon:
                self._builder.finish()
                self._send(pending + self._builder.take())
            self.result.spans_over_budget = self._builder.over_budget
            self.result.thread_cpu_s = time.thread_time()

    def _read(self, data: bytes) -> None:
        from tidescope.export import _tsformat  # noqa: PLC0415

        node, pid = _core.node(), os.getpid()
        pos = 0
        while pos + _HEAD.size <= len(data):
            _, length, _ = _HEAD.unpack_from(data, pos)
            body = data[pos + _HEAD.size : pos + _HEAD.size + length]
            pos += _HEAD.size + length
            if body[:1] == bytes((_tsformat.CHUNK_EVENTS,)):
                self._builder.feed(decode_events(body, node, pid, self.limits.threshold_ns))

    def _send(self, spans: list[bytes]) -> None:
        for i in range(0, len(spans), _BATCH):
            part = spans[i : i + _BATCH]
            if self._abandon:
                self.result.spans_dropped += len(part)
                continue
            self._sender.send(w.request(self._resource, SCOPE, part), len(part), self.result)

    def close(self) -> ExportResult:
        """Send what is left (open calls as unfinished spans), waiting at most ``timeout``
        seconds; what is still unsent then is counted as dropped. Returns the counts."""
        with self._lock:
            self._closed = True
        self._stopping = True
        self._wake.set()
        deadline = time.monotonic() + self.timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(0.05)
        if self._thread.is_alive():
            self._abandon = True
            self._sender.abort()
            self._thread.join(1.0)
        self._sender.close()
        return self.result

    def summary(self) -> str:
        """One line: what was sent where and what was lost."""
        r = self.result
        lost = []
        if r.spans_dropped:
            lost.append(f"{r.spans_dropped} spans dropped ({r.last_error or 'export failed'})")
        if r.spans_over_budget:
            lost.append(f"{r.spans_over_budget} over the per-trace budget")
        if r.events_dropped:
            lost.append(f"{r.events_dropped} events not exported (queue full)")
        tail = f", {', '.join(lost)}" if lost else ""
        return f"OTLP: {r.spans_exported} spans sent to {self.endpoint}{tail}"
