"""``tidescope run manage.py runserver`` with Django's autoreloader on: a real project in a
temporary directory, a real request, ^C to the process group as a terminal sends it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tidescope.export.reader import read_trace

DEADLINE = 90.0

SETTINGS = """
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "runserver-test"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = ["shop"]
MIDDLEWARE = ["tidescope.integrations.django.TideScopeMiddleware"]
TIDESCOPE_QUERIES = True
ROOT_URLCONF = "site_conf.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
"""

URLS = """
from django.http import JsonResponse
from django.urls import path

from shop.models import Item


def count_items(name):
    return Item.objects.filter(name=name).count()


def items(request):
    return JsonResponse({"count": count_items(request.GET.get("name", ""))})


urlpatterns = [path("items/", items)]
"""

MODELS = """
from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=50)
"""

MANAGE = """
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_conf.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
"""


def write_project(root: Path) -> None:
    files = {
        "manage.py": MANAGE,
        "site_conf/__init__.py": "",
        "site_conf/settings.py": SETTINGS,
        "site_conf/urls.py": URLS,
        "shop/__init__.py": "",
        "shop/models.py": MODELS,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get_when_up(url: str, proc: subprocess.Popen[Any]) -> requests.Response:
    end = time.monotonic() + DEADLINE
    while True:
        try:
            return requests.get(url, timeout=10)
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > end:
                raise
            time.sleep(0.1)


def all_events(output: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(output.rglob("events-*.tstrace")):
        out += [r for r in read_trace(path) if "event_type" in r]
    return out


@pytest.mark.slow
def test_runserver_with_the_autoreloader_records_requests_and_orm_queries(tmp_path: Path) -> None:
    write_project(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDESCOPE_", "DJANGO_"))}
    env["TIDESCOPE_CORE"] = os.environ.get("TIDESCOPE_CORE", "")
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--run-syncdb", "-v", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=DEADLINE, check=False,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tidescope", "run", "manage.py", "runserver",
             f"127.0.0.1:{port}"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        response = get_when_up(f"http://127.0.0.1:{port}/items/?name=pear", proc)
        assert response.json() == {"count": 0}
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # ^C at a terminal: every process of the group
        try:
            proc.wait(DEADLINE)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    output = log_path.read_text()
    events = all_events(tmp_path / "tidescope-trace")
    starts = [e for e in events if e["event_type"] == "http_request_start"]
    assert [e["data"]["path"] for e in starts] == ["/items/"], output
    (request,) = starts
    served_by = request["pid"]
    assert served_by != proc.pid  # the autoreloader's child served it, recorded
    queries = [
        e
        for e in events
        if e["event_type"] == "db_query_start" and "shop_item" in str(e["data"]["query"])
    ]
    assert queries, output
    (query,) = queries
    assert query["pid"] == served_by
    assert query["correlation_id"] == request["correlation_id"]
    assert query["data"]["params"] == ["pear"] or query["data"]["params"] == ("pear",)
    assert str(query["data"]["repo"]).startswith("sqlite:")
    qid = query["data"]["metadata"]["query_id"]
    done = [
        e
        for e in events
        if e["event_type"] == "db_query_complete" and e["data"]["result"]["query_id"] == qid
    ]
    assert len(done) == 1
    calls = {
        e["data"]["function"]: e for e in events if e["event_type"] == "function_entry"
    }  # the project's code is instrumented in the child too
    assert "count_items" in calls
    assert calls["count_items"]["pid"] == served_by
