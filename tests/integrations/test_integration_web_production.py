"""The web middleware as run in production, on real servers on 127.0.0.1: one warning when
capture is off, one correlation id form across services, error stacks from the application."""

from __future__ import annotations

import logging
import os
import re
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
import pytest
import requests

import tidescope
from tidescope.events import Event
from tidescope.integrations import _web

PACKAGE_DIR = os.path.dirname(os.path.abspath(tidescope.__file__))
HEX32 = re.compile("[0-9a-f]{32}")
DEADLINE = 60.0


def of_type(events: list[Event], event_type: str) -> list[Event]:
    return [e for e in events if e.event_type == event_type]


def completed(n: int) -> Callable[[list[Event]], bool]:
    return lambda ev: len(of_type(ev, "http_request_complete")) >= n


# ---------------------------------------------------------------------------------------
# capture off: one warning per process


ASGI_APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tidescope.integrations.asgi import TideScopeMiddleware


async def hello(request):
    return PlainTextResponse("hi")


app = TideScopeMiddleware(Starlette(routes=[Route("/", hello)]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_asgi_app_under_plain_uvicorn_warns_once_that_capture_is_off(tmp_path: Path) -> None:
    (tmp_path / "service.py").write_text(textwrap.dedent(ASGI_APP))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDESCOPE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        end = time.monotonic() + DEADLINE
        while True:
            try:
                first = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < end, "uvicorn did not start"
                time.sleep(0.05)
        second = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert first.text == second.text == "hi"
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=DEADLINE)
    assert stderr.count(_web.CAPTURE_OFF) == 1, stderr
    assert "tidescope run" in _web.CAPTURE_OFF and "tidescope.start()" in _web.CAPTURE_OFF


FACTORY_APP = """
import os

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tidescope
from tidescope.integrations.asgi import TideScopeMiddleware


async def hello(request):
    return PlainTextResponse(str(os.getpid()))


def create_app():
    tidescope.record(os.environ["TRACE_DIR"])
    return TideScopeMiddleware(Starlette(routes=[Route("/", hello)]))
"""


@pytest.mark.slow
def test_record_in_the_app_factory_writes_one_file_per_uvicorn_worker(tmp_path: Path) -> None:
    (tmp_path / "service.py").write_text(textwrap.dedent(FACTORY_APP))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDESCOPE_")}
    env["TRACE_DIR"] = str(tmp_path / "trace")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service:create_app", "--factory", "--workers", "2",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--no-access-log"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    trace_dir = tmp_path / "trace"
    try:
        end = time.monotonic() + DEADLINE
        # both workers have called the factory (their files exist): both then stop cleanly
        while len(list(trace_dir.glob("events-*.tstrace"))) < 2:
            assert proc.poll() is None and time.monotonic() < end, "uvicorn did not start"
            time.sleep(0.05)
        while True:
            try:
                pids = {requests.get(f"http://127.0.0.1:{port}/", timeout=10).text}
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < end, "uvicorn did not start"
                time.sleep(0.05)
        for _ in range(3):
            pids.add(requests.get(f"http://127.0.0.1:{port}/", timeout=10).text)
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=DEADLINE)
    assert _web.CAPTURE_OFF not in stderr
    trace = tidescope.open_trace(trace_dir)
    assert len(trace.files) == 2, stderr  # one file per worker, both closed complete
    assert all(f.complete for f in trace.files), (
        stderr,
        [(f.path, f.counts, f.torn) for f in trace.files],
    )
    starts = [e for e in trace.events() if e.event_type == "http_request_start"]
    assert len(starts) == 4
    assert {str(e.pid) for e in starts} == pids  # each request in the file of its worker


@pytest.fixture
def warnings_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Callable[[], list[str]]:
    """The capture-off warnings logged in this test (as if none was logged before it)."""
    monkeypatch.setattr(_web, "_warned_pid", 0)
    caplog.set_level(logging.WARNING, logger="tidescope")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "tidescope"]


def flask_app() -> Any:
    from flask import Flask

    from tidescope.integrations.flask import TideScope

    app = Flask("production_flask")

    @app.get("/")
    def index() -> str:
        return "hi"

    @app.get("/boom")
    def boom() -> str:
        raise LookupError("flask boom")

    TideScope(app)
    return app


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise LookupError("wsgi boom")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hi"]


def test_wsgi_and_flask_under_waitress_warn_once_that_capture_is_off(
    web_waitress: Callable[[Any], str], warnings_logged: Callable[[], list[str]]
) -> None:
    from tidescope.integrations.wsgi import TideScopeMiddleware

    for app in (TideScopeMiddleware(wsgi_app), flask_app()):
        url = web_waitress(app)
        for _ in range(2):
            assert requests.get(f"{url}/", timeout=30).text == "hi"
    assert warnings_logged() == [_web.CAPTURE_OFF]  # once for the process, not per app


def test_django_under_waitress_warns_once_that_capture_is_off(
    web_django: Callable[..., None],
    web_waitress: Callable[[Any], str],
    warnings_logged: Callable[[], list[str]],
) -> None:
    from django.http import HttpResponse
    from django.urls import path

    web_django(
        [path("", lambda request: HttpResponse("hi"))],
        ["tidescope.integrations.django.TideScopeMiddleware"],
    )
    from django.core.handlers.wsgi import WSGIHandler

    url = web_waitress(WSGIHandler())
    for _ in range(3):
        assert requests.get(f"{url}/", timeout=30).text == "hi"
    assert warnings_logged() == [_web.CAPTURE_OFF]


def test_no_warning_while_capture_is_on(
    web_waitress: Callable[[Any], str],
    web_wait: Callable[..., list[Event]],
    warnings_logged: Callable[[], list[str]],
) -> None:
    from tidescope.integrations.wsgi import TideScopeMiddleware

    with tidescope.capture() as cap:
        url = web_waitress(TideScopeMiddleware(wsgi_app))
        assert requests.get(f"{url}/", timeout=30).text == "hi"
        web_wait(cap, completed(1))
    assert warnings_logged() == []


# ---------------------------------------------------------------------------------------
# correlation ids: the W3C trace id in every service


def test_correlation_id_is_one_trace_id_across_a_flask_and_a_starlette_service(
    web_waitress: Callable[[Any], str],
    web_uvicorn: Callable[[Any], str],
    web_wait: Callable[..., list[Event]],
) -> None:
    from flask import Flask
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tidescope.capture import runtime as rt
    from tidescope.integrations.asgi import TideScopeMiddleware
    from tidescope.integrations.flask import TideScope
    from tidescope.integrations.requests import TracedSession

    async def b_endpoint(request: Request) -> JSONResponse:
        return JSONResponse({"corr": rt.current_correlation_id()})

    service_b = TideScopeMiddleware(Starlette(routes=[Route("/b", b_endpoint)]))
    service_a = Flask("service_a")
    urls: dict[str, str] = {}

    @service_a.get("/a")
    def a_endpoint() -> Any:
        with TracedSession() as session:
            b = session.get(f"{urls['b']}/b", timeout=30).json()
        return {"corr": rt.current_correlation_id(), "b": b}

    TideScope(service_a)
    with tidescope.capture(buffer_size=4096) as cap:
        urls["b"] = web_uvicorn(service_b)
        a = web_waitress(service_a)
        reply = requests.get(f"{a}/a", timeout=30).json()  # no traceparent of its own
        events = web_wait(cap, completed(2))
    assert HEX32.fullmatch(reply["corr"])
    assert reply["b"]["corr"] == reply["corr"]
    starts = of_type(events, "http_request_start")
    assert [e.data["path"] for e in starts] == ["/a", "/b"]
    assert {e.correlation_id for e in starts} == {reply["corr"]}
    (send,) = of_type(events, "remote_call_send")
    assert send.data["trace_id"] == reply["corr"]


# ---------------------------------------------------------------------------------------
# error stacks start in the application


def stack_files(error: Event) -> list[str]:
    return [frame["file"] for frame in error.data["stacktrace"]]


def test_error_stacks_start_at_the_application_not_the_middleware(
    web_waitress: Callable[[Any], str],
    web_uvicorn: Callable[[Any], str],
    web_wait: Callable[..., list[Event]],
) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.routing import Route

    from tidescope.integrations.asgi import TideScopeMiddleware as AsgiMiddleware
    from tidescope.integrations.wsgi import TideScopeMiddleware as WsgiMiddleware

    async def asgi_boom(request: Request) -> Any:
        raise LookupError("asgi boom")

    async def raw_asgi(scope: Any, receive: Any, send: Any) -> None:
        raise LookupError("raw asgi boom")

    with tidescope.capture(buffer_size=4096) as cap:
        urls = [
            web_waitress(WsgiMiddleware(wsgi_app)),
            web_waitress(flask_app()),
            web_uvicorn(AsgiMiddleware(Starlette(routes=[Route("/boom", asgi_boom)]))),
            web_uvicorn(AsgiMiddleware(raw_asgi)),
        ]
        with httpx.Client() as client:
            for url in urls:
                assert client.get(f"{url}/boom").status_code == 500
        events = web_wait(cap, completed(4))
    errors = of_type(events, "error")
    messages = sorted(str(e.data["message"]) for e in errors)
    assert messages == sorted(str(e.data["message"]) for e in errors if "boom" in str(e.data))
    assert len(errors) == 4
    for error in errors:
        files = stack_files(error)
        assert files, error
        assert not files[0].startswith(PACKAGE_DIR), files  # not the middleware's frame
        assert files[-1] == __file__  # the application's raising frame is kept
    raw = next(e for e in errors if "raw asgi" in str(e.data["message"]))
    assert [f["function"] for f in raw.data["stacktrace"]] == [
        "test_error_stacks_start_at_the_application_not_the_middleware.<locals>.raw_asgi"
    ]
