"""Flask extension: a Flask app through its test client and under a real waitress server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

import tidescope
from tidescope import EventType
from tidescope.capture import runtime as rt
from tidescope.integrations.flask import TideScope

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def work(x: Any) -> Any:
    """A function as the import hook would instrument it."""
    cid = rt.report_function_entry(__name__, "work", [x])
    rt.report_function_exit(cid, x)
    return x


def make_app(raised: list[BaseException] | None = None, **config: Any) -> Any:
    from flask import Flask, Response, abort

    app = Flask("web_flask_app")
    app.config.update(config)
    TideScope(app)

    @app.get("/items/<int:n>")
    def item(n: int) -> Any:
        return {"n": work(n)}

    @app.post("/echo")
    def echo() -> Any:
        from flask import request

        return {"size": len(request.get_data()), "args": request.args.to_dict(flat=False)}

    @app.get("/boom")
    def boom() -> Any:
        exc = ZeroDivisionError("boom")
        if raised is not None:
            raised.append(exc)
        raise exc

    @app.get("/gone")
    def gone() -> Any:
        abort(410)

    @app.get("/stream")
    def stream() -> Any:
        def chunks() -> Any:
            for i in range(3):
                yield str(work(i))

        return Response(chunks(), mimetype="text/plain")

    return app


def of_type(events: list[Any], event_type: str) -> list[Any]:
    return [e for e in events if e.event_type == event_type]


def by_request(events: list[Any]) -> dict[str, list[Any]]:
    """Each request's events (by its path), in order: a server may finish requests out of
    order, since it closes a response after the client has it."""
    paths = {e.correlation_id: e.data["path"] for e in of_type(events, "http_request_start")}
    out: dict[str, list[Any]] = {path: [] for path in paths.values()}
    for e in events:
        if e.correlation_id in paths:
            out[paths[e.correlation_id]].append(e)
    return out


def test_view_entry_and_exit_with_endpoint_route_view_args_and_return_value() -> None:
    app = make_app()
    with tidescope.capture() as cap, app.test_client() as client:
        assert client.get("/items/4?q=1").json == {"n": 4}
    events = cap.events()
    assert [e.event_type for e in events] == [
        "http_request_start", "controller_entry", "function_entry", "function_exit",
        "controller_exit", "http_request_complete",
    ]  # fmt: skip
    assert len({e.correlation_id for e in events}) == 1
    entry, exit_ = events[1], events[4]
    assert entry.data == {
        "controller": __name__, "action": "make_app.<locals>.item",
        "metadata": {"endpoint": "item", "route": "/items/<int:n>", "view_args": {"n": 4}},
    }  # fmt: skip
    assert exit_.data["result"] == {"n": 4}
    assert events[0].data["params"] == {"q": "1"}
    assert events[-1].data["status_code"] == 200
    assert events[-1].data["content_type"] == "application/json"


def test_unhandled_exception_becomes_a_500_and_is_reported_once() -> None:
    app = make_app()
    with tidescope.capture() as cap, app.test_client() as client:
        response = client.get("/boom")
        assert response.status_code == 500
        response.close()
    events = cap.events()
    assert [e.event_type for e in events] == [
        "http_request_start", "controller_entry", "action_error", "controller_exit", "error",
        "http_request_complete",
    ]  # fmt: skip
    assert events[2].data["kind"] == "ZeroDivisionError"
    assert events[4].data["error_type"] == "builtins.ZeroDivisionError"
    assert events[-1].data["status_code"] == 500


def test_propagated_exception_is_reraised_unchanged_and_reported_once() -> None:
    raised: list[BaseException] = []
    app = make_app(raised, PROPAGATE_EXCEPTIONS=True)
    with (
        tidescope.capture() as cap,
        app.test_client() as client,
        pytest.raises(ZeroDivisionError) as info,
    ):
        client.get("/boom")
    assert info.value is raised[0]
    assert len(cap.events(EventType.ERROR)) == 1
    assert len(cap.events(EventType.ACTION_ERROR)) == 1
    assert cap.events(EventType.HTTP_REQUEST_COMPLETE)[0].data["status_code"] == 500


def test_http_errors_and_unknown_urls() -> None:
    app = make_app()
    with tidescope.capture() as cap, app.test_client() as client:
        for path, status in [("/gone", 410), ("/missing", 404)]:
            with client.get(path) as response:
                assert response.status_code == status
    events = cap.events()
    assert of_type(events, "action_error")[0].data["kind"] == "werkzeug.exceptions.Gone"
    assert [e.data["action"] for e in of_type(events, "controller_entry")] == [
        "make_app.<locals>.gone"
    ]  # no view for an unknown URL
    assert [e.data["status_code"] for e in of_type(events, "http_request_complete")] == [410, 404]
    assert of_type(events, "error") == []


def test_streamed_response_runs_under_the_correlation_and_completes_at_the_end() -> None:
    app = make_app()
    with tidescope.capture() as cap, app.test_client() as client:
        assert client.get("/stream").data == b"012"
    events = cap.events()
    assert [e.event_type for e in events] == [
        "http_request_start", "controller_entry", "controller_exit",
        *["function_entry", "function_exit"] * 3, "http_request_complete",
    ]  # fmt: skip
    assert len({e.correlation_id for e in events}) == 1


def test_init_app_twice_instruments_once_and_the_factory_form_works() -> None:
    from flask import Flask

    app = Flask("web_flask_twice")
    ext = TideScope()
    ext.init_app(app)
    ext.init_app(app)
    TideScope(app)

    @app.get("/")
    def index() -> str:
        return "ok"

    with tidescope.capture() as cap, app.test_client() as client:
        assert client.get("/").text == "ok"
    assert len(cap.events(EventType.HTTP_REQUEST_START)) == 1
    assert len(cap.events(EventType.CONTROLLER_ENTRY)) == 1
    assert app.extensions["tidescope"] is ext


def test_capture_off_the_app_answers_and_nothing_is_recorded() -> None:
    app = make_app()
    with app.test_client() as client:
        assert client.get("/items/2").json == {"n": 2}
    with tidescope.capture() as cap:
        pass
    assert cap.events() == []


def test_flask_under_a_real_waitress_server(
    web_waitress: Callable[[Any], str],
    web_wait: Callable[..., Any],
    web_counted_errors: list[BaseException],
) -> None:
    app = make_app()
    body = "é" * 2_000_000
    with tidescope.capture() as cap:
        url = web_waitress(app)
        headers = {"traceparent": TRACEPARENT}
        assert requests.get(f"{url}/items/9", headers=headers, timeout=30).json() == {"n": 9}
        response = requests.post(
            f"{url}/echo", params={"k": ["1", "2"], "ü": "ß"}, data=body.encode(), timeout=30
        )
        assert response.json() == {"size": 4_000_000, "args": {"k": ["1", "2"], "ü": ["ß"]}}
        assert requests.get(f"{url}/boom", timeout=30).status_code == 500
        assert requests.get(f"{url}/caf%C3%A9/%FF", timeout=30).status_code == 404
        events = web_wait(cap, lambda ev: len(of_type(ev, "http_request_complete")) == 4)
    requests_ = by_request(events)
    assert list(requests_) == ["/items/9", "/echo", "/boom", "/café/\ufffd"]
    status = {
        p: of_type(ev, "http_request_complete")[0].data["status_code"]
        for p, ev in requests_.items()
    }
    assert status == {"/items/9": 200, "/echo": 200, "/boom": 500, "/café/\ufffd": 404}
    assert [e.event_type for e in requests_["/items/9"]] == [
        "http_request_start", "remote_call_receive", "controller_entry", "function_entry",
        "function_exit", "controller_exit", "http_request_complete",
    ]  # fmt: skip
    assert requests_["/items/9"][0].correlation_id == "0af7651916cd43dd8448eb211c80319c"
    assert requests_["/echo"][0].data["params"] == {"k": ["1", "2"], "ü": "ß"}
    assert [e.event_type for e in requests_["/boom"]] == [
        "http_request_start", "controller_entry", "action_error", "controller_exit", "error",
        "http_request_complete",
    ]  # fmt: skip
    assert web_counted_errors == []
