"""A recorded program, ``tidescope view`` serving it, and headless Debian chromium."""

from __future__ import annotations

import shutil
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
    and a script error on the page fails the test."""
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
