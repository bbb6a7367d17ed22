"""Fixtures of the integration tests; the web ones (real servers, Django) start with ``web_``."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import _errors
import pytest

import tidescope
from tidescope.events import Event


@pytest.fixture(autouse=True)
def internal_errors_baseline() -> None:
    """Where the process-wide internal error counter stood when the test began."""
    _errors.at_start[0] = tidescope.stats()["internal_errors"]


DEADLINE = 30.0  # seconds a server gets to start, stop or deliver its events: liveness only


@pytest.fixture
def web_wait() -> Callable[..., list[Event]]:
    """``wait(cap, predicate)``: the capture's events once ``predicate(events)`` holds.

    A server records a request's last events after the client has its response, from the
    server's thread: tests wait for them instead of racing.
    """

    def wait(cap: tidescope.Capture, predicate: Callable[[list[Event]], bool]) -> list[Event]:
        end = time.monotonic() + DEADLINE
        while True:
            events = cap.events()
            if predicate(events) or time.monotonic() > end:
                return events
            time.sleep(0.01)

    return wait


@pytest.fixture
def web_counted_errors(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """The internal errors the integrations count during the test, kept out of the process's
    cumulative ``internal_errors`` (other tests assert it does not grow)."""
    from tidescope.capture import _core

    counted: list[BaseException] = []
    monkeypatch.setattr(_core, "count_error", counted.append)
    return counted


@pytest.fixture
def web_uvicorn() -> Iterator[Callable[[Any], str]]:
    """``serve(asgi_app)``: the base URL of a real uvicorn server on a free 127.0.0.1 port,
    running in a thread until the test ends."""
    import uvicorn

    servers: list[tuple[Any, threading.Thread]] = []

    def serve(app: Any) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            app, loop="asyncio", lifespan="off", log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True
        )
        thread.start()
        servers.append((server, thread))
        end = time.monotonic() + DEADLINE
        while not server.started:
            assert thread.is_alive() and time.monotonic() < end, "uvicorn did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield serve
    for server, thread in servers:
        server.should_exit = True
        thread.join(DEADLINE)
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def web_waitress() -> Iterator[Callable[[Any], str]]:
    """``serve(wsgi_app)``: the base URL of a real waitress server on a free 127.0.0.1 port,
    running in a thread until the test ends."""
    import waitress.server

    servers: list[tuple[threading.Event, threading.Thread]] = []

    def serve(app: Any) -> str:
        server = waitress.server.create_server(app, host="127.0.0.1", port=0, threads=2)
        stop = threading.Event()

        def run() -> None:
            # waitress serves until every connection is gone; stop it from its own thread
            while not stop.is_set():
                server.asyncore.loop(timeout=0.05, map=server._map, count=1)
            server.close()
            for channel in list(server._map.values()):
                channel.close()
            server.task_dispatcher.shutdown()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        servers.append((stop, thread))
        return f"http://127.0.0.1:{server.effective_port}"

    yield serve
    for stop, thread in servers:
        stop.set()
        thread.join(DEADLINE)
        assert not thread.is_alive(), "waitress did not stop"


@pytest.fixture
def web_django() -> Iterator[Callable[..., None]]:
    """``configure(urlpatterns, middleware=[...], **settings)``: Django configured for this
    test only; settings, app registry and URL caches are reset when the test ends."""
    import django
    from django.apps import apps
    from django.conf import settings
    from django.urls import clear_url_caches, set_urlconf
    from django.utils.functional import empty

    assert not settings.configured, "Django settings leaked from an earlier test"

    def forget_connections() -> None:
        # django.db.connections caches DATABASES and each thread's connections
        from asgiref.local import Local
        from django.db import connections

        connections.close_all()
        connections.__dict__.pop("settings", None)
        connections._settings = None
        connections._connections = Local(connections.thread_critical)

    def configure(urlpatterns: list[Any], middleware: list[str], **extra: Any) -> None:
        urls = types.ModuleType("web_django_urls")
        urls.urlpatterns = urlpatterns  # type: ignore[attr-defined]
        base: dict[str, Any] = {
            "DEBUG": False,
            "SECRET_KEY": "web-integration-tests",
            "ALLOWED_HOSTS": ["*"],
            "ROOT_URLCONF": urls,
            "MIDDLEWARE": middleware,
            "INSTALLED_APPS": [],
            "DATABASES": {},
            "LOGGING_CONFIG": None,  # leave the logging configuration of the test run alone
            "USE_TZ": True,
        }
        settings.configure(**{**base, **extra})
        forget_connections()
        django.setup(set_prefix=False)

    yield configure
    if settings.configured:
        forget_connections()
    # Django and Channels run sync code on asgiref's one shared worker thread; end it, so
    # that no thread outlives the test (a later fork() would warn), and give asgiref a
    # fresh executor, which starts its thread only when used
    from concurrent.futures import ThreadPoolExecutor

    from asgiref.sync import SyncToAsync

    SyncToAsync.single_thread_executor.shutdown(wait=True)
    SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)
    settings._wrapped = empty
    apps.app_configs = {}
    apps.apps_ready = apps.models_ready = apps.ready = apps.loading = False
    apps.clear_cache()
    clear_url_caches()
    set_urlconf(None)


# ---------------------------------------------------------------------------------------
# Database fixtures start with ``db_`` (any database) or ``pg_`` (PostgreSQL).


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The DSN of a real PostgreSQL: ``TIDESCOPE_TEST_POSTGRES_DSN`` (``scripts/test`` sets
    it), else the server ``scripts/postgres`` starts. Skips, saying why, only when no server
    can start, and under CI (``CI=true``) fails instead."""
    import os
    import subprocess
    from pathlib import Path

    dsn = os.environ.get("TIDESCOPE_TEST_POSTGRES_DSN", "").strip()
    if dsn:
        return dsn
    script = Path(__file__).resolve().parents[2] / "scripts" / "postgres"
    try:
        # may install PostgreSQL from Debian's packages (as root): minutes, not hours
        proc = subprocess.run([script], capture_output=True, text=True, timeout=900, check=False)
        dsn = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout else ""
        why = proc.stderr.strip()[-2000:] or f"exit status {proc.returncode}"
    except (OSError, subprocess.SubprocessError) as exc:
        why = f"{type(exc).__name__}: {exc}"
    if dsn:
        return dsn
    reason = f"no PostgreSQL: TIDESCOPE_TEST_POSTGRES_DSN is unset and {script} failed: {why}"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def db_table_name() -> str:
    """A table name no other test uses (tests share the PostgreSQL database)."""
    import uuid

    return f"tidescope_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def web_websocket_communicator(monkeypatch: pytest.MonkeyPatch) -> Callable[[], Any]:
    """``load()``: Channels' ``WebsocketCommunicator`` class (call it once Django is set up).

    ``channels.testing`` imports daphne for its live-server test case, which these tests
    do not use; without daphne installed, a stand-in module lets the package import.
    """

    def load() -> Any:
        if "channels.testing" not in sys.modules and importlib.util.find_spec("daphne") is None:
            daphne = types.ModuleType("daphne")
            daphne_testing = types.ModuleType("daphne.testing")
            daphne_testing.DaphneProcess = None  # type: ignore[attr-defined]
            monkeypatch.setitem(sys.modules, "daphne", daphne)
            monkeypatch.setitem(sys.modules, "daphne.testing", daphne_testing)
        from channels.testing import WebsocketCommunicator

        return WebsocketCommunicator

    return load
