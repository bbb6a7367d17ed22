"""WSGI middleware: plain WSGI apps driven by hand (bodies, streaming, close, errors) and
under a real waitress server."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.util import FileWrapper, setup_testing_defaults

import pytest
import requests

import tidescope
from tidescope import EventType
from tidescope.capture import runtime as rt
from tidescope.integrations import _web
from tidescope.integrations.wsgi import TideScopeMiddleware

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def work(x: Any) -> Any:
    """A function as the import hook would instrument it."""
    cid = rt.report_function_entry(__name__, "work", [x])
    rt.report_function_exit(cid, x)
    return x


def environ(path: str = "/p", **extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {"PATH_INFO": path, "REMOTE_ADDR": "10.0.0.9", "REMOTE_PORT": "4242"}
    setup_testing_defaults(env)
    env.update(extra)
    return env


def run(app: Any, env: dict[str, Any]) -> tuple[list[Any], Any, list[bytes]]:
    """Serve one request as a server does: call, iterate, close."""
    started: list[Any] = []

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
        started.append((status, headers))
        return lambda data: None

    body = app(env, start_response)
    try:
        chunks = list(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return started, body, chunks


def hello(env: dict[str, Any], start_response: Any) -> list[bytes]:
    work("inside")
    start_response("201 Created", [("Content-Type", "text/plain")])
    return [b"hi"]


class Streamed:
    """A body whose chunks are produced lazily and whose close() is observed."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.closed = 0
        self.fail_at = fail_at
        self.error = RuntimeError("mid-stream")

    def __iter__(self) -> Iterator[bytes]:
        for i in range(3):
            if i == self.fail_at:
                raise self.error
            work(f"chunk{i}")
            yield b"x"

    def close(self) -> None:
        self.closed += 1


def streaming_app(body: Streamed) -> Any:
    def app(env: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return body

    return app


def test_request_start_and_complete_carry_method_path_params_status_and_duration() -> None:
    env = environ("/items", REQUEST_METHOD="PUT", QUERY_STRING="a=1&a=2&b=%C3%A9")
    with tidescope.capture() as cap:
        started, _, chunks = run(TideScopeMiddleware(hello), env)
    assert started[0][0] == "201 Created" and chunks == [b"hi"]
    events = cap.events()
    assert [e.event_type for e in events] == [
        "http_request_start", "function_entry", "function_exit", "http_request_complete",
    ]  # fmt: skip
    assert len({e.correlation_id for e in events}) == 1
    assert events[0].data == {
        "method": "PUT", "path": "/items", "params": {"a": ["1", "2"], "b": "é"},
        "remote_ip": "10.0.0.9",
    }  # fmt: skip
    assert events[3].data["status_code"] == 201
    assert events[3].data["content_type"] == "text/plain"
    assert events[3].data["duration_ms"] >= 0


def test_streaming_body_runs_under_the_correlation_and_completes_when_closed() -> None:
    body = Streamed()
    with tidescope.capture() as cap:
        _, _, chunks = run(TideScopeMiddleware(streaming_app(body)), environ())
        between = rt.current_correlation_id()
    assert chunks == [b"x"] * 3
    assert body.closed == 1
    assert between is None  # the server thread is left as it was
    events = cap.events()
    assert [e.event_type for e in events] == [
        "http_request_start", *["function_entry", "function_exit"] * 3, "http_request_complete",
    ]  # fmt: skip
    assert len({e.correlation_id for e in events}) == 1


def test_complete_is_reported_once_when_the_body_is_exhausted_and_then_closed() -> None:
    body = Streamed()
    with tidescope.capture() as cap:
        started: list[Any] = []
        wrapped = TideScopeMiddleware(streaming_app(body))(environ(), lambda *a: started)
        assert list(wrapped) == [b"x"] * 3
        assert len(cap.events(EventType.HTTP_REQUEST_COMPLETE)) == 1  # exhausted
        wrapped.close()  # type: ignore[attr-defined]
    assert body.closed == 1
    assert len(cap.events(EventType.HTTP_REQUEST_COMPLETE)) == 1


def test_complete_is_reported_when_the_server_closes_a_body_it_did_not_finish() -> None:
    body = Streamed()
    with tidescope.capture() as cap:
        wrapped = TideScopeMiddleware(streaming_app(body))(environ(), lambda *a: None)
        assert next(iter(wrapped)) == b"x"
        assert cap.events(EventType.HTTP_REQUEST_COMPLETE) == []
        wrapped.close()  # type: ignore[attr-defined]
    assert body.closed == 1
    assert len(cap.events(EventType.HTTP_REQUEST_COMPLETE)) == 1


def test_exception_from_the_app_is_reported_and_reraised_unchanged() -> None:
    boom = KeyError("original")

    def app(env: Any, start_response: Any) -> Any:
        work(1)
        raise boom

    with tidescope.capture() as cap, pytest.raises(KeyError) as info:
        run(TideScopeMiddleware(app), environ())
    assert info.value is boom
    events = cap.events()
    assert [e.event_type for e in events] == [
        "http_request_start", "function_entry", "function_exit", "error", "http_request_complete",
    ]  # fmt: skip
    assert events[-1].data["status_code"] == 500
    assert len({e.correlation_id for e in events}) == 1


def test_exception_while_streaming_is_reported_reraised_and_the_body_still_closed() -> None:
    body = Streamed(fail_at=1)
    with tidescope.capture() as cap, pytest.raises(RuntimeError) as info:
        run(TideScopeMiddleware(streaming_app(body)), environ())
    assert info.value is body.error
    assert body.closed == 1
    (error,) = cap.events(EventType.ERROR)
    (done,) = cap.events(EventType.HTTP_REQUEST_COMPLETE)
    assert done.data["status_code"] == 200  # already sent when the stream broke
    assert error.correlation_id == done.correlation_id


class Sized:
    """A body with a length that is not a list: servers read ``len()`` to set Content-Length."""

    def __init__(self) -> None:
        self.closed = 0

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[bytes]:
        yield b"sized"

    def close(self) -> None:
        self.closed += 1


def test_bodies_keep_their_length_and_made_bodies_and_file_wrappers_pass_through() -> None:
    with tidescope.capture() as cap:
        listed = TideScopeMiddleware(hello)(environ(), lambda *a: None)
        assert listed == [b"hi"]  # the app's own list: complete at once
        assert len(cap.events(EventType.HTTP_REQUEST_COMPLETE)) == 1

        sized = Sized()
        wrapped = TideScopeMiddleware(streaming_app(sized))(environ(), lambda *a: None)  # type: ignore[arg-type]
        assert wrapped is not sized and len(wrapped) == 1  # type: ignore[arg-type]
        assert list(wrapped) == [b"sized"]
        wrapped.close()  # type: ignore[attr-defined]
        assert sized.closed == 1

        def file_app(env: Any, start_response: Any) -> Any:
            start_response("200 OK", [])
            return env["wsgi.file_wrapper"](io.BytesIO(b"file"))

        env = environ(**{"wsgi.file_wrapper": FileWrapper})
        body = TideScopeMiddleware(file_app)(env, lambda *a: None)
        assert type(body) is FileWrapper
        streamed = TideScopeMiddleware(streaming_app(Streamed()))(environ(), lambda *a: None)
        assert not hasattr(streamed, "__len__")
    assert len(cap.events(EventType.HTTP_REQUEST_COMPLETE)) == 3


def test_traceparent_is_extracted_and_becomes_the_requests_correlation() -> None:
    with tidescope.capture() as cap:
        run(TideScopeMiddleware(hello), environ(HTTP_TRACEPARENT=TRACEPARENT))
    (remote,) = cap.events(EventType.REMOTE_CALL_RECEIVE)
    assert remote.data["source"] == "10.0.0.9:4242"
    assert (remote.data["trace_id"], remote.data["span_id"]) == (TRACE_ID, "00f067aa0ba902b7")
    assert {e.correlation_id for e in cap.events()} == {TRACE_ID}


@pytest.mark.parametrize(
    "changes",
    [
        {"PATH_INFO": "/ünï/".encode().decode("latin-1") + "y" * 100_000},
        {"PATH_INFO": "/\udcff\u2603"},  # not latin-1: a server that decoded it already
        {"QUERY_STRING": "q=" + "v" * 1_000_000},
        {"QUERY_STRING": "\xff=%ZZ&%=\x00"},
        {"HTTP_TRACEPARENT": "\x00" * 100_000},
        {"REQUEST_METHOD": None, "REMOTE_ADDR": None, "QUERY_STRING": None, "PATH_INFO": None},
    ],
    ids=["utf8-huge-path", "not-latin1", "huge-query", "bad-query", "huge-traceparent", "nones"],
)
def test_hostile_requests_are_captured_bounded_and_never_raise(
    changes: dict[str, Any], web_counted_errors: list[BaseException]
) -> None:
    with tidescope.capture() as cap:
        _, _, chunks = run(TideScopeMiddleware(hello), environ(**changes))
    assert chunks == [b"hi"]
    assert len(cap.events(EventType.FUNCTION_ENTRY)) == 1
    starts = cap.events(EventType.HTTP_REQUEST_START)
    assert all(len(repr(e.data)) < 20_000 for e in starts)
    assert web_counted_errors == []
    assert len(starts) == 1
    if "PATH_INFO" in changes and changes["PATH_INFO"] and changes["PATH_INFO"][1] == "ü":
        assert starts[0].data["path"].startswith("/ünï/")


def test_capture_off_passes_requests_through_untouched() -> None:
    body = Streamed()
    env = environ()
    result = TideScopeMiddleware(streaming_app(body))(env, lambda *a: None)
    assert result is body
    assert _web.REQUEST_KEY not in env


def test_internal_failure_is_counted_and_the_request_still_runs(
    monkeypatch: pytest.MonkeyPatch, web_counted_errors: list[BaseException]
) -> None:
    bug = RuntimeError("integration bug")

    def broken(value: Any) -> Any:
        raise bug

    monkeypatch.setattr(_web, "wsgi_text", broken)
    with tidescope.capture() as cap:
        _, _, chunks = run(TideScopeMiddleware(hello), environ())
    assert chunks == [b"hi"]
    assert web_counted_errors == [bug]
    assert cap.events(EventType.HTTP_REQUEST_START) == []


def test_plain_wsgi_app_under_a_real_waitress_server(
    web_waitress: Callable[[Any], str], web_wait: Callable[..., Any]
) -> None:
    bodies: list[Streamed] = []

    def app(env: Any, start_response: Any) -> Any:
        if env["PATH_INFO"] == "/stream":
            bodies.append(Streamed())
            return streaming_app(bodies[-1])(env, start_response)
        return hello(env, start_response)

    with tidescope.capture() as cap:
        url = web_waitress(TideScopeMiddleware(app))
        assert requests.get(f"{url}/hello?x=1", timeout=30).text == "hi"
        assert (
            requests.get(f"{url}/stream", headers={"traceparent": TRACEPARENT}, timeout=30).content
            == b"xxx"
        )
        events = web_wait(
            cap, lambda ev: len([e for e in ev if e.event_type == "http_request_complete"]) == 2
        )
    done = [e for e in events if e.event_type == "http_request_complete"]
    assert [e.data["status_code"] for e in done] == [201, 200]
    assert bodies[0].closed == 1
    streamed = [e.event_type for e in events if e.correlation_id == TRACE_ID]
    assert streamed == [
        "http_request_start", "remote_call_receive", *["function_entry", "function_exit"] * 3,
        "http_request_complete",
    ]  # fmt: skip
    start = next(e for e in events if e.event_type == "http_request_start")
    assert start.data["remote_ip"] == "127.0.0.1"
    assert start.data["params"] == {"x": "1"}
