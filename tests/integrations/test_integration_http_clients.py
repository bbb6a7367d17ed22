"""httpx and requests clients: traceparent injection, and one request through two real services
on 127.0.0.1 whose events share trace and parent ids."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
import requests

import tidescope
from tidescope import EventType
from tidescope.capture import _core
from tidescope.capture import runtime as rt
from tidescope.events import Event, Truncated
from tidescope.integrations import httpx as thttpx
from tidescope.integrations import requests as trequests
from tidescope.integrations._propagation import span_id_for, trace_id_for

SEND = EventType.REMOTE_CALL_SEND
RECEIVE = EventType.REMOTE_CALL_RECEIVE

from _errors import internal_errors  # noqa: E402


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # handler threads are joined at close: none outlives a test


@contextlib.contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


class ServiceB(_Quiet):
    """The downstream service: extracts ``traceparent`` with the runtime's own helpers, binds
    the trace id as its correlation and records its work under it."""

    def do_GET(self) -> None:
        if self.path.startswith("/old"):
            self.reply(302, {}, {"Location": "/final"})
            return
        header = self.headers.get("traceparent")
        parsed = rt.parse_traceparent(header)
        correlation = parsed.trace_id if parsed is not None else None
        with rt.bind_correlation_id(correlation):
            rt.report_remote_call_receive(
                correlation, f"{self.client_address[0]}", header, {"path": self.path}
            )
            cid = rt.report_function_entry("service_b", "handle", {"path": self.path})
            rt.report_function_exit(cid, "done")
        self.reply(200, {"traceparent": header, "service": "b"})


def call_b_with(client: str, url: str) -> dict[str, Any]:
    """Call service B at ``url`` with one of the integrations; returns B's JSON reply."""
    if client == "httpx":
        with thttpx.TracedClient() as c:
            return dict(c.get(url).json())
    if client == "httpx-async":

        async def go() -> dict[str, Any]:
            async with thttpx.TracedAsyncClient() as c:
                return dict((await c.get(url)).json())

        return asyncio.run(go())
    if client == "httpx-instrumented":
        return dict(httpx.get(url).json())
    if client == "requests":
        with trequests.TracedSession() as s:
            return dict(s.get(url).json())
    if client == "requests-instrumented":
        return dict(requests.get(url, timeout=10).json())
    raise AssertionError(client)


class ServiceA(_Quiet):
    """The upstream service: a traced handler that calls service B (its URL in the query)."""

    seen: ClassVar[dict[str, Any]] = {}

    def do_GET(self) -> None:
        client, _, b_url = self.path.lstrip("/").partition("?b=")
        cid = rt.report_function_entry("service_a", "handle", {"client": client})
        try:
            ServiceA.seen.update(
                handler_call=cid,
                correlation=rt.current_correlation_id(),
                reply=call_b_with(client, b_url),
                call_after=rt.current_call_id(),
            )
        finally:
            rt.report_function_exit(cid, None)
        self.reply(200, {"ok": True})


@pytest.fixture
def instrumented() -> Iterator[None]:
    thttpx.instrument_httpx()
    trequests.instrument_requests()
    try:
        yield
    finally:
        thttpx.uninstrument_httpx()
        trequests.uninstrument_requests()


def only(events: list[Event], pred: Callable[[Event], bool]) -> Event:
    found = [e for e in events if pred(e)]
    assert len(found) == 1, found
    return found[0]


CLIENTS = ["httpx", "httpx-async", "httpx-instrumented", "requests", "requests-instrumented"]


@pytest.mark.parametrize("client", CLIENTS)
def test_one_request_through_two_services_shares_trace_and_parent_ids(
    client: str, instrumented: None
) -> None:
    ServiceA.seen.clear()
    with tidescope.capture(buffer_size=4096) as cap, serve(ServiceB) as b, serve(ServiceA) as a:
        target = f"{b}/work"
        with urllib.request.urlopen(f"{a}/{client}?b={target}") as resp:
            assert json.load(resp) == {"ok": True}
    seen = ServiceA.seen
    events = cap.events()
    send = only(events, lambda e: e.event_type == SEND)
    receive = only(events, lambda e: e.event_type == RECEIVE)
    # the header B received is the one A recorded sending
    assert seen["reply"]["traceparent"] == send.data["traceparent"] == receive.data["traceparent"]
    assert rt.parse_traceparent(send.data["traceparent"]) is not None
    assert (receive.data["trace_id"], receive.data["span_id"]) == (
        send.data["trace_id"],
        send.data["span_id"],
    )
    # A side: the trace id is A's correlation, the parent id the outgoing request's call,
    # itself a child of A's handler
    assert send.data["trace_id"] == f"{seen['correlation']:032x}"
    request_call = only(
        events, lambda e: e.event_type == EventType.FUNCTION_ENTRY and e.call_id == send.call_id
    )
    assert int(send.data["span_id"], 16) == request_call.call_id
    assert request_call.parent_id == seen["handler_call"]
    assert request_call.data["args"]["url"] == send.data["target"] == target
    assert request_call.data["args"]["method"] == "GET"
    assert request_call.correlation_id == send.correlation_id == seen["correlation"]
    exit_ = only(
        events, lambda e: e.event_type == EventType.FUNCTION_EXIT and e.call_id == send.call_id
    )
    assert exit_.data["return_value"] == {"status_code": 200}
    assert seen["call_after"] == seen["handler_call"]  # the request's call was popped
    # B side: every event carries the trace id as its correlation
    b_events = [e for e in events if e.thread_id == receive.thread_id]
    assert b_events and {e.correlation_id for e in b_events} == {send.data["trace_id"]}
    assert internal_errors() == 0, cap.stats()["last_internal_error"]


def test_a_service_under_the_wsgi_middleware_continues_the_callers_trace() -> None:
    wsgi = pytest.importorskip("tidescope.integrations.wsgi")
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["correlation"] = rt.current_correlation_id()
        cid = rt.report_function_entry("service_b", "view", {})
        rt.report_function_exit(cid, None)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, wsgi.TideScopeMiddleware(app), WSGIServer, QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        with tidescope.capture(buffer_size=4096) as cap, rt.bind_correlation_id("checkout-17"):
            caller = rt.report_function_entry("service_a", "handle", {})
            with thttpx.TracedClient() as c:
                assert c.get(f"http://127.0.0.1:{server.server_port}/view?x=1").text == "ok"
            rt.report_function_exit(caller, None)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    events = cap.events()
    send = only(events, lambda e: e.event_type == SEND)
    receive = only(events, lambda e: e.event_type == RECEIVE)
    assert send.data["trace_id"] == trace_id_for("checkout-17") == receive.data["trace_id"]
    assert send.data["span_id"] == receive.data["span_id"] == span_id_for(send.call_id)
    assert seen["correlation"] == send.data["trace_id"]
    view = only(
        events, lambda e: e.event_type == EventType.FUNCTION_ENTRY and e.data["function"] == "view"
    )
    assert view.correlation_id == send.data["trace_id"]


@pytest.mark.parametrize("client", ["httpx", "requests"])
def test_redirects_carry_a_valid_header_to_the_final_hop(client: str) -> None:
    with tidescope.capture(buffer_size=4096) as cap, serve(ServiceB) as b:
        if client == "httpx":
            with thttpx.TracedClient(follow_redirects=True) as c:
                reply = c.get(f"{b}/old").json()
        else:
            with trequests.TracedSession() as s:
                reply = s.get(f"{b}/old").json()
    sends = cap.events(SEND)
    receive = only(cap.events(), lambda e: e.event_type == RECEIVE)
    assert receive.data["traceparent"] == reply["traceparent"]
    parsed = rt.parse_traceparent(reply["traceparent"])
    assert parsed is not None
    # the final hop's header is one this process recorded sending
    assert reply["traceparent"] in [s.data["traceparent"] for s in sends]
    if client == "requests":  # each hop is a call nested in the first
        assert len(sends) == 2
        first, second = sends
        assert first.data["traceparent"] != second.data["traceparent"]
        entries = {e.call_id: e for e in cap.events(EventType.FUNCTION_ENTRY)}
        assert entries[second.call_id].parent_id == first.call_id
    else:  # httpx follows redirects inside one send
        assert len(sends) == 1


def test_a_traceparent_the_application_set_is_kept() -> None:
    theirs = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tidescope.capture(buffer_size=1024) as cap, serve(ServiceB) as b:
        with thttpx.TracedClient() as c:
            reply = c.get(f"{b}/x", headers={"traceparent": theirs}).json()
        with trequests.TracedSession() as s:
            reply2 = s.get(f"{b}/x", headers={"traceparent": theirs}).json()
    assert reply["traceparent"] == reply2["traceparent"] == theirs
    assert [e.data["traceparent"] for e in cap.events(SEND)] == [theirs, theirs]


def test_a_bound_trace_id_correlation_is_the_headers_trace_id() -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    with (
        tidescope.capture(buffer_size=1024),
        serve(ServiceB) as b,
        rt.bind_correlation_id(trace),
        trequests.TracedSession() as s,
    ):
        reply = s.get(f"{b}/x").json()
    parsed = rt.parse_traceparent(reply["traceparent"])
    assert parsed is not None and parsed.trace_id == trace and parsed.sampled


@pytest.mark.parametrize("client", ["httpx", "httpx-async", "requests"])
def test_a_refused_connection_is_recorded_as_the_calls_exception_and_raised_unchanged(
    client: str,
) -> None:
    with serve(ServiceB) as b:
        dead = b  # the port is closed once the server is gone
    with tidescope.capture(buffer_size=1024) as cap:
        outer = rt.report_function_entry("app", "caller", [])
        with pytest.raises((httpx.ConnectError, requests.ConnectionError)) as info:
            if client == "httpx":
                with thttpx.TracedClient() as c:
                    c.get(f"{dead}/x")
            elif client == "httpx-async":

                async def go() -> None:
                    async with thttpx.TracedAsyncClient() as c:
                        await c.get(f"{dead}/x")

                asyncio.run(go())
            else:
                with trequests.TracedSession() as s:
                    s.get(f"{dead}/x", timeout=10)
        assert rt.current_call_id() == outer  # the failed request's call was popped
        rt.report_function_exit(outer, None)
    send = only(cap.events(), lambda e: e.event_type == SEND)
    exit_ = only(
        cap.events(),
        lambda e: e.event_type == EventType.FUNCTION_EXIT and e.call_id == send.call_id,
    )
    assert exit_.data["exit_reason"] == "exception"
    assert exit_.data["exception"]["type"].endswith(type(info.value).__name__)


def test_a_cancelled_async_request_exits_as_cancelled() -> None:
    class Slow(_Quiet):
        release = threading.Event()

        def do_GET(self) -> None:
            Slow.release.wait(30)
            self.reply(200, {})

    async def go(url: str) -> None:
        async with thttpx.TracedAsyncClient() as c:
            task = asyncio.ensure_future(c.get(url))
            for _ in range(3000):  # a liveness bound (30 s), not a timing assertion
                if cap.events(SEND):
                    break
                await asyncio.sleep(0.01)
            assert cap.events(SEND), "the request was never sent"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    with tidescope.capture(buffer_size=1024) as cap, serve(Slow) as url:
        try:
            asyncio.run(go(f"{url}/slow"))
        finally:
            Slow.release.set()
    send = cap.events(SEND)[0]
    exit_ = only(
        cap.events(),
        lambda e: e.event_type == EventType.FUNCTION_EXIT and e.call_id == send.call_id,
    )
    assert exit_.data["exit_reason"] == "cancelled"


def test_with_capture_off_no_header_is_sent_and_nothing_recorded(instrumented: None) -> None:
    with serve(ServiceB) as b:
        assert httpx.get(f"{b}/x").json()["traceparent"] is None
        assert requests.get(f"{b}/x", timeout=10).json()["traceparent"] is None
        with thttpx.TracedClient() as c:
            assert c.get(f"{b}/x").json()["traceparent"] is None
    assert _core.current_call_id() is None


def test_credentials_in_the_url_never_reach_the_trace() -> None:
    with tidescope.capture(buffer_size=1024) as cap, serve(ServiceB) as b:
        url = b.replace("http://", "http://alice:s3cret@") + "/x?q=1"
        with trequests.TracedSession() as s:
            s.get(url, timeout=10)
        with thttpx.TracedClient() as c:
            c.get(url)
    texts = [json.dumps(e.to_dict(), default=str) for e in cap.events()]
    assert not any("s3cret" in t or "alice" in t for t in texts)
    assert {e.data["target"] for e in cap.events(SEND)} == {b + "/x?q=1"}


def test_secret_query_values_never_reach_the_trace() -> None:
    mark = "[REDACTED]"
    with tidescope.capture(buffer_size=1024) as cap, serve(ServiceB) as b:
        url = f"{b}/x?q=1&access_token=abc123&API-KEY=k3y"
        with trequests.TracedSession() as s:
            s.get(url, timeout=10)
        with thttpx.TracedClient() as c:
            c.get(url)
    # (the test's own service records its path as it is: only the clients' events here)
    texts = [
        json.dumps(e.to_dict(), default=str)
        for e in cap.events()
        if e.event_type == SEND or e.data.get("module") in ("requests", "httpx")
    ]
    assert len(texts) == 4 and not any("abc123" in t or "k3y" in t for t in texts)
    assert {e.data["target"] for e in cap.events(SEND)} == {
        f"{b}/x?q=1&access_token={mark}&API-KEY={mark}"
    }


def test_a_huge_url_is_recorded_bounded() -> None:
    with (
        tidescope.capture(buffer_size=1024) as cap,
        serve(ServiceB) as b,
        thttpx.TracedClient() as c,
    ):
        assert c.get(f"{b}/x", params={"q": "z" * 20_000}).status_code == 200
    send = cap.events(SEND)[0]
    assert isinstance(send.data["target"], Truncated)
    assert rt.parse_traceparent(send.data["traceparent"]) is not None
    assert internal_errors() == 0, cap.stats()["last_internal_error"]


def test_instrumenting_twice_then_undoing_restores_the_clients_send(instrumented: None) -> None:
    thttpx.instrument_httpx()
    trequests.instrument_requests()
    patched = httpx.Client.send, httpx.AsyncClient.send, requests.Session.send
    thttpx.uninstrument_httpx()
    trequests.uninstrument_requests()
    assert not hasattr(httpx.Client.send, "__tidescope_traced__")
    assert not hasattr(httpx.AsyncClient.send, "__tidescope_traced__")
    assert not hasattr(requests.Session.send, "__tidescope_traced__")
    assert all(getattr(p, "__tidescope_traced__", False) for p in patched)


def test_a_traced_client_under_instrumentation_records_each_request_once(
    instrumented: None,
) -> None:
    with tidescope.capture(buffer_size=1024) as cap, serve(ServiceB) as b:
        with thttpx.TracedClient() as c:
            c.get(f"{b}/x")
        with trequests.TracedSession() as s:
            s.get(f"{b}/x")
    assert len(cap.events(SEND)) == 2


def test_importing_tidescope_imports_no_http_client() -> None:
    code = (
        "import sys, tidescope, tidescope.integrations, tidescope.capture.runtime;"
        "bad = [m for m in ('httpx', 'requests') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_two_asgi_services_under_uvicorn_and_the_asgi_middleware_share_the_trace(
    web_uvicorn: Callable[[Any], str], web_wait: Callable[..., list[Event]]
) -> None:
    asgi = pytest.importorskip("tidescope.integrations.asgi")
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    urls: dict[str, str] = {}

    async def b_endpoint(request: Request) -> JSONResponse:
        return JSONResponse(
            {"traceparent": request.headers.get("traceparent"), "corr": rt.current_correlation_id()}
        )

    async def a_endpoint(request: Request) -> JSONResponse:
        async with thttpx.TracedAsyncClient() as c:
            reply = (await c.get(f"{urls['b']}/b")).json()
        return JSONResponse({"b": reply, "corr": rt.current_correlation_id()})

    service_b = asgi.TideScopeMiddleware(Starlette(routes=[Route("/b", b_endpoint)]))
    service_a = asgi.TideScopeMiddleware(Starlette(routes=[Route("/a", a_endpoint)]))
    with tidescope.capture(buffer_size=4096) as cap:
        urls["b"] = web_uvicorn(service_b)
        a = web_uvicorn(service_a)
        with httpx.Client() as plain:  # the outside caller: no header of its own
            reply = plain.get(f"{a}/a").json()
        events = web_wait(
            cap, lambda ev: len([e for e in ev if e.event_type == "http_request_complete"]) == 2
        )
    send = only(events, lambda e: e.event_type == SEND)
    receive = only(events, lambda e: e.event_type == RECEIVE)
    assert reply["b"]["traceparent"] == send.data["traceparent"] == receive.data["traceparent"]
    assert (send.data["trace_id"], send.data["span_id"]) == (
        receive.data["trace_id"],
        receive.data["span_id"],
    )
    # A's request correlation (a new W3C trace id) is the trace id; B's request takes the
    # trace id as its correlation: one form in both services
    assert send.data["trace_id"] == trace_id_for(reply["corr"]) == reply["corr"]
    assert reply["b"]["corr"] == send.data["trace_id"] == receive.correlation_id
    starts = [e for e in events if e.event_type == "http_request_start"]
    assert sorted(str(e.correlation_id) for e in starts) == sorted(
        [str(reply["corr"]), send.data["trace_id"]]
    )
    request_call = only(
        events, lambda e: e.event_type == EventType.FUNCTION_ENTRY and e.call_id == send.call_id
    )
    assert int(send.data["span_id"], 16) == request_call.call_id
    assert internal_errors() == 0, cap.stats()["last_internal_error"]
