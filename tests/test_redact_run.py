"""`tidescope run`: secrets never reach the trace files, and the setting turns that off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tidescope.events import jsonable
from tidescope.export.reader import read_trace, trace_files

APP = """
def connect(user, password, *, api_key=None):
    token = password[::-1]
    settings = {"user": user, "db": {"password": password}}
    return len(token) + len(settings)

print(connect("bob", "hunter2", api_key="k3y-value"))
"""


def run(tmp_path: Path, **env: str) -> str:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    out = tmp_path / "trace"
    proc = subprocess.run(
        [sys.executable, "-m", "tidescope", "run", "--level", "values", "-o", str(out), "app.py"],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), **env},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "9\n"  # the program computes with its real values
    text = "".join(
        json.dumps(jsonable(rec), separators=(",", ":"))
        for p in trace_files(out)
        for rec in read_trace(p)
    )
    assert "connect" in text
    return text.replace(" ", "")


@pytest.mark.parametrize("core", ["c", "python"])
def test_a_recorded_run_holds_markers_not_secrets(tmp_path: Path, core: str) -> None:
    text = run(tmp_path, TIDESCOPE_CORE=core)
    for secret in ("hunter2", "2retnuh", "k3y-value"):
        assert secret not in text
    assert '"password":{"$redacted":"str"}' in text
    assert '"token":{"$redacted":"str"}' in text
    assert '"user":"bob"' in text


def test_redaction_switched_off_records_values_as_they_are(tmp_path: Path) -> None:
    text = run(tmp_path, TIDESCOPE_REDACT="0")
    assert "hunter2" in text and "k3y-value" in text and "$redacted" not in text
