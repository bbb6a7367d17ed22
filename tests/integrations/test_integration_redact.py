"""Secrets never reach a trace through the integrations: query strings and headers of real
ASGI and WSGI apps, DB bound parameters on a real sqlite3 (URLs of the HTTP clients: in
test_integration_http_clients)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import textwrap
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import sqlalchemy as sa
from _errors import internal_errors

import tidescope
from tidescope import EventType, Redacted
from tidescope.capture import _redact
from tidescope.events import jsonable
from tidescope.instrument import rewrite_source
from tidescope.integrations import _db, _web, dbapi
from tidescope.integrations import asgi as tasgi
from tidescope.integrations import wsgi as twsgi
from tidescope.integrations.sqlalchemy import instrument_engine

STR = Redacted("str")
MARK = _redact.MARK
SECRETS = ("abc123", "hunter2", "sessid", "k3y", "s3cret")

# The application's own code, rewritten by the import hook as `tidescope run` does.
HANDLERS = """
def handle(headers, params):
    return len(headers)

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def handlers() -> dict[str, Any]:
    tree, _ = rewrite_source(textwrap.dedent(HANDLERS), "<app>", "app", "calls")
    ns: dict[str, Any] = {"__name__": "app"}
    exec(compile(tree, "<app>", "exec", dont_inherit=True), ns)
    return ns


def assert_no_secret(cap: Any) -> None:
    text = json.dumps([jsonable(e.to_dict()) for e in cap.events()])
    for secret in SECRETS:
        assert secret not in text, secret
    assert internal_errors() == 0


def test_an_asgi_apps_query_parameters_and_headers_are_redacted() -> None:
    handle = handlers()["handle"]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        handle(headers, _web.parse_query(scope["query_string"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/p", "raw_path": None, "root_path": "",
        "query_string": b"q=1&token=abc123&api_key=k3y",
        "headers": [
            (b"authorization", b"Bearer hunter2"), (b"cookie", b"sid=sessid"),
            (b"x-api-key", b"k3y"), (b"accept", b"*/*"),
        ],
        "client": ("10.0.0.7", 5123), "server": ("127.0.0.1", 8000),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    with tidescope.capture(buffer_size=256) as cap:
        asyncio.run(tasgi.TideScopeMiddleware(app)(scope, receive, send))
    (start,) = cap.events(EventType.HTTP_REQUEST_START)
    assert start.data["params"] == {"q": "1", "token": STR, "api_key": STR}
    (entry,) = [e for e in cap.events(EventType.FUNCTION_ENTRY) if e.data["module"] == "app"]
    assert entry.data["args"]["headers"] == {
        "authorization": STR, "cookie": STR, "x-api-key": STR, "accept": "*/*",
    }  # fmt: skip
    assert_no_secret(cap)


def test_an_instrumented_asgi_app_records_its_scope_without_secrets() -> None:
    scope = {
        "type": "http", "method": "GET", "path": "/p", "root_path": "",
        "query_string": b"page=2&token=abc123",
        "headers": [(b"authorization", b"Bearer hunter2"), (b"accept", b"*/*")],
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    app = tasgi.TideScopeMiddleware(handlers()["app"])
    with tidescope.capture(buffer_size=256, max_depth=5) as cap:
        asyncio.run(app(scope, receive, send))
    (entry,) = [e for e in cap.events(EventType.FUNCTION_ENTRY) if e.data["module"] == "app"]
    recorded = entry.data["args"]["scope"]
    assert recorded["query_string"] == f"page=2&token={MARK}".encode()
    assert recorded["headers"] == [
        (b"authorization", Redacted("bytes")), (b"accept", b"*/*"),
    ]  # fmt: skip
    assert_no_secret(cap)


def test_a_wsgi_apps_query_string_and_environ_headers_are_redacted() -> None:
    handle = handlers()["handle"]

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        headers = {k: v for k, v in env.items() if k.startswith("HTTP_")}
        handle(headers, _web.parse_query(env["QUERY_STRING"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    env: dict[str, Any] = {
        "PATH_INFO": "/p", "QUERY_STRING": "access_token=abc123&page=2",
        "HTTP_AUTHORIZATION": "Basic hunter2", "HTTP_COOKIE": "sid=sessid",
        "HTTP_USER_AGENT": "test",
    }  # fmt: skip
    setup_testing_defaults(env)
    with tidescope.capture(buffer_size=256) as cap:
        body = twsgi.TideScopeMiddleware(app)(env, lambda status, headers, exc=None: None)
        assert list(body) == [b"ok"]
    (start,) = cap.events(EventType.HTTP_REQUEST_START)
    assert start.data["params"] == {"access_token": STR, "page": "2"}
    (entry,) = [e for e in cap.events(EventType.FUNCTION_ENTRY) if e.data["module"] == "app"]
    assert entry.data["args"]["headers"] == {
        "HTTP_AUTHORIZATION": STR, "HTTP_COOKIE": STR, "HTTP_USER_AGENT": "test",
        **{k: v for k, v in env.items() if k.startswith("HTTP_") and k != "HTTP_USER_AGENT"
           and not _redact.secret_name(k)},
    }  # fmt: skip
    assert_no_secret(cap)


def test_a_query_string_too_long_to_parse_is_recorded_redacted() -> None:
    text = "token=abc123&pad=" + "x" * _web.MAX_QUERY
    got = _web.parse_query(text.encode())
    assert got == f"token={MARK}&pad=" + "x" * _web.MAX_QUERY
    with tidescope.capture(buffer_size=64) as cap:
        _web.begin("GET", "/p?session=sessid", text.encode(), "127.0.0.1", None, "test")
    (start,) = cap.events(EventType.HTTP_REQUEST_START)
    assert start.data["path"] == f"/p?session={MARK}"
    assert_no_secret(cap)


def test_named_db_parameters_are_redacted_on_a_real_sqlite3(tmp_path: Path) -> None:
    with tidescope.capture(buffer_size=256) as cap:
        conn = dbapi.connect(sqlite3, ":memory:")
        conn.execute("create table users (name text, password text, api_key text)")
        conn.execute(
            "insert into users values (:name, :password, :api_key)",
            {"name": "bob", "password": "hunter2", "api_key": "k3y"},
        )
        conn.executemany(
            "insert into users values (:name, :password, :api_key)",
            [{"name": "eve", "password": "s3cret", "api_key": None}],
        )
        row = conn.execute("select password from users where name = ?", ("bob",)).fetchone()
        conn.close()
    assert row == ("hunter2",)  # the program sees its data unchanged
    inserts = [e for e in cap.events(EventType.DB_QUERY_START) if "insert" in e.data["query"]]
    assert inserts[0].data["params"] == {"name": "bob", "password": STR, "api_key": STR}
    assert inserts[1].data["params"] == [
        {"name": "eve", "password": STR, "api_key": Redacted("NoneType")}
    ]
    assert_no_secret(cap)


def test_named_parameters_through_sqlalchemy_are_redacted(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    instrument_engine(engine)
    with tidescope.capture(buffer_size=256) as cap, engine.begin() as conn:
        conn.execute(sa.text("create table t (token text)"))
        conn.execute(sa.text("insert into t values (:token)"), {"token": "abc123"})
    (insert,) = [e for e in cap.events(EventType.DB_QUERY_START) if "insert" in e.data["query"]]
    assert insert.data["params"] == (STR,)  # sqlite3 takes them positionally, in this order
    assert_no_secret(cap)
    engine.dispose()


def test_a_database_named_by_a_url_loses_its_credentials() -> None:
    assert _db.repo_name("postgresql", "postgresql://app:hunter2@db:5432/shop") == (
        "postgresql:postgresql://db:5432/shop"
    )
    assert _db.repo_name("sqlite", "file:x.db?mode=ro&secret=s3cret") == (
        f"sqlite:file:x.db?mode=ro&secret={MARK}"
    )
    assert _db.repo_name("sqlite", Path("shop.db")) == "sqlite:shop.db"


def test_positional_parameters_follow_a_changed_pattern_on_the_same_statement() -> None:
    # SQLAlchemy hands the same compiled names for every run of a statement; the answers
    # kept for them must not outlive the pattern they were taken under
    engine = sa.create_engine("sqlite://")
    instrument_engine(engine)
    stmt = sa.text("select :ssn, :name")
    with engine.connect() as conn:
        with tidescope.capture(buffer_size=64) as cap:
            conn.execute(stmt, {"ssn": "078-05-1120", "name": "bob"})
        with tidescope.capture(buffer_size=64, redact_extra=r"^ssn$") as extra:
            conn.execute(stmt, {"ssn": "078-05-1120", "name": "bob"})
        with tidescope.capture(buffer_size=64) as again:
            conn.execute(stmt, {"ssn": "078-05-1120", "name": "bob"})
    engine.dispose()
    params = [c.events(EventType.DB_QUERY_START)[0].data["params"] for c in (cap, extra, again)]
    assert params == [("078-05-1120", "bob"), (STR, "bob"), ("078-05-1120", "bob")]
    assert internal_errors() == 0


def test_secret_places_of_distinct_names_objects_are_answered_each() -> None:
    names = ["user", "password"]
    assert _db.secret_places(names) == (False, True)
    assert _db.secret_places(names) == (False, True)  # remembered
    assert _db.secret_places(["user", "city"]) is None
    assert _db.secret_places(["api_key", 3]) == (True, False)


def test_with_capture_off_positional_parameters_are_not_looked_at() -> None:
    engine = sa.create_engine("sqlite://")
    instrument_engine(engine)
    name = "never_seen_positional_name_4711"
    with engine.connect() as conn:
        conn.execute(sa.text(f"select :{name}"), {name: 1})
    engine.dispose()
    # the redaction answers are filled in only when a name is asked: nothing asked here
    assert name not in _redact.secret_names
    assert internal_errors() == 0
