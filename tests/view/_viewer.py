"""Helpers of the viewer's tests: record a program, run ``tidescope view``, find chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent


def record(tmp: Path, program: Path, *args: str) -> Path:
    """Run ``program`` under ``tidescope run`` in ``tmp``, recording into ``tmp/trace``."""
    out = tmp / "trace"
    subprocess.run(
        [sys.executable, "-m", "tidescope", "run", *args, "-o", str(out), str(program)],
        cwd=tmp,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


class Viewer:
    """A ``tidescope view`` subprocess and the URL it printed."""

    def __init__(self, directory: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tidescope", "view", str(directory)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "http://" not in line:
            self.proc.kill()
            raise AssertionError(
                f"no URL from tidescope view: {line!r} {self.proc.stderr.read()!r}"
            )
        self.url = line.split()[2]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def chromium_path() -> str:
    """Debian's chromium (scripts/test installs it); a missing one skips, but fails under CI."""
    path = os.environ.get("TIDESCOPE_TEST_CHROMIUM") or shutil.which("chromium")
    if path is None:
        reason = "no chromium on PATH (apt-get install chromium; scripts/test does it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def goto(page: Any, url: str, view: str) -> None:
    """Open ``url`` and wait until the page has drawn ``view``."""
    page.goto(url)
    wait_view(page, view)


def wait_view(page: Any, view: str, left: str | None = None) -> None:
    """Wait until the page has drawn ``view`` for the address it shows (one other than
    ``left``, the address before a click or key that navigates)."""
    page.wait_for_function(
        """([view, left]) => {
            const m = document.querySelector("main");
            return m.dataset.ready === view && m.dataset.shown === location.hash
                && location.hash !== left;
        }""",
        arg=[view, left],
    )


def step(page: Any, act: Any, view: str) -> None:
    """Do ``act()`` (a click or key that navigates) and wait until ``view`` is drawn."""
    left = page.evaluate("location.hash")
    act()
    wait_view(page, view, left)
