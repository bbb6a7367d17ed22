"""ASGI middleware: raw ASGI apps driven by hand, Starlette through its TestClient and a real
uvicorn server, and websockets."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import tidescope
from tidescope import EventType
from tidescope.capture import runtime as rt
from tidescope.integrations import _web
from tidescope.integrations.asgi import TideScopeMiddleware

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
# Starlette's TestClient warns that it will move to another HTTP library
TESTCLIENT_WARNING = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient`"
    ":starlette.exceptions.StarletteDeprecationWarning"
)
REQUEST_TYPES = {EventType.HTTP_REQUEST_START, EventType.HTTP_REQUEST_COMPLETE}


def work(x: Any) -> Any:
    """A function as the import hook would instrument it."""
    cid = rt.report_function_entry(__name__, "work", [x])
    rt.report_function_exit(cid, x)
    return x


def http_scope(path: str = "/p", **extra: Any) -> dict[str, Any]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": None,
        "query_string": b"", "root_path": "", "headers": [], "client": ("10.0.0.7", 5123),
        "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    scope.update(extra)
    return scope


def call(app: Any, scope: dict[str, Any], body: bytes = b"") -> list[dict[str, Any]]:
    """Run one ASGI request through ``app``; the messages it sent."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


async def hello_app(scope: Any, receive: Any, send: Any) -> None:
    work("inside")
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b"hi"})


def by_type(events: list[Any], event_type: str) -> list[Any]:
    return [e for e in events if e.event_type == event_type]


# ---------------------------------------------------------------------------------------
# raw ASGI


def test_request_start_and_complete_carry_method_path_params_status_and_duration() -> None:
    scope = http_scope("/items", method="POST", query_string=b"a=1&a=2&b=%C3%A9&c")
    with tidescope.capture() as cap:
        sent = call(TideScopeMiddleware(hello_app), scope)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    (start,) = cap.events(EventType.HTTP_REQUEST_START)
    (done,) = cap.events(EventType.HTTP_REQUEST_COMPLETE)
    assert start.data == {
        "method": "POST", "path": "/items", "params": {"a": ["1", "2"], "b": "é", "c": ""},
        "remote_ip": "10.0.0.7",
    }  # fmt: skip
    assert done.data["status_code"] == 201
    assert done.data["content_type"] == "text/plain"
    assert isinstance(done.data["duration_ms"], float) and done.data["duration_ms"] >= 0
    assert start.correlation_id == done.correlation_id is not None


def test_one_correlation_for_the_request_and_every_call_made_inside() -> None:
    with tidescope.capture() as cap:
        call(TideScopeMiddleware(hello_app), http_scope())
        call(TideScopeMiddleware(hello_app), http_scope())
    events = cap.events()
    first, second = by_type(events, EventType.HTTP_REQUEST_START)
    assert first.correlation_id != second.correlation_id
    for start in (first, second):
        mine = [e for e in events if e.correlation_id == start.correlation_id]
        assert [e.event_type for e in mine] == [
            "http_request_start", "function_entry", "function_exit", "http_request_complete",
        ]  # fmt: skip


def test_the_correlation_is_unbound_after_the_request() -> None:
    async def main() -> tuple[Any, Any]:
        before = rt.current_correlation_id()
        await TideScopeMiddleware(hello_app)(http_scope(), _receive_nothing, _ignore)
        return before, rt.current_correlation_id()

    with tidescope.capture():
        before, after = asyncio.run(main())
    assert before is None and after is None


async def _receive_nothing() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _ignore(message: Any) -> None:
    return None


def test_unhandled_exception_is_reported_and_reraised_unchanged() -> None:
    boom = LookupError("the original")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        work(1)
        raise boom

    with tidescope.capture() as cap, pytest.raises(LookupError) as info:
        call(TideScopeMiddleware(app), http_scope())
    assert info.value is boom
    (error,) = cap.events(EventType.ERROR)
    assert error.data["error_type"] == "builtins.LookupError"
    (done,) = cap.events(EventType.HTTP_REQUEST_COMPLETE)
    assert done.data["status_code"] == 500
    assert error.correlation_id == done.correlation_id


def test_exception_after_the_response_started_keeps_its_status() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("late")

    with tidescope.capture() as cap, pytest.raises(RuntimeError):
        call(TideScopeMiddleware(app), http_scope())
    (done,) = cap.events(EventType.HTTP_REQUEST_COMPLETE)
    assert done.data["status_code"] == 200
    assert len(cap.events(EventType.ERROR)) == 1


def test_cancellation_completes_the_request_without_an_error() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise asyncio.CancelledError

    with tidescope.capture() as cap, pytest.raises(asyncio.CancelledError):
        call(TideScopeMiddleware(app), http_scope())
    assert cap.events(EventType.ERROR) == []
    (done,) = cap.events(EventType.HTTP_REQUEST_COMPLETE)
    assert done.data["status_code"] is None


def test_traceparent_is_extracted_and_becomes_the_requests_correlation() -> None:
    scope = http_scope(headers=[(b"host", b"x"), (b"traceparent", TRACEPARENT.encode())])
    with tidescope.capture() as cap:
        call(TideScopeMiddleware(hello_app), scope)
    (remote,) = cap.events(EventType.REMOTE_CALL_RECEIVE)
    assert remote.data["trace_id"] == TRACE_ID
    assert remote.data["span_id"] == "00f067aa0ba902b7"
    assert remote.data["source"] == "10.0.0.7:5123"
    assert remote.data["metadata"] == {"method": "GET", "path": "/p"}
    assert {e.correlation_id for e in cap.events()} == {TRACE_ID}


@pytest.mark.parametrize(
    "header",
    [b"garbage", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01", b"\xff\xfe\x00" * 50,
     b"00-" + b"a" * 100_000, TRACEPARENT.upper().encode()],
    ids=["garbage", "zero-trace", "non-ascii", "huge", "uppercase"],
)  # fmt: skip
def test_invalid_traceparent_is_recorded_without_trace_ids_and_never_raises(
    header: bytes, web_counted_errors: list[BaseException]
) -> None:
    with tidescope.capture() as cap:
        sent = call(TideScopeMiddleware(hello_app), http_scope(headers=[(b"traceparent", header)]))
    assert sent[0]["status"] == 201
    (remote,) = cap.events(EventType.REMOTE_CALL_RECEIVE)
    assert remote.data["trace_id"] is None
    (start,) = cap.events(EventType.HTTP_REQUEST_START)
    # a new trace id of its own: 32 lowercase hex digits, not the invalid header's
    assert re.fullmatch("[0-9a-f]{32}", start.correlation_id)
    assert start.correlation_id.encode() not in header.lower()
    assert web_counted_errors == []


@pytest.mark.parametrize(
    "scope_changes",
    [
        {"path": "/ünï/😀/" + "x" * 100_000},
        {"query_string": b"k=" + b"v" * 1_000_000},
        {"query_string": b"&".join(b"k%d=%d" % (i, i) for i in range(500))},
        {"query_string": b"\xff\xfe=%ZZ&%=\x00"},
        {"client": None, "method": None, "path": None, "query_string": None, "headers": None},
        {"headers": [(b"x-" + b"h" * 10_000, b"\x00" * 100_000)] * 50},
    ],
    ids=["unicode-huge-path", "huge-query", "many-params", "bad-bytes", "nones", "huge-headers"],
)
def test_hostile_requests_are_captured_bounded_and_never_raise(
    scope_changes: Any, web_counted_errors: list[BaseException]
) -> None:
    with tidescope.capture() as cap:
        sent = call(TideScopeMiddleware(hello_app), http_scope(**scope_changes))
    assert sent[0]["status"] == 201
    types = [e.event_type for e in cap.events() if e.event_type in REQUEST_TYPES]
    assert types == ["http_request_start", "http_request_complete"]
    start = cap.events(EventType.HTTP_REQUEST_START)[0]
    assert len(repr(start.data)) < 20_000  # bounded by the snapshot limits
    assert web_counted_errors == []


def test_huge_request_body_passes_through_untouched() -> None:
    body = b"x" * 5_000_000
    seen: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(len((await receive())["body"]))
        await hello_app(scope, receive, send)

    with tidescope.capture() as cap:
        call(TideScopeMiddleware(app), http_scope(method="POST"), body)
    assert seen == [5_000_000]
    assert len(cap.events(EventType.HTTP_REQUEST_COMPLETE)) == 1


def test_lifespan_scope_passes_through_with_the_same_objects() -> None:
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.extend([scope, receive, send])

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    with tidescope.capture() as cap:
        asyncio.run(TideScopeMiddleware(app)(scope, _receive_nothing, _ignore))
    assert got == [scope, _receive_nothing, _ignore]
    assert scope == {"type": "lifespan", "asgi": {"version": "3.0"}}
    assert cap.events() == []


def test_capture_off_passes_requests_through_untouched() -> None:
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.extend([receive, send])
        await hello_app(scope, receive, send)

    scope = http_scope()
    sent = call(TideScopeMiddleware(app), scope)
    assert sent[0]["status"] == 201
    assert _web.REQUEST_KEY not in scope
    assert got[1].__name__ == "send"  # the server's own callables, not wrappers


def test_internal_failure_is_counted_and_the_request_still_runs(
    monkeypatch: pytest.MonkeyPatch, web_counted_errors: list[BaseException]
) -> None:
    bug = RuntimeError("integration bug")

    def broken(query: Any) -> Any:
        raise bug

    monkeypatch.setattr(_web, "parse_query", broken)
    with tidescope.capture() as cap:
        sent = call(TideScopeMiddleware(hello_app), http_scope(query_string=b"a=1"))
    assert sent[0]["status"] == 201
    assert web_counted_errors == [bug]
    assert cap.events(EventType.HTTP_REQUEST_START) == []
    assert len(cap.events(EventType.FUNCTION_ENTRY)) == 1  # the app ran


def test_a_failing_core_call_is_counted_and_the_request_still_runs(
    monkeypatch: pytest.MonkeyPatch, web_counted_errors: list[BaseException]
) -> None:
    from tidescope.capture import _core

    bug = RuntimeError("core bug")

    def broken(*args: Any) -> Any:
        raise bug

    monkeypatch.setattr(_core, "bind_correlation", broken)
    with tidescope.capture() as cap:
        sent = call(TideScopeMiddleware(hello_app), http_scope())
    assert sent[0]["status"] == 201
    assert web_counted_errors == [bug]
    assert len(cap.events(EventType.HTTP_REQUEST_COMPLETE)) == 1


def test_nested_middlewares_record_the_request_once() -> None:
    with tidescope.capture() as cap:
        call(TideScopeMiddleware(TideScopeMiddleware(hello_app)), http_scope())
    assert len(cap.events(EventType.HTTP_REQUEST_START)) == 1
    assert len(cap.events(EventType.HTTP_REQUEST_COMPLETE)) == 1


def test_importing_tidescope_and_the_middlewares_imports_no_framework() -> None:
    code = (
        "import sys, tidescope, tidescope.integrations, tidescope.integrations.asgi, "
        "tidescope.integrations.wsgi\n"
        "found = [m for m in ('starlette', 'fastapi', 'flask', 'django', 'channels', "
        "'uvicorn', 'waitress', 'werkzeug', 'asgiref') if m in sys.modules]\n"
        "assert not found, found"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------
# Starlette: endpoint events, the TestClient, a real uvicorn server, websockets


def starlette_app(calls: list[Any] | None = None) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Mount, Route, WebSocketRoute

    async def item(request: Any) -> Any:
        return JSONResponse({"n": work(int(request.path_params["n"]))})

    def sync_item(request: Any) -> Any:  # Starlette runs it in a worker thread
        return PlainTextResponse(str(work("sync")))

    def boom(request: Any) -> Any:
        exc = ValueError("boom")
        if calls is not None:
            calls.append(exc)
        raise exc

    async def echo(websocket: Any) -> None:
        await websocket.accept(subprotocol=None)
        while True:
            text = await websocket.receive_text()
            if text == "bye":
                await websocket.close(code=1000)
                return
            work(text)
            await websocket.send_text(text.upper())

    async def refuse(websocket: Any) -> None:
        await websocket.close(code=4403)

    async def crash(websocket: Any) -> None:
        await websocket.accept()
        await websocket.receive_text()
        raise KeyError("ws")

    return Starlette(
        routes=[
            Route("/items/{n:int}", item),
            Route("/sync", sync_item),
            Route("/boom", boom),
            Mount("/api", routes=[Route("/items/{n:int}", item, name="api-item")]),
            WebSocketRoute("/ws", echo),
            WebSocketRoute("/refuse", refuse),
            WebSocketRoute("/crash", crash),
        ]
    )


@TESTCLIENT_WARNING
def test_starlette_endpoint_entry_and_exit_with_route_and_path_params() -> None:
    from starlette.testclient import TestClient

    app = starlette_app()
    app.add_middleware(TideScopeMiddleware)
    with tidescope.capture() as cap, TestClient(app) as client:
        assert client.get("/items/7?x=1").json() == {"n": 7}
    events = cap.events()
    assert [e.event_type for e in events] == [
        "http_request_start", "controller_entry", "function_entry", "function_exit",
        "controller_exit", "http_request_complete",
    ]  # fmt: skip
    assert len({e.correlation_id for e in events}) == 1
    entry, exit_ = by_type(events, "controller_entry")[0], by_type(events, "controller_exit")[0]
    assert entry.data == {
        "controller": __name__, "action": "starlette_app.<locals>.item",
        "metadata": {"route": "/items/{n:int}", "name": "item", "path_params": {"n": 7}},
    }  # fmt: skip
    assert exit_.data["result"] == {"status_code": 200}


@TESTCLIENT_WARNING
def test_starlette_mounted_route_and_sync_endpoint_in_a_thread_share_the_correlation() -> None:
    from starlette.testclient import TestClient

    app = starlette_app()
    app.add_middleware(TideScopeMiddleware)
    with tidescope.capture() as cap, TestClient(app) as client:
        assert client.get("/api/items/3").json() == {"n": 3}
        assert client.get("/sync").text == "sync"
    events = cap.events()
    starts = by_type(events, "http_request_start")
    entries = by_type(events, "controller_entry")
    assert [e.data["metadata"]["name"] for e in entries] == ["api-item", "sync_item"]
    calls = by_type(events, "function_entry")
    assert [c.correlation_id for c in calls] == [s.correlation_id for s in starts]
    assert calls[1].thread_id != starts[1].thread_id  # the sync endpoint ran in a worker


@TESTCLIENT_WARNING
def test_starlette_unhandled_exception_is_reraised_unchanged_and_reported_as_action_error() -> None:
    from starlette.testclient import TestClient

    raised: list[Any] = []
    app = starlette_app(raised)
    app.add_middleware(TideScopeMiddleware)
    with tidescope.capture() as cap, TestClient(app) as client, pytest.raises(ValueError) as info:
        client.get("/boom")
    assert info.value is raised[0]
    events = cap.events()
    assert [e.event_type for e in events] == [
        "http_request_start", "controller_entry", "action_error", "controller_exit", "error",
        "http_request_complete",
    ]  # fmt: skip
    action_error = by_type(events, "action_error")[0]
    assert action_error.data["kind"] == "ValueError"
    assert action_error.data["request"] == {"method": "GET", "path": "/boom"}
    assert by_type(events, "controller_exit")[0].data["result"] == {"exception": "ValueError"}
    assert by_type(events, "http_request_complete")[0].data["status_code"] == 500


@TESTCLIENT_WARNING
def test_routes_of_requests_outside_the_middleware_report_nothing() -> None:
    from starlette.testclient import TestClient

    traced = starlette_app()
    traced.add_middleware(TideScopeMiddleware)  # wraps Route.handle process-wide
    with tidescope.capture() as cap, TestClient(starlette_app()) as client:
        assert client.get("/items/1").json() == {"n": 1}
    assert [e.event_type for e in cap.events()] == ["function_entry", "function_exit"]


def test_starlette_under_a_real_uvicorn_server(
    web_uvicorn: Callable[[Any], str], web_wait: Callable[..., Any]
) -> None:
    app = starlette_app()
    app.add_middleware(TideScopeMiddleware)
    with tidescope.capture() as cap:
        url = web_uvicorn(app)
        with httpx.Client(base_url=url) as client:
            assert client.get("/items/5", headers={"traceparent": TRACEPARENT}).json() == {"n": 5}
            assert client.get("/missing").status_code == 404
            assert client.get("/boom").status_code == 500
        events = web_wait(cap, lambda ev: len(by_type(ev, "http_request_complete")) == 3)
    done = by_type(events, "http_request_complete")
    assert [e.data["status_code"] for e in done] == [200, 404, 500]
    starts = by_type(events, "http_request_start")
    assert starts[0].data["remote_ip"] == "127.0.0.1"
    assert starts[0].correlation_id == TRACE_ID
    assert {e.correlation_id for e in events if e.correlation_id == TRACE_ID} == {TRACE_ID}
    first = [e.event_type for e in events if e.correlation_id == TRACE_ID]
    assert first == [
        "http_request_start", "remote_call_receive", "controller_entry", "function_entry",
        "function_exit", "controller_exit", "http_request_complete",
    ]  # fmt: skip
    assert len(by_type(events, "error")) == 1


@TESTCLIENT_WARNING
def test_websocket_join_messages_and_sends_under_one_correlation() -> None:
    from starlette.testclient import TestClient

    app = TideScopeMiddleware(starlette_app())
    with (
        tidescope.capture() as cap,
        TestClient(app) as client,
        client.websocket_connect("/ws?room=1") as ws,
    ):
        ws.send_text("hi")
        assert ws.receive_text() == "HI"
        ws.send_text("bye")
    events = cap.events()
    assert [e.event_type for e in events] == [
        "channel_join_start", "channel_join_complete",
        "channel_message_start", "function_entry", "function_exit", "message_send",
        "channel_message_complete",
        "channel_message_start", "message_send", "channel_message_complete",
    ]  # fmt: skip
    assert len({e.correlation_id for e in events}) == 1
    join_start, join_done = events[0], events[1]
    assert join_start.data["topic"] == "/ws"
    assert join_start.data["payload"]["params"] == {"room": "1"}
    assert join_done.data["result"] == {"accepted": True, "subprotocol": None}
    assert events[2].data["event"] == "receive" and events[2].data["payload"] == "hi"
    assert events[5].data["message"] == {"type": "websocket.send", "text": "HI"}
    assert events[6].data["result"] == {"sent": 1}
    assert events[8].data["message"]["type"] == "websocket.close"


@TESTCLIENT_WARNING
def test_websocket_refused_join_and_crash_are_reported() -> None:
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    app = TideScopeMiddleware(starlette_app())
    with tidescope.capture() as cap, TestClient(app) as client:
        with pytest.raises(WebSocketDisconnect), client.websocket_connect("/refuse") as ws:
            ws.receive_text()
        with pytest.raises(KeyError), client.websocket_connect("/crash") as ws:
            ws.send_text("x")
            ws.receive_text()
    joins = cap.events(EventType.CHANNEL_JOIN_COMPLETE)
    assert joins[0].data["result"] == {"accepted": False, "code": 4403}
    assert joins[1].data["result"]["accepted"] is True
    (done,) = cap.events(EventType.CHANNEL_MESSAGE_COMPLETE)
    assert done.data["result"] == {"sent": 0, "error": "KeyError"}
    (error,) = cap.events(EventType.ERROR)
    assert error.correlation_id == done.correlation_id
