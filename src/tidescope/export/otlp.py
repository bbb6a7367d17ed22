"""OTLP export: a trace's calls as OpenTelemetry spans, within a backend's limits (docs/otlp.md).

:class:`SpanBuilder` (:mod:`tidescope.export._otlp_spans`) turns one process's events into
OTLP ``Span`` messages within :class:`OtlpLimits`; :func:`build_requests` reads a finished
trace into ``ExportTraceServiceRequest`` bodies and :func:`export_trace` sends them;
``tidescope run --otlp-endpoint`` and a ``Drain`` under
``tidescope.start(otlp_endpoint=...)`` send live (:mod:`tidescope.export._otlp_live`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from tidescope.export import _otlp_wire as w
from tidescope.export._otlp_spans import OtlpLimits, SpanBuilder

__all__ = [
    "ExportResult",
    "OtlpLimits",
    "SpanBuilder",
    "build_requests",
    "export_trace",
    "limits_of",
    "require_otlp",
]

EXTRA_HINT: Final = "OTLP export needs the otlp extra: pip install 'tidescope[otlp]'"
SCOPE: Final = ("tidescope", "0.1.0.dev0")
_BATCH: Final = 2048  # spans per export request


def require_otlp() -> None:
    """Raise ImportError naming the extra unless the OTLP exporter is installed."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401, PLC0415
    except ImportError:
        raise ImportError(EXTRA_HINT) from None


def limits_of(cfg: Any) -> OtlpLimits:
    """The OtlpLimits of a :class:`tidescope.Config`'s ``otlp_*`` settings."""
    return OtlpLimits(
        threshold_ns=int(cfg.otlp_threshold_ms * 1_000_000),
        max_attribute_length=cfg.otlp_max_attribute_length,
        max_events=cfg.otlp_max_events,
        max_spans=cfg.otlp_max_spans,
    )


@dataclasses.dataclass
class ExportResult:
    """What an export did: spans sent and every loss, by cause."""

    spans_exported: int = 0
    spans_dropped: int = 0
    """Spans built but not delivered (the endpoint failed, or the queue was full)."""
    spans_over_budget: int = 0
    """Spans not built: their trace had ``max_spans`` already."""
    events_dropped: int = 0
    """Trace events the live exporter could not take (its queue full) and never read."""
    requests_failed: int = 0
    last_error: str | None = None
    thread_cpu_s: float = 0.0
    """CPU seconds the live exporter's thread used (decoding, building, sending)."""

    def as_stats(self) -> dict[str, Any]:
        """The counts under ``otlp_*`` keys, as the trace's closing stats carry them."""
        return {f"otlp_{k}": v for k, v in dataclasses.asdict(self).items()}


def resource_of(header: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """The OTLP resource of a process: its service name, host, pid and tidescope's node."""
    header = header or {}
    service = os.environ.get("OTEL_SERVICE_NAME")
    if not service:
        argv = header.get("argv") or []
        first = str(argv[0]) if argv else "python"
        service = Path(first.split()[-1]).stem or "python"
    out: list[tuple[str, Any]] = [("service.name", service)]
    if header.get("pid") is not None:
        out.append(("process.pid", header["pid"]))
    if header.get("node") is not None:
        out.append(("tidescope.node", str(header["node"])))
    out.append(("telemetry.sdk.name", "tidescope"))
    return out


def _module_files(directory: Path) -> dict[str, str]:
    """module -> source file, from the run's node tables."""
    files: dict[str, str] = {}
    for path in sorted(directory.glob("nodes-*.jsonl")):
        try:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if type(rec) is dict and rec.get("module") not in files:
                        files[str(rec.get("module"))] = str(rec.get("file"))
        except OSError:
            continue
    return files


def decode_events(
    body: bytes, node: Any, pid: Any, fold_ns: int | None = None
) -> list[tuple[Any, ...]]:
    """An EVENTS chunk body's events as checked envelope tuples, lean: calls' arguments and
    return values (never exported) are None (the C decoder's mode 1 | 4, or the pure
    decoder and the reader's check: the same tuples). With ``fold_ns`` (the span
    threshold), the short calls that made no call, reported nothing and did not raise (the
    mapping only counts them) come as runs, records of type ``_tsformat.FOLDED_CALLS``
    (mode 13).

    Raises:
        FormatError: the body does not decode, or holds events of bad types.
    """
    from tidescope.capture import _core  # noqa: PLC0415
    from tidescope.export import _tsformat, reader  # noqa: PLC0415

    content: list[tuple[Any, ...]]
    if fold_ns is not None:
        fold_ns = min(fold_ns, (1 << 63) - 1)  # the C decoder's int64
        if _core.decode_body is not None:
            content = _core.decode_body(body, node, pid, 13, fold_ns)[3]
            return content
        content = _tsformat.decode_body(body, node=node, pid=pid, fold_ns=fold_ns).content
        return content
    if _core.decode_body is not None:
        content = _core.decode_body(body, node, pid, 5)[3]
        return content
    chunk = _tsformat.decode_body(body, node=node, pid=pid, lean=True)
    reader._check(chunk)
    return list(chunk.content)


def _file_events(
    path: Path, fold_ns: int | None = None, damage: list[dict[str, Any]] | None = None
) -> Iterator[tuple[dict[str, Any] | None, list[tuple[Any, ...]]]]:
    """``(header, events)`` for each whole EVENTS chunk of a trace file, in order; damaged
    chunks are skipped, each told in ``damage`` (``{"offset": N, "reason": "..."}``, as
    the reader's ``$damaged`` records)."""
    from tidescope.export import _tsformat, reader  # noqa: PLC0415

    header: dict[str, Any] | None = None
    for status, offset, body in reader._chunks(path, reader.MAX_CHUNK):
        if status == reader._TORN:
            break  # a tail cut short: the process still runs, or was killed
        if status != reader._OK:
            if damage is not None:
                damage.append({"offset": offset, "reason": body.decode()})
            continue
        kind = body[0]
        try:
            if kind == _tsformat.CHUNK_EVENTS:
                h = header or {}
                yield header, decode_events(body, h.get("node"), h.get("pid"), fold_ns)
            elif kind == _tsformat.CHUNK_HEADER and header is None:
                chunk = _tsformat.decode_body(body)
                reader._check(chunk)
                header = chunk.content
        except _tsformat.FormatError as exc:
            if damage is not None:
                damage.append({"offset": offset, "reason": f"a chunk that does not decode ({exc})"})


def build_requests(
    directory: str | os.PathLike[str],
    limits: OtlpLimits,
    result: ExportResult,
    damage: list[str] | None = None,
) -> Iterator[tuple[bytes, int]]:
    """``(ExportTraceServiceRequest bytes, spans in it)`` for a finished trace directory,
    a batch at a time; ``result`` gathers the spans over budget, ``damage`` a line for each
    file with damaged chunks (skipped), as the other exports say it.

    Raises:
        TraceError: a file cannot be read, or is not a trace.
    """
    from tidescope.export.reader import trace_files  # noqa: PLC0415

    root = Path(directory)
    files = _module_files(root)
    for path in trace_files(root):
        builder = SpanBuilder(limits, path.name, files)
        header: dict[str, Any] | None = None
        skipped: list[dict[str, Any]] = []
        for header, events in _file_events(path, limits.threshold_ns, skipped):
            builder.feed(events)
            if len(builder.spans) >= _BATCH:
                spans = builder.take()
                yield w.request(resource_of(header), SCOPE, spans), len(spans)
        builder.finish()
        result.spans_over_budget += builder.over_budget
        if skipped and damage is not None:
            first = skipped[0]
            damage.append(
                f"{path}: {len(skipped)} damaged chunk(s) skipped"
                f" (first: at byte {first['offset']}, {first['reason']})"
            )
        spans = builder.take()
        for i in range(0, len(spans), _BATCH):
            part = spans[i : i + _BATCH]
            yield w.request(resource_of(header), SCOPE, part), len(part)


def export_trace(
    directory: str | os.PathLike[str],
    endpoint: str,
    *,
    limits: OtlpLimits | None = None,
    timeout: float = 10.0,
    damage: list[str] | None = None,
) -> ExportResult:
    """Send a finished trace directory's spans to an OTLP/HTTP endpoint (``.../v1/traces``);
    ``damage`` gathers a line for each file whose damaged chunks were skipped.

    Raises:
        ImportError: the ``otlp`` extra is missing.
        TraceError: a file cannot be read, or is not a trace.
    """
    from tidescope.export._otlp_live import Sender  # noqa: PLC0415

    result = ExportResult()
    sender = Sender(endpoint, timeout)
    try:
        for body, n in build_requests(directory, limits or OtlpLimits(), result, damage):
            sender.send(body, n, result)
    finally:
        sender.close()
    return result
