"""``tidescope view``'s server, asked directly: its address, headers and answers."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from _viewer import Viewer


def _get(viewer: Viewer, path: str, host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    url = urlsplit(viewer.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", host if host is not None else url.netloc)
    conn.endheaders()
    res = conn.getresponse()
    body = res.read()
    conn.close()
    return res.status, {k.lower(): v for k, v in res.getheaders()}, body


def _json(viewer: Viewer, path: str) -> Any:
    status, _, body = _get(viewer, path)
    assert status == 200, body
    return json.loads(body)


def test_serves_on_loopback_only_and_says_where(viewer: Viewer) -> None:
    url = urlsplit(viewer.url)
    assert url.hostname == "127.0.0.1"
    assert url.port
    with socket.socket() as s:  # the port is bound to 127.0.0.1, not to every address
        s.settimeout(5)
        own = socket.gethostbyname(socket.gethostname())
        if own != "127.0.0.1" and not own.startswith("127."):
            assert s.connect_ex((own, url.port)) != 0


def test_another_host_name_is_refused(viewer: Viewer) -> None:
    """DNS rebinding: a page of evil.example resolving to 127.0.0.1 still says its name."""
    status, _, _ = _get(viewer, "/api/summary", host=f"evil.example:{urlsplit(viewer.url).port}")
    assert status == 421
    status, _, _ = _get(viewer, "/", host="127.0.0.1")  # no port: not the served address
    assert status == 421
    assert _get(viewer, "/api/summary")[0] == 200


def test_the_page_and_its_assets_come_from_the_package_with_a_strict_policy(
    viewer: Viewer,
) -> None:
    for path, kind in (
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
    ):
        status, headers, body = _get(viewer, path)
        assert status == 200
        assert headers["content-type"].startswith(kind)
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert b"http://" not in body
        assert b"https://" not in body
    status, headers, _ = _get(viewer, "/api/nothing")
    assert status == 404
    assert "default-src 'self'" in headers["content-security-policy"]
    assert _get(viewer, "/api/slices?t0=x&t1=2")[0] == 400
    assert _get(viewer, "/../pyproject.toml")[0] == 404


def test_summary_counts_loss_and_lists_tracks(viewer: Viewer) -> None:
    s = _json(viewer, "/api/summary")
    assert s["dropped_events"] == 0
    assert s["internal_errors"] == 0
    assert s["raised"] >= 1
    assert len({(t["pid"], t["thread"]) for t in s["tracks"]}) == 2


def test_slices_in_a_window_are_the_long_ones_and_the_rest_counted(viewer: Viewer) -> None:
    s = _json(viewer, "/api/summary")
    window = f"t0={s['t0']}&t1={s['t1'] + 1}"
    fine = _json(viewer, f"/api/slices?{window}&width=2000")
    coarse = _json(viewer, f"/api/slices?{window}&width=2")
    for answer in (fine, coarse):  # every call is drawn or counted, never both
        hidden = sum(b["calls"] for b in answer["hidden"])
        assert len(answer["slices"]) + hidden == s["calls"]
        assert all(c["duration_ns"] >= answer["min_ns"] for c in answer["slices"])
    assert len(coarse["slices"]) < len(fine["slices"])
    longest = max(fine["slices"], key=lambda c: c["duration_ns"])
    mid = (longest["start_ns"] + longest["end_ns"]) // 2
    inside = _json(viewer, f"/api/slices?t0={mid}&t1={mid + 1}&width=1")
    assert all(c["start_ns"] <= mid < c["end_ns"] for c in inside["slices"])
    assert longest["call_id"] in {c["call_id"] for c in inside["slices"]}


def test_view_of_a_missing_directory_is_one_line_and_status_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tidescope", "view", str(tmp_path / "nope")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "no trace directory" in done.stderr


def test_a_taken_port_is_one_line_and_status_2(sample_trace: Path) -> None:
    pytest.importorskip("duckdb", reason="tidescope view needs the view extra (duckdb)")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "tidescope", "view", str(sample_trace), "--port", str(port)],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "reading the latest run" not in line]
    assert len(errors) == 1
    assert f"port {port}" in errors[0]
