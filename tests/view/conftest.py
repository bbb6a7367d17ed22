"""A recorded program, ``tidescope view`` serving it, and headless Debian chromium."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _viewer import HERE, Viewer, chromium_path, record


@pytest.fixture(scope="session")
def sample_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("view")
    program = tmp / "sample_program.py"
    shutil.copy(HERE / "sample_program.py", program)
    return record(tmp, program, "--level", "values")


@pytest.fixture(scope="session")
def web_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two recorded processes: web_client.py asking web_server.py (WSGI, SQLite) for an item."""
    tmp = tmp_path_factory.mktemp("web")
    for name in ("web_server.py", "web_client.py"):
        shutil.copy(HERE / name, tmp / name)
    trace = tmp / "trace"
    run = [sys.executable, "-m", "tidescope", "run", "-o", str(trace)]
    server = subprocess.Popen([*run, "web_server.py"], cwd=tmp, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    port = server.stdout.readline().strip()
    client = subprocess.run(
        [*run, "web_client.py", port],
        check=False,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
    )
    server.stdout.close()
    assert server.wait(timeout=60) == 0
    assert client.returncode == 0, client.stderr
    assert client.stdout.startswith("apple")
    # Each `tidescope run` records a run of its own; the two services are looked at together
    # by putting both runs' files in one directory (read as one run).
    both = tmp / "both"
    both.mkdir()
    for run_dir in (p for p in trace.iterdir() if p.is_dir()):
        for f in run_dir.iterdir():
            f.rename(both / f.name)
    return both


@pytest.fixture(scope="session")
def web_viewer(web_trace: Path) -> Iterator[Viewer]:
    pytest.importorskip("duckdb", reason="tidescope view needs the view extra (duckdb)")
    v = Viewer(web_trace)
    yield v
    v.stop()


@pytest.fixture(scope="session")
def viewer(sample_trace: Path) -> Iterator[Viewer]:
    pytest.importorskip("duckdb", reason="tidescope view needs the view extra (duckdb)")
    v = Viewer(sample_trace)
    yield v
    v.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser tests need playwright (the test extra)"
    )
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, viewer: Viewer) -> Iterator[Any]:
    """A fresh page on the viewer; every request it makes is kept in ``page.requests_made``,
    and a script error on the page, or a request to anywhere but the viewer, fails the test."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    p = context.new_page()
    made: list[str] = []
    errors: list[str] = []
    p.on("request", lambda r: made.append(r.url))
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.on("console", lambda m: m.type == "error" and errors.append(m.text))
    p.requests_made = made
    yield p
    context.close()
    assert not errors, errors
    assert all(u.startswith(viewer.url) for u in made), made  # nothing leaves the server
