"""Django middleware: a Django app through its test clients (sync and async stacks) and under
real servers (waitress for WSGI, uvicorn for ASGI). Settings are made for each test and reset
after it (the ``web_django`` fixture)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

import tidescope
from tidescope import EventType
from tidescope.capture import runtime as rt
from tidescope.integrations.asgi import TideScopeMiddleware as AsgiMiddleware
from tidescope.integrations.wsgi import TideScopeMiddleware as WsgiMiddleware

MIDDLEWARE = "tidescope.integrations.django.TideScopeMiddleware"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
RAISED: list[BaseException] = []


def work(x: Any) -> Any:
    """A function as the import hook would instrument it."""
    cid = rt.report_function_entry(__name__, "work", [x])
    rt.report_function_exit(cid, x)
    return x


def urlpatterns() -> list[Any]:
    from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
    from django.urls import path
    from django.views import View

    def item(request: Any, n: int) -> Any:
        return JsonResponse({"n": work(n)})

    async def async_item(request: Any, n: int) -> Any:
        return JsonResponse({"n": work(n)})

    def boom(request: Any) -> Any:
        exc = ArithmeticError("boom")
        RAISED.append(exc)
        raise exc

    def stream(request: Any) -> Any:
        return StreamingHttpResponse(str(work(i)) for i in range(3))

    class Hello(View):
        def get(self, request: Any) -> Any:
            return HttpResponse(f"hello {work(request.GET.get('who'))}")

    return [
        path("items/<int:n>/", item, name="item"),
        path("async/<int:n>/", async_item, name="async-item"),
        path("boom/", boom),
        path("stream/", stream),
        path("hello/", Hello.as_view(), name="hello"),
    ]


def of_type(events: list[Any], event_type: str) -> list[Any]:
    return [e for e in events if e.event_type == event_type]


def by_request(events: list[Any]) -> dict[str, list[Any]]:
    """Each request's events by its path (servers may finish requests out of order)."""
    paths = {e.correlation_id: e.data["path"] for e in of_type(events, "http_request_start")}
    out: dict[str, list[Any]] = {p: [] for p in paths.values()}
    for e in events:
        if e.correlation_id in paths:
            out[paths[e.correlation_id]].append(e)
    return out


def test_view_entry_and_exit_with_route_arguments_and_one_correlation(
    web_django: Callable[..., None],
) -> None:
    web_django(urlpatterns(), [MIDDLEWARE])
    from django.test import Client

    with tidescope.capture() as cap:
        response = Client().get("/items/5/?q=1&q=2", HTTP_TRACEPARENT=TRACEPARENT)
    assert response.json() == {"n": 5}
    events = cap.events()
    assert [e.event_type for e in events] == [
        "http_request_start", "remote_call_receive", "controller_entry", "function_entry",
        "function_exit", "controller_exit", "http_request_complete",
    ]  # fmt: skip
    assert {e.correlation_id for e in events} == {TRACE_ID}
    assert events[0].data == {
        "method": "GET", "path": "/items/5/", "params": {"q": ["1", "2"]}, "remote_ip": "127.0.0.1",
    }  # fmt: skip
    assert events[2].data == {
        "controller": __name__, "action": "urlpatterns.<locals>.item",
        "metadata": {"route": "items/<int:n>/", "name": "item", "args": (), "kwargs": {"n": 5}},
    }  # fmt: skip
    assert events[5].data["result"] == {"status_code": 200}
    assert events[6].data["status_code"] == 200
    assert events[6].data["content_type"] == "application/json"


def test_class_based_view_is_named_by_its_class(web_django: Callable[..., None]) -> None:
    web_django(urlpatterns(), [MIDDLEWARE])
    from django.test import Client

    with tidescope.capture() as cap:
        assert Client().get("/hello/", {"who": "ünï"}).content.decode() == "hello ünï"
    (entry,) = cap.events(EventType.CONTROLLER_ENTRY)
    assert entry.data["action"] == "urlpatterns.<locals>.Hello"
    (start,) = cap.events(EventType.HTTP_REQUEST_START)
    assert start.data["params"] == {"who": "ünï"}


def test_view_exception_is_reported_and_reaches_django_unchanged(
    web_django: Callable[..., None],
) -> None:
    web_django(urlpatterns(), [MIDDLEWARE])
    from django.test import Client

    RAISED.clear()
    with tidescope.capture() as cap, pytest.raises(ArithmeticError) as info:
        Client().get("/boom/")
    assert info.value is RAISED[0]  # the client re-raises what Django's handler got
    events = cap.events()
    assert [e.event_type for e in events] == [
        "http_request_start", "controller_entry", "action_error", "controller_exit", "error",
        "http_request_complete",
    ]  # fmt: skip
    assert events[2].data["kind"] == "ArithmeticError"
    assert events[-1].data["status_code"] == 500
    with tidescope.capture() as cap:
        assert Client(raise_request_exception=False).get("/boom/").status_code == 500
    assert len(cap.events(EventType.ERROR)) == 1


def test_streaming_response_completes_when_closed_after_its_body(
    web_django: Callable[..., None],
) -> None:
    web_django(urlpatterns(), [MIDDLEWARE])
    from django.test import Client

    with tidescope.capture() as cap:
        response = Client().get("/stream/")
        assert cap.events(EventType.HTTP_REQUEST_COMPLETE) == []
        assert b"".join(response.streaming_content) == b"012"
    events = cap.events()
    assert [e.event_type for e in events] == [
        "http_request_start", "controller_entry", "controller_exit",
        *["function_entry", "function_exit"] * 3, "http_request_complete",
    ]  # fmt: skip


def test_async_stack_sync_and_async_views(web_django: Callable[..., None]) -> None:
    web_django(urlpatterns(), [MIDDLEWARE])
    from django.test import AsyncClient

    async def main() -> list[Any]:
        client = AsyncClient()
        return [await client.get("/async/3/"), await client.get("/items/4/")]

    with tidescope.capture() as cap:
        responses = asyncio.run(main())
    assert [r.json() for r in responses] == [{"n": 3}, {"n": 4}]
    requests_ = by_request(cap.events())
    for path in ("/async/3/", "/items/4/"):
        assert [e.event_type for e in requests_[path]] == [
            "http_request_start", "controller_entry", "function_entry", "function_exit",
            "controller_exit", "http_request_complete",
        ]  # fmt: skip


def test_capture_off_the_app_answers_and_nothing_is_recorded(
    web_django: Callable[..., None],
) -> None:
    web_django(urlpatterns(), [MIDDLEWARE])
    from django.test import Client

    assert Client().get("/items/1/").json() == {"n": 1}
    with tidescope.capture() as cap:
        pass
    assert cap.events() == []


def test_django_wsgi_under_a_real_waitress_server(
    web_django: Callable[..., None],
    web_waitress: Callable[[Any], str],
    web_wait: Callable[..., Any],
    web_counted_errors: list[BaseException],
) -> None:
    web_django(urlpatterns(), [MIDDLEWARE])
    from django.core.handlers.wsgi import WSGIHandler

    with tidescope.capture() as cap:
        url = web_waitress(WSGIHandler())
        headers = {"traceparent": TRACEPARENT}
        assert requests.get(f"{url}/items/8/", headers=headers, timeout=30).json() == {"n": 8}
        assert requests.get(f"{url}/stream/", timeout=30).text == "012"
        assert requests.get(f"{url}/boom/", timeout=30).status_code == 500
        assert requests.get(f"{url}/%E2%98%83/", timeout=30).status_code == 404
        events = web_wait(cap, lambda ev: len(of_type(ev, "http_request_complete")) == 4)
    requests_ = by_request(events)
    assert list(requests_) == ["/items/8/", "/stream/", "/boom/", "/☃/"]
    assert [e.event_type for e in requests_["/items/8/"]] == [
        "http_request_start", "remote_call_receive", "controller_entry", "function_entry",
        "function_exit", "controller_exit", "http_request_complete",
    ]  # fmt: skip
    assert requests_["/items/8/"][0].correlation_id == TRACE_ID
    assert requests_["/items/8/"][0].data["remote_ip"] == "127.0.0.1"
    status = {
        p: of_type(ev, "http_request_complete")[0].data["status_code"]
        for p, ev in requests_.items()
    }
    assert status == {"/items/8/": 200, "/stream/": 200, "/boom/": 500, "/☃/": 404}
    assert len(of_type(requests_["/boom/"], "error")) == 1
    assert of_type(requests_["/☃/"], "controller_entry") == []
    assert web_counted_errors == []


def test_django_asgi_under_a_real_uvicorn_server_with_the_asgi_middleware_too(
    web_django: Callable[..., None],
    web_uvicorn: Callable[[Any], str],
    web_wait: Callable[..., Any],
    web_counted_errors: list[BaseException],
) -> None:
    web_django(urlpatterns(), [MIDDLEWARE])
    from django.core.handlers.asgi import ASGIHandler

    with tidescope.capture() as cap:
        url = web_uvicorn(AsgiMiddleware(ASGIHandler()))
        with httpx.Client(base_url=url) as client:
            assert client.get("/async/6/", headers={"traceparent": TRACEPARENT}).json() == {"n": 6}
            assert client.get("/items/7/").json() == {"n": 7}
            assert client.get("/boom/").status_code == 500
        events = web_wait(cap, lambda ev: len(of_type(ev, "http_request_complete")) == 3)
    requests_ = by_request(events)
    assert [e.event_type for e in requests_["/async/6/"]] == [
        "http_request_start", "remote_call_receive", "controller_entry", "function_entry",
        "function_exit", "controller_exit", "http_request_complete",
    ]  # fmt: skip
    assert {e.correlation_id for e in requests_["/async/6/"]} == {TRACE_ID}
    sync_view = requests_["/items/7/"]
    assert len(of_type(sync_view, "http_request_start")) == 1  # not twice: joined the outer one
    assert of_type(sync_view, "function_entry")[0].thread_id != sync_view[0].thread_id
    assert [
        e.data["status_code"] for e in of_type(requests_["/boom/"], "http_request_complete")
    ] == [500]
    assert len(of_type(requests_["/boom/"], "error")) == 1
    assert web_counted_errors == []


def test_django_behind_the_wsgi_middleware_reports_each_request_once(
    web_django: Callable[..., None],
) -> None:
    web_django(urlpatterns(), [MIDDLEWARE])
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import RequestFactory

    environ = RequestFactory().get("/items/2/").environ
    with tidescope.capture() as cap:
        body = WsgiMiddleware(WSGIHandler())(environ, lambda *a: None)
        assert b"".join(body) == b'{"n": 2}'
        body.close()  # type: ignore[attr-defined]
    assert [e.event_type for e in cap.events()] == [
        "http_request_start", "controller_entry", "function_entry", "function_exit",
        "controller_exit", "http_request_complete",
    ]  # fmt: skip


def test_django_settings_do_not_outlive_their_test() -> None:
    from django.conf import settings

    assert not settings.configured


def test_hostile_requests_are_captured_bounded_and_never_raise(
    web_django: Callable[..., None], web_counted_errors: list[BaseException]
) -> None:
    web_django(urlpatterns(), [MIDDLEWARE])
    from django.test import Client

    client = Client()
    with tidescope.capture() as cap:
        huge_query = {"k": "v" * 1_000_000, "ü": ["1", "2"], "": ""}
        assert (
            client.get("/items/1/", huge_query, HTTP_TRACEPARENT="\x00" * 100_000).status_code
            == 200
        )
        assert client.get("/ünï/" + "x" * 50_000).status_code == 404
        assert (
            client.post(
                "/items/2/", data=b"\xff" * 3_000_000, content_type="application/x"
            ).status_code
            == 200
        )
    starts = cap.events(EventType.HTTP_REQUEST_START)
    assert [e.data["method"] for e in starts] == ["GET", "GET", "POST"]
    assert starts[1].data["path"].kept.startswith("/ünï/")  # cut, marked with its size
    assert starts[1].data["path"].size == 50_005
    assert all(len(repr(e.data)) < 20_000 for e in cap.events())
    (remote,) = cap.events(EventType.REMOTE_CALL_RECEIVE)
    assert remote.data["trace_id"] is None
    assert len(cap.events(EventType.HTTP_REQUEST_COMPLETE)) == 3
    assert web_counted_errors == []


def query_urlpatterns() -> list[Any]:
    from django.db import connection
    from django.http import JsonResponse
    from django.urls import path

    def answer(request: Any) -> Any:
        with connection.cursor() as cursor:
            cursor.execute("SELECT %s + %s", [int(request.GET["n"]), 1])
            (row,) = cursor.fetchall()
        return JsonResponse({"n": row[0]})

    return [path("answer/", answer)]


def sqlite(path: Path) -> dict[str, Any]:
    # a file: Django never closes an in-memory SQLite connection (3.13 warns of it)
    return {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path / "db.sqlite3")}}


@pytest.fixture
def forget_queries() -> Any:
    yield
    from django.db.backends.signals import connection_created

    from tidescope.integrations import django as integration

    connection_created.disconnect(dispatch_uid=integration._UID)


def test_queries_are_database_events_of_the_request_with_the_setting(
    web_django: Callable[..., None], forget_queries: None, tmp_path: Path
) -> None:
    web_django(
        query_urlpatterns(), [MIDDLEWARE], DATABASES=sqlite(tmp_path), TIDESCOPE_QUERIES=True
    )
    from django.db import connection
    from django.test import Client

    with tidescope.capture() as cap:
        assert Client().get("/answer/?n=41").json() == {"n": 42}
    connection.close()
    events = cap.events()
    (start,) = of_type(events, "db_query_start")
    (done,) = of_type(events, "db_query_complete")
    (request,) = of_type(events, "http_request_start")
    assert start.data["query"] == "SELECT %s + %s"
    assert list(start.data["params"]) == [41, 1]
    assert start.data["repo"] == f"sqlite:{tmp_path / 'db.sqlite3'}"
    assert done.data["result"]["query_id"] == start.data["metadata"]["query_id"]
    assert start.correlation_id == done.correlation_id == request.correlation_id
    names = [e.event_type for e in events]
    assert names.index("controller_entry") < names.index("db_query_start")


def test_queries_are_not_recorded_without_the_setting(
    web_django: Callable[..., None], tmp_path: Path
) -> None:
    web_django(query_urlpatterns(), [MIDDLEWARE], DATABASES=sqlite(tmp_path))
    from django.db import connection
    from django.test import Client

    with tidescope.capture() as cap:
        assert Client().get("/answer/?n=1").json() == {"n": 2}
    connection.close()
    assert of_type(cap.events(), "db_query_start") == []
    assert of_type(cap.events(), "http_request_start") != []
