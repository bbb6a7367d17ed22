"""OTLP export against a real OTLP/HTTP endpoint: spans, parents, events, attributes, limits."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from test_reader import COUNTS, DAMAGED, GOOD, HEADER, NAME, trace_dir

import tidescope
from otlp_receiver import Receiver, attrs, closed_port_url
from tidescope.capture import _core, runtime
from tidescope.config import ConfigError
from tidescope.export import otlp
from tidescope.export._tsformat import FOLDED_CALLS
from tidescope.export.drain import Drain
from tidescope.export.reader import read_trace, trace_files

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
LONG = {"TIDESCOPE_MAX_STRING": "10000", "TIDESCOPE_MAX_EVENT_BYTES": "100000"}  # > 2 KB values

# A request (through tidescope's ASGI middleware, with a caller's traceparent) whose handler
# makes short calls, a slow one, one that raises, a database query, and 300 snapshots.
APP = f"""
import asyncio, sqlite3, time
from tidescope.integrations.asgi import TideScopeMiddleware
from tidescope.integrations import dbapi

def tiny(i):
    return i + 1

def slow():
    time.sleep(0.003)
    return "slow"

def boom(text):
    raise ValueError(text)

def handler():
    x = 0
    for i in range(300):
        x = tiny(x)
    slow()
    try:
        boom("z" * 5000)
    except ValueError:
        pass
    con = dbapi.connect(sqlite3, ":memory:")
    con.execute("select 1").fetchall()
    return x

async def app(scope, receive, send):
    print("handled", handler())
    await send({{"type": "http.response.start", "status": 201, "headers": []}})
    await send({{"type": "http.response.body", "body": b"ok"}})

async def main():
    scope = {{"type": "http", "method": "GET", "path": "/items/7", "query_string": b"",
             "headers": [(b"traceparent", b"00-{TRACE_ID}-{CALLER_SPAN}-01")],
             "client": ("127.0.0.1", 5000)}}
    async def receive():
        return {{"type": "http.request", "body": b""}}
    async def send(message):
        pass
    await TideScopeMiddleware(app)(scope, receive, send)

asyncio.run(main())
print("done")
"""


def write(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source))
    return path


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "tidescope", *args], cwd=cwd, capture_output=True, text=True,
        check=False, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip


def by_name(spans: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def closing_stats(directory: Path) -> dict[str, Any]:
    (path,) = trace_files(directory)
    return next(r["$stats"] for r in read_trace(path) if "$stats" in r)


def check_app_spans(spans: list[Any]) -> None:
    """The spans APP's request gives, whichever way they were exported."""
    names = by_name(spans)
    (request,) = names["GET"]
    (app,) = names["__main__.app"]
    (handler,) = names["__main__.handler"]
    (slow,) = names["__main__.slow"]
    (boom,) = names["__main__.boom"]
    (query,) = names["SELECT"]
    # short calls are folded, not spans (on a loaded machine a call descheduled in its
    # middle may last the 1 ms threshold: a span of its own, rightly)
    assert len(names.get("__main__.tiny", [])) <= 3
    # one trace, the caller's: the request's parent is the caller's span
    for s in (request, app, handler, slow, boom, query):
        assert s.trace_id.hex() == TRACE_ID
    assert request.parent_span_id.hex() == CALLER_SPAN
    assert request.kind == request.SPAN_KIND_SERVER
    assert app.parent_span_id == request.span_id
    assert handler.parent_span_id == app.span_id
    for child in (slow, boom, query):
        assert child.parent_span_id == handler.span_id
    # HTTP, database and code semantic conventions
    assert attrs(request) | {"tidescope.event_id": 0} == attrs(request) | {
        "http.request.method": "GET", "url.path": "/items/7",
        "http.response.status_code": 201, "tidescope.event_id": 0,
    }  # fmt: skip
    q = attrs(query)
    assert (q["db.query.text"], q["db.system.name"], query.kind) == (
        "select 1",
        "sqlite",
        query.SPAN_KIND_CLIENT,
    )
    h = attrs(handler)
    assert h["code.function.name"] == "__main__.handler"
    assert h["code.file.path"].endswith("app.py")
    assert h["code.line.number"] == 16  # (the source starts with a blank line)
    # the local trace: file and event id
    assert h["tidescope.trace.file"].startswith("events-")
    assert type(h["tidescope.event_id"]) is int
    # the 300 short calls, folded into the handler's counters
    assert h["tidescope.folded.calls"] == 300
    assert h["tidescope.folded.functions"] == ["__main__.tiny"]
    assert h["tidescope.folded.count"] == [300]
    assert h["tidescope.folded.total_ns"][0] >= h["tidescope.folded.self_ns"][0] > 0
    # the exception, its message cut to the attribute limit
    (exc,) = boom.events
    assert exc.name == "exception"
    e = attrs(exc)
    assert e["exception.type"] == "builtins.ValueError"
    assert e["exception.message"] == "z" * 2048
    assert boom.status.code == boom.status.STATUS_CODE_ERROR
    # 300+ snapshots: 127 kept, then one summary of the rest; the span counts them
    assert len(handler.events) == 128
    assert {e.name for e in handler.events[:-1]} == {"tidescope.variables"}
    assert attrs(handler.events[0]) == {"tidescope.variable.x": "0"}
    summary = handler.events[-1]
    assert summary.name == "tidescope.events_dropped"
    assert attrs(summary)["tidescope.dropped_events"] == handler.dropped_events_count > 170


# Short calls with no caller, in runs under callers in three threads, broken by a call
# that raised and by calls of another function.
FOLDING = """
import threading, time

def leaf(i):
    return i

def boom():
    raise ValueError("x")

def mid(n):
    t = 0
    for i in range(n):
        t += leaf(i)
    return t

def work(n):
    t = 0
    for i in range(n):
        t += leaf(i)
        if i % 50 == 0:
            t += mid(3)
    try:
        boom()
    except ValueError:
        pass
    time.sleep(0.002)
    return t

for i in range(5):
    leaf(i)
threads = [threading.Thread(target=work, args=(300,)) for _ in range(2)]
for t in threads:
    t.start()
print(work(200))
for t in threads:
    t.join()
"""


def test_short_calls_folded_by_the_decoder_give_the_very_same_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exporters decode with fold_ns (the C decoder's mode 13, or the pure decoder):
    the spans are byte for byte those of the calls decoded one by one."""
    limits = otlp.OtlpLimits()

    def spans(directory: Path, fold_ns: int | None) -> list[bytes]:
        out: list[bytes] = []
        for path in trace_files(directory):
            builder = otlp.SpanBuilder(limits, path.name, {})
            for _, events in otlp._file_events(path, fold_ns):
                builder.feed(events)
            builder.finish()
            out += builder.take()
        return out

    write(tmp_path / "app.py", APP)
    write(tmp_path / "folding.py", FOLDING)
    for name, level in (("app", "values"), ("folding", "values"), ("folding", "calls")):
        out = tmp_path / f"{name}-{level}"
        run = cli("run", "--level", level, "-o", str(out), f"{name}.py", cwd=tmp_path, env=LONG)
        assert run.returncode == 0, run.stderr
        plain = spans(out, None)
        assert len(plain) >= 4
        runs = [
            r
            for path in trace_files(out)
            for _, events in otlp._file_events(path, limits.threshold_ns)
            for r in events
            if r[11] == FOLDED_CALLS
        ]
        assert runs  # (at --level values an assignment's event ends most runs)
        if level == "calls":
            assert max(r[12][2] for r in runs) > 1
        assert spans(out, limits.threshold_ns) == plain
        if _core.decode_body is not None:  # and the pure decoder's folding
            with monkeypatch.context() as m:
                m.setattr(_core, "decode_body", None)
                assert spans(out, limits.threshold_ns) == plain


def test_export_command_sends_a_finished_trace_as_joined_spans(
    tmp_path: Path, otlp_receiver: Receiver
) -> None:
    write(tmp_path / "app.py", APP)
    run = cli("run", "--level", "values", "-o", "trace", "app.py", cwd=tmp_path, env=LONG)
    assert run.returncode == 0, run.stderr
    out = cli("export", "trace", "--format", "otlp", "--endpoint", otlp_receiver.url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    spans = otlp_receiver.spans()
    assert f"{len(spans)} spans -> {otlp_receiver.url}" in out.stderr
    check_app_spans(spans)
    resource = {kv.key for kv in otlp_receiver.requests[0].resource_spans[0].resource.attributes}
    assert {"service.name", "process.pid"} <= resource


def test_export_command_says_which_damaged_chunks_it_skipped(
    tmp_path: Path, otlp_receiver: Receiver
) -> None:
    directory = trace_dir(tmp_path, GOOD[0], DAMAGED["binary"], COUNTS[1])
    out = cli("export", str(directory), "--format", "otlp", "--endpoint", otlp_receiver.url,
              cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    damage, done = out.stderr.splitlines()
    offset = len(HEADER) + len(GOOD[0])
    assert damage == (
        f"tidescope: {directory / NAME}: 1 damaged chunk(s) skipped"
        f" (first: at byte {offset}, bytes that are no chunk)"
    )
    assert done.startswith("tidescope: ") and f"spans -> {otlp_receiver.url}" in done


def test_live_export_during_run_sends_the_same_spans_and_counts_them(
    tmp_path: Path, otlp_receiver: Receiver
) -> None:
    write(tmp_path / "app.py", APP)
    plain = subprocess.run(
        [sys.executable, "app.py"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    live = cli(
        "run", "--level", "values", "--otlp-endpoint", otlp_receiver.url, "-o", "trace",
        "app.py", cwd=tmp_path, env=LONG,
    )  # fmt: skip
    assert (live.returncode, live.stdout) == (plain.returncode, plain.stdout)
    spans = otlp_receiver.spans()
    check_app_spans(spans)
    assert f"OTLP: {len(spans)} spans sent to {otlp_receiver.url}" in live.stderr
    stats = closing_stats(tmp_path / "trace")
    assert stats["otlp_spans_exported"] == len(spans)
    assert stats["otlp_spans_dropped"] == stats["otlp_events_dropped"] == 0
    show = cli("show", "trace", cwd=tmp_path)
    assert f"    OTLP: {len(spans)} spans exported live\n" in show.stdout, show.stdout
    # the file exported afterwards gives the very same spans
    live_ids = {(s.span_id, s.parent_span_id, s.name) for s in spans}
    otlp_receiver.requests.clear()
    cli("export", "trace", "--format", "otlp", "--endpoint", otlp_receiver.url, cwd=tmp_path)
    assert {(s.span_id, s.parent_span_id, s.name) for s in otlp_receiver.spans()} == live_ids


def test_endpoint_down_leaves_the_program_alone_and_counts_the_drops(tmp_path: Path) -> None:
    write(tmp_path / "app.py", APP)
    plain = subprocess.run(
        [sys.executable, "app.py"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    down = closed_port_url()
    run = cli("run", "--otlp-endpoint", down, "-o", "trace", "app.py", cwd=tmp_path)
    assert (run.returncode, run.stdout) == (plain.returncode, plain.stdout)
    stats = closing_stats(tmp_path / "trace")
    assert stats["otlp_spans_exported"] == 0
    assert stats["otlp_spans_dropped"] >= 6 and stats["otlp_requests_failed"] >= 1
    assert (
        f"OTLP: 0 spans sent to {down}, {stats['otlp_spans_dropped']} spans dropped" in run.stderr
    )
    assert "Traceback" not in run.stderr and "Failed to export" not in run.stderr
    show = cli("show", "trace", cwd=tmp_path).stdout
    assert (
        f"    OTLP: 0 spans exported live, {stats['otlp_spans_dropped']} dropped in"
        f" {stats['otlp_requests_failed']} failed request(s) ({stats['otlp_last_error']})\n"
    ) in show, show
    # the finished trace to the same endpoint: status 1, one line
    out = cli("export", "trace", "--format", "otlp", "--endpoint", down, cwd=tmp_path)
    assert out.returncode == 1
    said = said_lines(out.stderr)
    assert len(said) == 1 and "spans dropped" in said[0]


def test_a_failing_endpoint_counts_its_spans_as_dropped(
    tmp_path: Path, otlp_receiver: Receiver
) -> None:
    write(tmp_path / "app.py", APP)
    cli("run", "-o", "trace", "app.py", cwd=tmp_path)
    otlp_receiver.status = 400  # not retryable: the exporter gives up at once
    out = cli("export", "trace", "--format", "otlp", "--endpoint", otlp_receiver.url, cwd=tmp_path)
    assert out.returncode == 1
    assert "0 spans ->" in out.stderr and "HTTP 400" in out.stderr


# 200,000 short calls under one request, every 1,000th raising (a span each) and reported as
# an error on the handler (an event each): the limits hold, and what is over them is counted.
MANY = """
import asyncio
from tidescope.capture import _core, runtime
from tidescope.integrations.asgi import TideScopeMiddleware

def tiny(i):
    if i % 1000 == 999:
        raise KeyError("k" * 9000)
    return i

def handler():
    n = 0
    for i in range(200_000):
        try:
            n += tiny(i)
        except KeyError as exc:
            runtime.report_error(exc)
    return n

async def app(scope, receive, send):
    print(handler())
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})

async def main():
    scope = {"type": "http", "method": "POST", "path": "/bulk", "query_string": b"",
             "headers": [], "client": ("127.0.0.1", 5000)}
    async def receive():
        return {"type": "http.request", "body": b""}
    async def send(message):
        pass
    await TideScopeMiddleware(app)(scope, receive, send)

asyncio.run(main())
"""


def test_a_request_of_200000_calls_stays_within_the_limits(
    tmp_path: Path, otlp_receiver: Receiver
) -> None:
    write(tmp_path / "many.py", MANY)
    run = cli(
        "run", "--otlp-endpoint", otlp_receiver.url, "-o", "trace", "many.py", cwd=tmp_path,
        env={**LONG, "TIDESCOPE_OTLP_MAX_SPANS": "50", "TIDESCOPE_BUFFER_SIZE": "1048576"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    (request,) = by_name(otlp_receiver.spans())["POST"]
    spans = [s for s in otlp_receiver.spans() if s.trace_id == request.trace_id]
    names = by_name(spans)
    assert len(spans) <= 50 + 1  # the budget, and the request's root span (which tells it)
    over = attrs(request)["tidescope.spans_over_budget"]
    # 200 raising calls, handler, app, request (and any tiny call a thread switch made slow)
    assert over >= 200 + 3 - len(spans)
    assert closing_stats(tmp_path / "trace")["otlp_spans_over_budget"] == over
    for s in spans:
        assert len(s.events) <= 128
        for item in (s, *s.events):
            for v in attrs(item).values():
                assert len(v.encode() if type(v) is str else b"") <= 2048
    (handler,) = names["__main__.handler"]
    h = attrs(handler)
    # every call of tiny is a span or a count on the handler (spans over budget fold too)
    tiny = len(names.get("__main__.tiny", ()))
    assert h["tidescope.folded.calls"] == h["tidescope.folded.count"][0] == 200_000 - tiny
    assert len(handler.events) == 128
    assert attrs(handler.events[-1])["tidescope.dropped_events"] == 200 - 127
    assert attrs(handler.events[0])["exception.type"] == "builtins.KeyError"


def test_start_with_otlp_endpoint_exports_live_through_the_drain(
    tmp_path: Path, otlp_receiver: Receiver
) -> None:
    session = tidescope.start(otlp_endpoint=otlp_receiver.url, otlp_threshold_ms=0)
    drain = Drain(tmp_path / "trace").start()
    outer = runtime.report_function_entry("shop", "checkout", [])
    inner = runtime.report_function_entry("shop", "add", ["apple"])
    runtime.report_function_exit(inner, 1)
    runtime.report_function_exit(outer, 1)
    spans = otlp_receiver.wait_for(lambda s: len(s) == 2)
    assert [s.name for s in spans] == ["shop.add", "shop.checkout"]
    assert spans[0].parent_span_id == spans[1].span_id == outer.to_bytes(8, "big")
    drain.stop(session.stop())
    stats = closing_stats(tmp_path / "trace")
    assert stats["otlp_spans_exported"] == 2


def test_otlp_settings_and_command_line_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="otlp_endpoint"):
        tidescope.Config(otlp_endpoint="collector:4318")
    with pytest.raises(ConfigError, match="otlp_max_events"):
        tidescope.Config(otlp_max_events=0)
    write(tmp_path / "app.py", "print(1)\n")
    cli("run", "-o", "trace", "app.py", cwd=tmp_path)
    for args, message in [
        ((), "--format otlp needs --endpoint URL"),
        (("--endpoint", "nowhere"), "--endpoint 'nowhere' is invalid"),
    ]:
        out = cli("export", "trace", "--format", "otlp", *args, cwd=tmp_path)
        assert out.returncode == 2
        said = said_lines(out.stderr)
        assert len(said) == 1 and message in said[0], out.stderr
    bad = cli("run", "--otlp-endpoint", "ftp://x", "app.py", cwd=tmp_path)
    assert bad.returncode == 2 and "otlp_endpoint" in bad.stderr
    assert json.loads(cli("debug", cwd=tmp_path).stdout)["config"]["otlp_max_spans"] == 10000


def said_lines(stderr: str) -> list[str]:
    """stderr's lines but the notice of which run is read (the latest, given its parent)."""
    return [line for line in stderr.splitlines() if "reading the latest run" not in line]
