"""`tidescope run` with default settings keeps every event of a fast recursive program; a run
that drops says which setting would have kept its events."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tidescope.export.reader import read_trace, trace_files

FIB = """
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

print(fib({n}))
"""
CALLS = {24: 150049, 18: 8361}  # fib(n)'s calls


def tidescope_run(tmp_path: Path, n: int, *args: str, core: str = "") -> tuple[str, str]:
    (tmp_path / "fib.py").write_text(FIB.format(n=n))
    env = {**os.environ, "TIDESCOPE_CORE": core}
    proc = subprocess.run(
        [sys.executable, "-m", "tidescope", "run", *args, "-o", "out", "fib.py"],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr


def closing_stats(directory: Path) -> dict[str, object]:
    (path,) = trace_files(directory)
    (stats,) = [r["$stats"] for r in read_trace(path) if "$stats" in r]
    return dict(stats)


@pytest.mark.parametrize("core", ["c", "python"])
def test_default_run_of_a_fast_recursive_program_drops_nothing(tmp_path: Path, core: str) -> None:
    # 300,098 events, 4.6 times the default ring, recorded with no pause for the drain
    _, err = tidescope_run(tmp_path, 24, core=core)
    total = 2 * CALLS[24]
    assert err.startswith(f"tidescope: {total} events captured, 0 dropped, 0 internal"), err
    stats = closing_stats(tmp_path / "out")
    assert stats["size"] == 65536 and stats["overflow_strategy"] == "drop_oldest"
    assert stats["total_writes"] == stats["events_written"] == total
    assert stats["dropped_events"] == 0


def test_a_run_that_drops_says_which_setting_would_have_kept_its_events(tmp_path: Path) -> None:
    _, err = tidescope_run(
        tmp_path, 18, "--buffer-size", "16", "--overflow-strategy", "drop_newest"
    )
    got = re.match(r"tidescope: (\d+) events captured, (\d+) dropped \((.*?)\), 0 internal", err)
    assert got is not None, err
    written, dropped, hint = int(got[1]), int(got[2]), got[3]
    assert written + dropped == 2 * CALLS[18] and dropped > 0
    size = int(
        re.fullmatch(r"to keep them, use --buffer-size (\d+) or --overflow-strategy block", hint)[1]
    )  # type: ignore[index]
    assert size > 16 and size & (size - 1) == 0
    show = subprocess.run(
        [sys.executable, "-m", "tidescope", "show", "out"],
        cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert f"{dropped} dropped ({hint})" in show.stdout
