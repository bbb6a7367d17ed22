"""``tidescope view`` in headless chromium: what a user sees of a recorded program."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from _viewer import Viewer, goto, step

import tidescope
from tidescope.capture import runtime
from tidescope.export.drain import Drain


def _open_failing_parse(page: Any, viewer: Viewer) -> None:
    goto(page, viewer.url + "#/exceptions", "exceptions")
    row = page.locator("#exceptions tbody tr", has_text="not a digit")
    step(page, row.get_by_role("link", name="__main__.parse").click, "call")


def test_failing_call_shows_its_argument_in_the_source(page: Any, viewer: Viewer) -> None:
    _open_failing_parse(page, viewer)
    assert page.locator("h1").inner_text() == "__main__.parse"
    def_line = page.locator("table.source tr").first
    assert "def parse(text):" in def_line.inner_text()
    assert "text = '4x2'" in def_line.locator("td.notes").inner_text()
    assert "ValueError: not a digit: 'x'" in page.locator("#outcome").inner_text()
    # the loop's iterations and the branch taken, at their lines
    notes = page.locator("table.source tr[data-line='10'] td.notes").inner_text()
    assert "#1: ch = '4'" in notes
    assert "#2: ch = 'x'" in notes
    branch = page.locator("table.source tr[data-line='11'] td.notes").inner_text()
    assert "taken" in branch
    assert "not taken" in branch


def test_previous_call_by_key_and_button(page: Any, viewer: Viewer) -> None:
    _open_failing_parse(page, viewer)
    assert re.search(r"call (\d+) of \1 of __main__\.parse", page.locator("main").inner_text())
    step(page, lambda: page.keyboard.press("p"), "call")
    assert "text = '23'" in page.locator("table.source tr").first.inner_text()
    assert "→ 23" in page.locator("#outcome").inner_text()
    step(page, page.get_by_role("button", name=re.compile("Next call")).click, "call")
    assert "text = '4x2'" in page.locator("table.source tr").first.inner_text()


def test_search_by_function_value_and_exception(page: Any, viewer: Viewer) -> None:
    goto(page, viewer.url + "#/search", "search")
    page.get_by_label("search by").select_option("value")
    page.get_by_label("search text").fill("89")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results table")
    rows = page.locator("#results tbody tr")
    texts = rows.all_inner_texts()
    assert len(texts) == 2  # worker(['7', '89']) and parse('89')
    assert any(t.startswith("__main__.worker") for t in texts)
    assert any(t.startswith("__main__.parse") and "text='89'" in t for t in texts)
    goto(page, viewer.url + "#/search?kind=exception&q=valueerror", "search")
    page.wait_for_selector("#results table")
    assert page.locator("#results tbody tr").count() == 1
    assert "text='4x2'" in page.locator("#results tbody").inner_text()
    goto(page, viewer.url + "#/search?kind=function&q=fetch", "search")
    page.wait_for_selector("#results table")
    assert page.locator("#results tbody tr").count() == 2


def test_markup_in_a_value_is_shown_as_text(page: Any, viewer: Viewer) -> None:
    goto(page, viewer.url + "#/search?kind=function&q=label", "search")
    page.wait_for_selector("#results table")
    assert "<img src=x onerror=" in page.locator("#results tbody").inner_text()
    assert page.locator("main img").count() == 0
    assert page.title() != "owned"


def test_timeline_has_a_track_per_thread_and_task(page: Any, viewer: Viewer) -> None:
    goto(page, viewer.url, "timeline")
    labels = page.locator(".labels .track").all_inner_texts()
    threads = {re.match(r"thread (\d+)", t).group(1) for t in labels}  # type: ignore[union-attr]
    assert len(threads) == 2  # the main thread and "side"
    assert sum("task" in t for t in labels) >= 3  # main() and the two fetch() tasks
    longest = page.locator("table tbody tr").first.inner_text()
    assert "__main__." in longest
    page.locator("canvas").focus()
    page.keyboard.press("+")
    page.wait_for_function("location.hash.includes('t0=')")


def test_exceptions_list_shows_type_message_place_and_chain(page: Any, viewer: Viewer) -> None:
    goto(page, viewer.url + "#/exceptions", "exceptions")
    rows = page.locator("#exceptions tbody tr")
    assert rows.count() == 1  # one raise, reported once
    text = rows.first.inner_text()
    assert "builtins.ValueError" in text
    assert "not a digit: 'x'" in text
    assert "sample_program.py:14" in text  # the raise's line, not parse's def
    assert "run" in rows.first.locator("ol.chain").inner_text()  # called from run()


def test_every_view_by_keyboard_and_no_request_leaves_the_server(page: Any, viewer: Viewer) -> None:
    goto(page, viewer.url, "timeline")
    for key, view in (("e", "exceptions"), ("r", "requests"), ("s", "search"), ("t", "timeline")):
        page.evaluate("document.activeElement.blur()")
        step(page, lambda k=key: page.keyboard.press(k), view)
    step(page, lambda: page.keyboard.press("e"), "exceptions")
    for _ in range(40):  # Tab from the start of the view to the first call's link
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('href') || ''").startswith("#/call"):
            break
    step(page, lambda: page.keyboard.press("Enter"), "call")
    assert page.locator("h1").inner_text() == "__main__.parse"
    assert page.requests_made
    assert all(u.startswith(viewer.url) for u in page.requests_made), page.requests_made


def test_a_request_with_its_query_and_the_call_that_sent_it(
    browser: Any, web_viewer: Viewer
) -> None:
    page = browser.new_page()
    try:
        goto(page, web_viewer.url + "#/requests", "requests")
        request = page.locator("section.req")
        assert request.count() == 1
        assert request.locator("h2").inner_text() == "GET /items"
        text = request.inner_text()
        assert "query SELECT name FROM items WHERE id = ?" in text
        assert "response 200 text/plain" in text
        pids = {int(p) for p in re.findall(r"process (\d+)", text)}
        assert len(pids) == 2  # the server's events and the client's outgoing call
        assert "outgoing call to http://127.0.0.1:" in text
    finally:
        page.close()


def test_dropped_events_are_said_at_the_top(browser: Any, tmp_path: Path) -> None:
    # a full drop_newest ring rejects the innermost entries (as tests/export/test_perfetto.py)
    session = tidescope.start(buffer_size=16, overflow_strategy="drop_newest")
    drain = Drain(tmp_path / "tr", interval=60)  # not started: pump() writes
    calls = [runtime.report_function_entry("app", f"f{i}", (i,)) for i in range(24)]
    drain.pump()
    for i, cid in reversed(list(enumerate(calls))):
        runtime.report_function_exit(cid, i)
    dropped = session.buffer.stats()["dropped_events"]
    assert dropped > 0
    drain.stop(session.stop())
    viewer = Viewer(tmp_path / "tr")
    page = browser.new_page()
    try:
        goto(page, viewer.url, "timeline")
        assert f"{dropped} events were dropped" in page.locator("#alerts").inner_text()
        assert page.locator(".labels .track").count() == 1
    finally:
        page.close()
        viewer.stop()


def test_a_clean_trace_has_no_banner(page: Any, viewer: Viewer) -> None:
    goto(page, viewer.url, "timeline")
    assert page.locator("#alerts").inner_text() == ""
