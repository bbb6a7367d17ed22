"""`tidescope run`: at level calls objects are recorded by reference, read back from the
trace; a module pattern or ``--values deep`` asks for the bounded snapshot."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import tidescope
from tidescope.events import EventType, ObjectRef, ObjectSnapshot

APP = """
class Account:
    def __init__(self, owner):
        self.owner = owner
        self.history = [1, 2, 3]

    def deposit(self, amount):
        self.history.append(amount)
        return self.history

print(len(Account("ann").deposit(5)))
"""


def run(tmp_path: Path, *options: str, core: str = "c") -> dict[str, Any]:
    (tmp_path / "bank.py").write_text(textwrap.dedent(APP))
    out = tmp_path / "trace"
    proc = subprocess.run(
        [sys.executable, "-m", "tidescope", "run", *options, "-o", str(out), "bank.py"],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "TIDESCOPE_CORE": core},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "4\n"
    calls: dict[str, Any] = {}
    for e in tidescope.open_trace(out).events():
        if e.event_type is EventType.FUNCTION_ENTRY and e.data["function"] == "Account.deposit":
            calls["args"] = e.data["args"]
            calls["entry_call"] = e.call_id
        elif e.event_type is EventType.FUNCTION_EXIT and e.call_id == calls.get("entry_call"):
            calls["return_value"] = e.data["return_value"]
    return calls


@pytest.mark.parametrize("core", ["c", "python"])
def test_calls_level_records_objects_by_reference(tmp_path: Path, core: str) -> None:
    calls = run(tmp_path, core=core)
    me, history = calls["args"]["self"], calls["return_value"]
    assert type(me) is ObjectRef and me.type_name == "__main__.Account" and me.length is None
    assert calls["args"]["amount"] == 5
    assert type(history) is ObjectRef and (history.type_name, history.length) == ("list", 4)
    chrome = subprocess.run(
        [sys.executable, "-m", "tidescope", "export", "trace", "--format", "chrome",
         "-o", "c.json"],
        cwd=tmp_path, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert chrome.returncode == 0
    text = (tmp_path / "c.json").read_text().replace(" ", "")
    assert f'"self":{{"$ref":"__main__.Account","id":{me.object_id}}}' in text


@pytest.mark.parametrize("options", [("--values", "deep"), ("--deep-module", "__main__")])
def test_deep_values_or_a_module_pattern_take_the_snapshot(
    tmp_path: Path, options: tuple[str, ...]
) -> None:
    calls = run(tmp_path, *options)
    me = calls["args"]["self"]
    assert type(me) is ObjectSnapshot and me.attrs == {"owner": "ann", "history": [1, 2, 3]}
    assert calls["return_value"] == [1, 2, 3, 5]


def test_values_level_takes_the_snapshot(tmp_path: Path) -> None:
    calls = run(tmp_path, "--level", "values")
    assert type(calls["args"]["self"]) is ObjectSnapshot
