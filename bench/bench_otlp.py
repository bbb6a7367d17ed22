"""OTLP export (issue 14): spans/s from a finished trace, live-export CPU overhead, the
endpoint down, and a million-call request within the limits.

    python bench/bench_otlp.py [--rounds 5] [--spans 200000] [--calls 1000000]

1. **Finished trace.** A program of ``--spans`` calls of a few functions is recorded with
   ``tidescope run``; its spans (threshold 0: every call a span) are built and encoded by
   ``tidescope.export.otlp.build_requests`` (the wire bytes written directly), then sent
   with ``export_trace`` to a receiver on 127.0.0.1 that reads each request whole. For
   comparison, the same number of spans through OpenTelemetry's SDK path: ``ReadableSpan``
   objects encoded by the OTLP exporter's ``encode_spans`` (spans per second of each).
2. **Live export overhead.** A program making about 1,000 calls of ~1 ms per second
   (spans) and ``--short`` (50) short calls under each (folded), run by ``tidescope run`` with and
   without ``--otlp-endpoint`` to a receiver, interleaved, ``--rounds`` times; CPU time of
   the child process (user + system, ``RUSAGE_CHILDREN``); the medians compared.
3. **Endpoint down.** The same program with ``--otlp-endpoint`` at a closed port: wall and
   CPU time against the run without export, and its stdout compared.
4. **A million calls under one request** (``--calls``), exported live; the receiver
   decodes every request and checks the limits: events per span, attribute size, spans in
   the request's trace. Every 5,000th call raises a 5,000-character message and the
   handler reports it (an event each on the handler's span: 200, over the 128 cap).
"""

from __future__ import annotations

import argparse
import http.server
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

FINISHED = """
def leaf(i):
    return i + 1

def mid(i):
    return leaf(i) + leaf(i)

def main(n):
    t = 0
    for i in range(n // 3):
        t += mid(i)
    return t

import sys
print(main(int(sys.argv[1])))
"""

LIVE = """
import time

def short(i):
    return i * 2

def unit(k, shorts):
    end = time.perf_counter() + 0.00102  # just over the 1 ms threshold: a span each
    n = 0
    for i in range(shorts):
        n += short(i)
    while time.perf_counter() < end:
        n += 1
    return n

def main(seconds, shorts):
    units = int(seconds * 950)
    total = 0
    for k in range(units):
        total += unit(k, shorts) > 0
    return total

import sys
print(main(float(sys.argv[1]), int(sys.argv[2])))
"""

MILLION = """
import asyncio, sys
from tidescope.capture import runtime
from tidescope.integrations.asgi import TideScopeMiddleware

def tiny(i):
    if i % 5_000 == 4_999:
        raise ValueError("x" * 5000)
    return i

def handler(n):
    t = 0
    for i in range(n):
        try:
            t += tiny(i)
        except ValueError as exc:
            runtime.report_error(exc)
    return t

async def app(scope, receive, send):
    print(handler(int(sys.argv[1])))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})

async def main():
    scope = {"type": "http", "method": "POST", "path": "/bulk", "query_string": b"",
             "headers": [(b"traceparent",
                          b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
             "client": ("127.0.0.1", 1)}
    async def receive():
        return {"type": "http.request", "body": b""}
    async def send(message):
        pass
    await TideScopeMiddleware(app)(scope, receive, send)

asyncio.run(main())
"""


class Sink:
    """An OTLP/HTTP receiver on 127.0.0.1; decodes and keeps requests if ``keep``."""

    def __init__(self, keep: bool = False) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.requests: list[Any] = []
        self.bytes = 0
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.bytes += len(body)
                if keep:
                    sink.requests.append(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1/traces"


def run_child(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, stdout) of ``python -m tidescope ...``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "tidescope", *args], cwd=cwd, capture_output=True, text=True,
        check=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stdout


def bench_finished(work: Path, spans: int) -> None:
    from tidescope.export.otlp import ExportResult, OtlpLimits, build_requests, export_trace

    (work / "finished.py").write_text(textwrap.dedent(FINISHED))
    run_child(["run", "-o", "t-finished", "finished.py", str(spans)], work)
    limits = OtlpLimits(threshold_ns=0, max_spans=1 << 40)
    best_build = best_send = best_cpu = float("inf")
    n = 0
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        n = sum(k for _, k in build_requests(work / "t-finished", limits, ExportResult()))
        best_build = min(best_build, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
        sink = Sink()
        t0 = time.perf_counter()
        result = export_trace(work / "t-finished", sink.url, limits=limits)
        best_send = min(best_send, time.perf_counter() - t0)
        assert result.spans_exported == n, result
        sink.server.shutdown()
    print(f"finished trace: {n} spans")
    print(f"  read + build + encode:        {n / best_build:12,.0f} spans/s")
    print(f"  the same per CPU second:      {n / best_cpu:12,.0f} spans/s")
    print(f"  read + build + encode + POST: {n / best_send:12,.0f} spans/s (export_trace)")
    sdk = sdk_spans_per_second(min(n, 20_000))
    print(f"  SDK ReadableSpan + encode_spans (spans made in advance): {sdk:12,.0f} spans/s")


def sdk_spans_per_second(n: int) -> float:
    """OpenTelemetry's own path for comparison: SDK spans, then the exporter's encoder."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    tracer = provider.get_tracer("bench")
    t0 = time.perf_counter()
    spans = []
    for i in range(n):
        s = tracer.start_span("mod.func", attributes={
            "code.function.name": "mod.func", "code.file.path": "/x/mod.py",
            "code.line.number": 3, "tidescope.event_id": i,
        })  # fmt: skip
        s.end()
        spans.append(s)
    encode_spans(spans).SerializeToString()
    return n / (time.perf_counter() - t0)


def bench_live(work: Path, rounds: int, seconds: float, short: int) -> None:
    (work / "live.py").write_text(textwrap.dedent(LIVE))
    sink = Sink()
    down = closed_url()
    cpu: dict[str, list[float]] = {"none": [], "live": [], "down": []}
    wall: dict[str, list[float]] = {"none": [], "live": [], "down": []}
    outs: dict[str, set[str]] = {"none": set(), "live": set(), "down": set()}
    for r in range(rounds):
        order = ["none", "live", "down"]
        order = order[r % 3 :] + order[: r % 3]
        for kind in order:
            extra = (
                [] if kind == "none" else ["--otlp-endpoint", sink.url if kind == "live" else down]
            )
            out_dir = f"t-{kind}-{r}"
            args = ["run", *extra, "-o", out_dir, "live.py", str(seconds), str(short)]
            w, c, out = run_child(args, work)
            cpu[kind].append(c)
            wall[kind].append(w)
            outs[kind].add(out)
    from tidescope.export.reader import read_trace, trace_files

    (path,) = trace_files(work / f"t-live-{rounds - 1}")
    stats = next(r["$stats"] for r in read_trace(path) if "$stats" in r)
    spans_s = stats["otlp_spans_exported"] / seconds
    base_c, base_w = statistics.median(cpu["none"]), statistics.median(wall["none"])
    print(
        f"live export: {seconds:g} s program, {spans_s:,.0f} spans/s exported,"
        f" {short} short calls under each, {rounds} rounds"
    )
    for kind in ("none", "live", "down"):
        c, w = statistics.median(cpu[kind]), statistics.median(wall[kind])
        print(
            f"  {kind:5} CPU {c:6.3f} s ({(c / base_c - 1) * 100:+5.1f}%)"
            f"  wall {w:6.3f} s ({(w / base_w - 1) * 100:+5.1f}%)"
        )
    print(f"  stdout identical across runs: {len(outs['none'] | outs['live'] | outs['down']) == 1}")
    print(f"  the live exporter's own thread: {stats['otlp_thread_cpu_s']:.3f} s CPU (last round)")
    (path,) = trace_files(work / f"t-down-{rounds - 1}")
    down_stats = next(r["$stats"] for r in read_trace(path) if "$stats" in r)
    print(
        f"  endpoint down: {down_stats['otlp_spans_dropped']} spans dropped,"
        f" {down_stats['otlp_requests_failed']} requests failed, counted in $stats"
    )


def bench_million(work: Path, calls: int) -> None:
    (work / "million.py").write_text(textwrap.dedent(MILLION))
    sink = Sink(keep=True)
    w, c, _ = run_child(
        ["run", "--otlp-endpoint", sink.url, "-o", "t-million", "million.py", str(calls)], work,
        env={
            "TIDESCOPE_MAX_STRING": "10000", "TIDESCOPE_MAX_EVENT_BYTES": "100000",
            "TIDESCOPE_BUFFER_SIZE": "1048576",
        },
    )  # fmt: skip
    spans = [
        s
        for q in sink.requests
        for rs in q.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    trace = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
    in_trace = [s for s in spans if s.trace_id == trace]
    most_events = max(len(s.events) for s in spans)
    longest = 0
    for s in spans:
        for item in (s, *s.events):
            for kv in item.attributes:
                longest = max(longest, len(kv.value.string_value.encode()))
    root = next(s for s in in_trace if s.name == "POST")
    over = {kv.key: kv.value.int_value for kv in root.attributes}.get(
        "tidescope.spans_over_budget", 0
    )
    handler = next(s for s in in_trace if s.name == "__main__.handler")
    folded = {kv.key: kv.value.int_value for kv in handler.attributes}["tidescope.folded.calls"]
    print(f"a request of {calls:,} calls, exported live ({w:.1f} s wall, {c:.1f} s CPU):")
    print(f"  spans in its trace {len(in_trace)} (budget 10,000), over budget {over}")
    print(
        f"  most events on a span {most_events} (limit 128), longest attribute {longest} B (2,048)"
    )
    print(f"  calls folded into the handler's counters {folded:,}; request bytes {sink.bytes:,}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--short", type=int, default=50, help="short calls under each span")
    parser.add_argument("--only", choices=("finished", "live", "million"))
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs,"
        f" load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only in (None, "finished"):
            bench_finished(work, args.spans)
        if args.only in (None, "live"):
            bench_live(work, args.rounds, args.seconds, args.short)
        if args.only in (None, "million"):
            bench_million(work, args.calls)


if __name__ == "__main__":
    main()
