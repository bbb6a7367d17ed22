"""Interop: a service instrumented by OpenTelemetry calls a service recorded by tidescope;
both export to one OTLP/HTTP endpoint, and their spans form one trace."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from otlp_receiver import Receiver, attrs

BACKEND = """
import sys, time
import uvicorn
from fastapi import FastAPI
from tidescope.integrations.fastapi import instrument

app = instrument(FastAPI())

def price(item):
    time.sleep(0.002)  # over the 1 ms threshold: a span of its own
    return len(item) * 10

@app.get("/price/{item}")
async def get_price(item: str):
    return {"price": price(item)}

print("serving", flush=True)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_backend(tmp_path: Path, endpoint: str) -> tuple[subprocess.Popen[str], str]:
    (tmp_path / "backend.py").write_text(textwrap.dedent(BACKEND))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidescope", "run", "--otlp-endpoint", endpoint, "-o", "trace",
         "backend.py", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OTEL_SERVICE_NAME": "pricing"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            httpx.get(f"{url}/docs", timeout=1)
            break
        except httpx.TransportError:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
    return proc, url


def make_front(backend: str, endpoint: str) -> Any:
    """A FastAPI service traced by OpenTelemetry's SDK and FastAPI instrumentation."""
    from fastapi import FastAPI
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.propagate import inject
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource({"service.name": "front"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    front = FastAPI()

    @front.get("/quote/{item}")
    async def quote(item: str) -> Any:
        headers: dict[str, str] = {}
        inject(headers)  # the W3C traceparent of the current (server) span
        async with httpx.AsyncClient() as client:
            reply = await client.get(f"{backend}/price/{item}", headers=headers)
        return {"quote": reply.json()["price"] + 1}

    FastAPIInstrumentor.instrument_app(front, tracer_provider=provider)
    return front, provider


def test_front_and_recorded_backend_spans_form_one_trace(
    tmp_path: Path, otlp_receiver: Receiver, web_uvicorn: Callable[[Any], str]
) -> None:
    proc, backend = start_backend(tmp_path, otlp_receiver.url)
    try:
        front, provider = make_front(backend, otlp_receiver.url)
        base = web_uvicorn(front)
        assert httpx.get(f"{base}/quote/apple", timeout=30).json() == {"quote": 51}
        provider.force_flush()
        spans = otlp_receiver.wait_for(lambda s: any(x.name == "__main__.get_price" for x in s))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert out == "serving\n", err  # uvicorn re-raises the SIGTERM it handled
    services = {}
    for req in otlp_receiver.requests:
        for rs in req.resource_spans:
            name = attrs(rs.resource)["service.name"]
            for ss in rs.scope_spans:
                for s in ss.spans:
                    services[s.span_id] = name
    spans = otlp_receiver.spans()
    by_id = {s.span_id: s for s in spans}
    (front_server,) = [
        s for s in spans if services[s.span_id] == "front" and s.kind == s.SPAN_KIND_SERVER
    ]
    (request,) = [s for s in spans if attrs(s).get("url.path") == "/price/apple"]
    assert services[request.span_id] == "pricing"
    (handler,) = [s for s in spans if s.name == "__main__.get_price"]
    (price,) = [s for s in spans if s.name == "__main__.price"]
    spans = [s for s in spans if s.trace_id == request.trace_id]  # (not the readiness probe's)
    # one trace: the front's; the recorded request hangs under the front's server span
    assert {s.trace_id for s in spans} == {front_server.trace_id}
    assert {services[s.span_id] for s in spans} == {"front", "pricing"}
    assert request.parent_span_id == front_server.span_id
    assert attrs(request)["http.response.status_code"] == 200
    assert attrs(request)["url.path"] == "/price/apple"
    assert handler.parent_span_id == request.span_id
    assert price.parent_span_id == handler.span_id
    # every parent named is a span that arrived, except the front's root
    for s in spans:
        assert not s.parent_span_id or s.parent_span_id in by_id
    (otlp,) = [line for line in err.splitlines() if "OTLP:" in line]
    assert otlp == f"tidescope: OTLP: 4 spans sent to {otlp_receiver.url}"  # nothing lost
