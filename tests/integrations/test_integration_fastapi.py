"""FastAPI: ``instrument(app)`` with FastAPI's TestClient and under a real uvicorn server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

import tidescope
from tidescope.capture import runtime as rt
from tidescope.integrations.fastapi import TideScopeMiddleware, instrument

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TESTCLIENT_WARNING = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient`"
    ":starlette.exceptions.StarletteDeprecationWarning"
)
RAISED: list[BaseException] = []


def work(x: Any) -> Any:
    """A function as the import hook would instrument it."""
    cid = rt.report_function_entry(__name__, "work", [x])
    rt.report_function_exit(cid, x)
    return x


class Order(BaseModel):
    item: str
    quantity: int


def make_app() -> Any:
    from fastapi import APIRouter, FastAPI, HTTPException

    app = instrument(FastAPI())  # before the routes: instrumenting does not depend on them

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, q: str | None = None) -> Any:
        return {"item_id": work(item_id), "q": q}

    @app.get("/sync")
    def read_sync() -> Any:  # FastAPI runs it in a worker thread
        return {"v": work("sync")}

    @app.post("/orders")
    async def create_order(order: Order) -> Any:
        return {"total": work(order.quantity * 2)}

    @app.get("/missing/{n}")
    async def missing(n: int) -> Any:
        raise HTTPException(status_code=404, detail="nope")

    @app.get("/boom")
    async def boom() -> Any:
        exc = OverflowError("boom")
        RAISED.append(exc)
        raise exc

    router = APIRouter(prefix="/v1")

    @router.get("/users/{name}")
    async def user(name: str) -> Any:
        return {"name": work(name)}

    app.include_router(router)
    return app


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


HANDLED = [
    "http_request_start", "controller_entry", "function_entry", "function_exit",
    "controller_exit", "http_request_complete",
]  # fmt: skip


@TESTCLIENT_WARNING
def test_endpoints_async_sync_body_and_included_router_share_their_requests_correlation() -> None:
    from fastapi.testclient import TestClient

    with tidescope.capture() as cap, TestClient(make_app()) as client:
        assert client.get("/items/3", params={"q": "ü"}).json() == {"item_id": 3, "q": "ü"}
        assert client.get("/sync").json() == {"v": "sync"}
        assert client.post("/orders", json={"item": "x", "quantity": 4}).json() == {"total": 8}
        assert client.get("/v1/users/ada").json() == {"name": "ada"}
    requests_ = by_request(cap.events())
    assert list(requests_) == ["/items/3", "/sync", "/orders", "/v1/users/ada"]
    for events in requests_.values():
        assert [e.event_type for e in events] == HANDLED
    item = requests_["/items/3"]
    assert item[0].data["params"] == {"q": "ü"}
    assert item[1].data == {
        "controller": __name__, "action": "make_app.<locals>.read_item",
        "metadata": {"route": "/items/{item_id}", "name": "read_item",
                     "path_params": {"item_id": "3"}},
    }  # fmt: skip
    assert item[4].data["result"] == {"status_code": 200}
    assert requests_["/v1/users/ada"][1].data["metadata"]["route"] == "/v1/users/{name}"
    sync = requests_["/sync"]
    assert sync[2].thread_id != sync[0].thread_id


@TESTCLIENT_WARNING
def test_http_exception_is_a_handled_status_and_unhandled_ones_are_reraised_unchanged() -> None:
    from fastapi.testclient import TestClient

    RAISED.clear()
    with tidescope.capture() as cap, TestClient(make_app()) as client:
        assert client.get("/missing/1").status_code == 404
        assert client.get("/items/not-a-number").status_code == 422
        with pytest.raises(OverflowError) as info:
            client.get("/boom")
    assert info.value is RAISED[0]
    requests_ = by_request(cap.events())
    assert of_type(requests_["/missing/1"], "controller_exit")[0].data["result"] == {
        "status_code": 404
    }
    assert (
        of_type(requests_["/items/not-a-number"], "http_request_complete")[0].data["status_code"]
        == 422
    )
    assert [e.event_type for e in requests_["/boom"]] == [
        "http_request_start", "controller_entry", "action_error", "controller_exit", "error",
        "http_request_complete",
    ]  # fmt: skip
    assert of_type(requests_["/boom"], "action_error")[0].data["kind"] == "OverflowError"
    assert of_type(cap.events(), "error")[0].data["error_type"] == "builtins.OverflowError"


def test_add_middleware_is_the_same_as_instrument() -> None:
    from fastapi import FastAPI

    app = FastAPI()
    app.add_middleware(TideScopeMiddleware)
    assert [m.cls for m in app.user_middleware] == [TideScopeMiddleware]
    assert [m.cls for m in instrument(FastAPI()).user_middleware] == [TideScopeMiddleware]


def test_fastapi_under_a_real_uvicorn_server(
    web_uvicorn: Callable[[Any], str],
    web_wait: Callable[..., Any],
    web_counted_errors: list[BaseException],
) -> None:
    with tidescope.capture() as cap:
        url = web_uvicorn(make_app())
        with httpx.Client(base_url=url, timeout=30) as client:
            headers = {"traceparent": TRACEPARENT}
            assert client.get("/items/5", headers=headers).json() == {"item_id": 5, "q": None}
            assert client.post("/orders", json={"item": "é" * 100_000, "quantity": 1}).json() == {
                "total": 2
            }
            assert client.get("/boom").status_code == 500
            assert (
                client.get("/%F0%9F%98%80", headers={"traceparent": "x" * 5000}).status_code == 404
            )
        events = web_wait(cap, lambda ev: len(of_type(ev, "http_request_complete")) == 4)
    requests_ = by_request(events)
    assert [e.event_type for e in requests_["/items/5"]] == [
        "http_request_start",
        "remote_call_receive",
        *HANDLED[1:],
    ]
    assert {e.correlation_id for e in requests_["/items/5"]} == {TRACE_ID}
    assert requests_["/items/5"][0].data["remote_ip"] == "127.0.0.1"
    assert [e.event_type for e in requests_["/orders"]] == HANDLED
    status = {
        p: of_type(ev, "http_request_complete")[0].data["status_code"]
        for p, ev in requests_.items()
    }
    assert status == {"/items/5": 200, "/orders": 200, "/boom": 500, "/😀": 404}
    (bad_trace,) = of_type(requests_["/😀"], "remote_call_receive")
    assert bad_trace.data["trace_id"] is None
    assert len(of_type(events, "error")) == 1
    assert web_counted_errors == []


HOOKED_SOURCE = """
def price(quantity, unit=3):
    return total(quantity * unit)


def total(amount):
    return amount + 1
"""


def hooked_module() -> dict[str, Any]:
    """A module as the import hook rewrites it (``level="calls"``)."""
    from tidescope.instrument import rewrite_source

    tree, _ = rewrite_source(HOOKED_SOURCE, "<shop>", "shop", level="calls")
    namespace: dict[str, Any] = {"__name__": "shop"}
    exec(compile(tree, "<shop>", "exec", dont_inherit=True), namespace)
    return namespace


@TESTCLIENT_WARNING
def test_calls_instrumented_by_the_import_hook_carry_the_requests_correlation() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    shop = hooked_module()
    app = instrument(FastAPI())

    @app.get("/price/{quantity}")
    def get_price(quantity: int) -> Any:
        return {"price": shop["price"](quantity)}

    with tidescope.capture() as cap, TestClient(app) as client:
        assert client.get("/price/2", headers={"traceparent": TRACEPARENT}).json() == {"price": 7}
        assert client.get("/price/5").json() == {"price": 16}
    events = cap.events()
    requests_ = by_request(events)
    for path, correlation in (("/price/2", TRACE_ID), ("/price/5", None)):
        mine = requests_[path]
        calls = of_type(mine, "function_entry")
        assert [c.data["function"] for c in calls] == ["price", "total"]
        assert calls[0].data["args"] == {"quantity": int(path.rsplit("/", 1)[1]), "unit": 3}
        assert calls[1].parent_id == calls[0].call_id
        assert len(of_type(mine, "function_exit")) == 2
        assert len({e.correlation_id for e in mine}) == 1
        if correlation is not None:
            assert mine[0].correlation_id == correlation
