"""The top-level API: start/stop, capture(), the callable capture package, stats, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tidescope
from tidescope.capture import runtime


def test_issue_example_captures_entry_and_exit_in_order() -> None:
    with tidescope.capture(buffer_size=4096) as cap:
        cid = runtime.report_function_entry("shop.cart", "add", ["apple", 2])
        runtime.report_function_exit(cid, 3, 1200)
    events = cap.events()
    assert [e.event_type for e in events] == ["function_entry", "function_exit"]
    assert events[0].call_id == events[1].call_id == cid
    assert events[0].data == {
        "module": "shop.cart",
        "function": "add",
        "arity": 2,
        "args": ["apple", 2],
    }
    assert events[1].data["return_value"] == 3 and events[1].data["duration_ns"] == 1200
    assert not runtime.enabled()


def test_capture_package_is_both_importable_and_callable() -> None:
    import tidescope.capture.ring_buffer as rb

    assert tidescope.capture.ring_buffer is rb
    assert isinstance(tidescope.capture(), tidescope.Capture)


def test_start_and_stop_switch_every_thread_on_and_off() -> None:
    session = tidescope.start(buffer_size=64)
    assert session.active and runtime.enabled()
    assert runtime.report_function_entry("m", "f", []) is not None
    with pytest.raises(RuntimeError, match="already started"):
        tidescope.start()
    stats = tidescope.stop()
    assert stats["total_writes"] == 1 and stats["internal_errors"] >= 0
    assert not session.active and runtime.report_function_entry("m", "f", []) is None
    assert tidescope.stop() == {}


def test_start_with_enabled_false_records_nothing() -> None:
    tidescope.start(enabled=False)
    assert runtime.report_function_entry("m", "f", []) is None


def test_capture_inside_a_session_restores_the_session() -> None:
    outer = tidescope.start(buffer_size=64)
    with tidescope.capture(buffer_size=8) as cap:
        runtime.report_function_entry("m", "inner", [])
    runtime.report_function_entry("m", "outer", [])
    assert [e.data["function"] for e in cap.events()] == ["inner"]
    assert outer.buffer is not None
    assert [e.data["function"] for e in outer.buffer.drain()] == ["outer"]


def test_capture_counts_events_lost_to_a_small_buffer() -> None:
    with tidescope.capture(buffer_size=4) as cap:
        for i in range(10):
            runtime.report_function_exit(runtime.report_function_entry("m", "f", [i]), i)
    assert len(cap.events()) == 4
    stats = cap.stats()
    assert stats["dropped_events"] == 16
    assert stats["total_writes"] == stats["consumed_events"] + stats["dropped_events"]


def test_core_info_names_the_core_and_the_reason() -> None:
    info = tidescope.core_info()
    assert info["core"] in ("c", "python") and info["reason"]


def test_the_chosen_core_is_the_one_asked_for() -> None:
    # scripts/test (and so CI) sets TIDESCOPE_REQUIRE_C=1: the C core must be built and used
    # unless the run forces the pure twin.
    forced = os.environ.get("TIDESCOPE_CORE", "")
    info = tidescope.core_info()
    if forced == "python":
        assert info == {**info, "core": "python", "reason": "TIDESCOPE_CORE=python"}
    elif os.environ.get("TIDESCOPE_REQUIRE_C") == "1" or forced == "c":
        assert info["core"] == "c", info


def test_forcing_the_c_core_where_it_is_not_built_fails_loudly(tmp_path: Any) -> None:
    # a copy of the package without the extension, imported with TIDESCOPE_CORE=c
    import shutil

    src = os.path.dirname(tidescope.__file__)
    shutil.copytree(src, tmp_path / "tidescope", ignore=shutil.ignore_patterns("*.so", "*.pyd"))
    env = {**os.environ, "TIDESCOPE_CORE": "c", "PYTHONPATH": str(tmp_path)}
    code = "import tidescope; print(tidescope.__file__)"
    proc = subprocess.run(  # importing never fails: a program importing tidescope still runs
        [sys.executable, "-c", code + "; tidescope.start()"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and str(tmp_path) in proc.stdout
    assert "TIDESCOPE_CORE=c but the C accelerator is not available" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "tidescope", "debug"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("tidescope: TIDESCOPE_CORE=c but the C accelerator")
    env["TIDESCOPE_CORE"] = ""
    proc = subprocess.run(
        [sys.executable, "-c", code + "; print(tidescope.core_info())"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert str(tmp_path) in proc.stdout and "'core': 'python'" in proc.stdout
    assert "C accelerator not built" in proc.stdout


def test_forcing_an_unknown_core_fails_loudly() -> None:
    env = {**os.environ, "TIDESCOPE_CORE": "rust"}
    proc = subprocess.run(
        [sys.executable, "-c", "import tidescope; tidescope.start()"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0 and "TIDESCOPE_CORE='rust' is invalid" in proc.stderr


def test_cli_demo_prints_joined_events_and_a_summary() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tidescope", "demo", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    events = [json.loads(line) for line in lines[:-1]]
    entries = {e["call_id"] for e in events if e["event_type"] == "function_entry"}
    exits = {e["call_id"] for e in events if e["event_type"] == "function_exit"}
    assert entries == exits and len(entries) == 4
    assert "0 dropped" in lines[-1]


def test_cli_debug_reports_core_and_config() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tidescope", "debug"], capture_output=True, text=True, check=True
    )
    info = json.loads(proc.stdout)
    assert info["core"] == tidescope.core_info()["core"] and info["config"]["buffer_size"] == 65536


def test_configured_node_name_reaches_every_event() -> None:
    with tidescope.capture(buffer_size=8, node="alpha@host") as cap:
        runtime.report_function_entry("m", "f", ())
    assert [e.node for e in cap.events()] == ["alpha@host"]


def test_a_signal_handler_that_stops_capture_while_start_holds_the_lock_does_not_hang(
    tmp_path: Path,
) -> None:
    # Before: the session's lock was a plain Lock, so a handler calling stop() on the main
    # thread while that thread was inside start()/stop() waited for itself forever.
    script = tmp_path / "sig.py"
    script.write_text(
        "import signal, tidescope\n"
        "from tidescope import _session\n"
        "signal.signal(signal.SIGUSR1, lambda *a: print('stopped', tidescope.stop()['core']))\n"
        "tidescope.start()\n"
        "with _session._lock:  # as if the signal arrived inside start() or stop()\n"
        "    signal.raise_signal(signal.SIGUSR1)\n"
        "print('after', tidescope.stop())\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("stopped ")
    assert done.stdout.splitlines()[1] == "after {}"
