"""``tidescope show`` on real recorded programs: raises, times, threads and tasks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tidescope.export._tsformat import MAGIC, encode_events_chunk, encode_header_chunk
from tidescope.export.summary import format_summary, summarize

PROGRAM = """
import asyncio, threading

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def caller():
    return fib(12)

def inner(x):
    raise ValueError(f"bad {x}")

def middle(x):
    return inner(x + 1)

def outer(x):
    return middle(x * 2)

def careful():
    try:
        inner(-1)
    except ValueError:
        return "caught"

def squares(n):
    for i in range(n):
        yield i * i

async def job():
    return caller()

async def amain():
    await asyncio.create_task(job(), name="fib-job")

def main():
    caller()
    list(zip(squares(3), squares(3)))  # two calls of one function open at once: no recursion
    careful()
    t = threading.Thread(target=caller, name="fib-thread")
    t.start()
    t.join()
    asyncio.run(amain())

main()
outer(1)
"""


def tidescope(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidescope", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("show")
    (tmp / "prog.py").write_text(textwrap.dedent(PROGRAM))
    done = tidescope("run", "-o", "tr", "prog.py", cwd=tmp)
    assert done.returncode == 1 and "ValueError: bad 3" in done.stderr  # as python says it
    return tmp


def test_an_uncaught_exception_through_three_frames_is_one_raise_with_its_place_and_args(
    recorded: Path,
) -> None:
    s = summarize(recorded / "tr")
    assert s["raises"]["escaped"] == 1
    (escaped,) = s["escaped"]
    assert escaped["type"] == "builtins.ValueError" and escaped["message"] == "bad 3"
    assert escaped["count"] == 1 and escaped["frames"] == 3  # inner, middle, outer
    where = escaped["where"]
    assert where["file"].endswith("prog.py") and where["function"] == "inner"
    line = textwrap.dedent(PROGRAM).splitlines().index('    raise ValueError(f"bad {x}")') + 1
    assert where["line"] == line
    assert escaped["function"] == "__main__.inner" and escaped["arguments"] == {"x": 3}


def test_a_caught_exception_is_listed_apart(recorded: Path) -> None:
    s = summarize(recorded / "tr")
    assert s["raises"] == {"escaped": 1, "caught": 1, "reported": 0}
    (caught,) = s["caught"]
    assert (caught["message"], caught["frames"], caught["arguments"]) == ("bad -1", 1, {"x": -1})


def test_recursion_is_counted_once_in_inclusive_time(recorded: Path) -> None:
    s = summarize(recorded / "tr")
    inclusive = dict(s["top_by_inclusive_ns"])
    self_ns = dict(s["top_by_self_ns"])
    calls = dict(s["top_by_count"])
    assert calls["__main__.fib"] == 3 * 465 and calls["__main__.caller"] == 3
    assert 0 < inclusive["__main__.fib"] <= inclusive["__main__.caller"]
    assert self_ns["__main__.fib"] <= inclusive["__main__.fib"]
    # every call's self time is inside an outermost call's inclusive time
    assert all(self_ns[f] <= inclusive[f] for f in self_ns if f in inclusive)
    assert "__main__.squares" in inclusive
    assert self_ns["__main__.caller"] < inclusive["__main__.caller"]  # fib's time is not its


def test_threads_and_tasks_are_shown_by_name(recorded: Path) -> None:
    s = summarize(recorded / "tr")
    assert sorted(t["name"] for t in s["threads"]) == ["MainThread", "fib-thread"]
    assert all(type(t["native_id"]) is int for t in s["threads"])
    assert sorted(t["name"] for t in s["tasks"]) == ["Task-1", "fib-job"]


def test_the_cli_shows_loss_first_then_raises_and_names_and_json_says_the_same(
    recorded: Path,
) -> None:
    text = tidescope("show", "tr", cwd=recorded)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].endswith(", 0 dropped")
    page = text.stdout
    assert "exceptions that escaped: 1\n" in page and "exceptions caught: 1\n" in page
    assert "builtins.ValueError: bad 3" in page and "in call __main__.inner(x=3)" in page
    assert "through 3 recorded frame(s)" in page
    assert "fib-thread (thread " in page and "fib-job (task " in page
    assert "top functions by self time:" in page
    as_json = tidescope("show", "tr", "--json", cwd=recorded)
    assert as_json.returncode == 0, as_json.stderr
    got: dict[str, Any] = json.loads(as_json.stdout)
    want = json.loads(json.dumps(summarize(recorded / "tr")))
    assert got == want
    assert format_summary(summarize(recorded / "tr")) == text.stdout.rstrip("\n")


def test_drops_and_internal_errors_come_first(tmp_path: Path) -> None:
    # a killed process's counts: the first line says what was lost
    s = summarize_with_loss(tmp_path)
    first = format_summary(s).splitlines()[0]
    assert first.endswith("7 dropped, 2 internal errors")


def summarize_with_loss(tmp_path: Path) -> dict[str, Any]:
    chunk = encode_events_chunk(
        [], seq=1, events_written=0, dropped_events=7, internal_errors=2, wall_offset_ns=0
    )
    (tmp_path / "events-7.tstrace").write_bytes(
        MAGIC + encode_header_chunk({"pid": 7, "node": "n"}) + chunk
    )
    return summarize(tmp_path)


def test_an_error_event_for_a_raise_already_counted_is_not_counted_again(tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(
        textwrap.dedent("""
        from tidescope.capture import runtime

        def inner(x):
            raise KeyError(x)

        def outer(x):
            return inner(x)

        try:
            outer("k")
        except KeyError as exc:
            runtime.report_error(exc)   # as a framework reports what reached it
        runtime.report_error(RuntimeError("only reported"))
        """)
    )
    done = tidescope("run", "-o", "tr", "prog.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    s = summarize(tmp_path / "tr")
    assert s["raises"] == {"escaped": 1, "caught": 0, "reported": 1}
    assert s["escaped"][0]["type"] == "builtins.KeyError" and s["escaped"][0]["frames"] == 2
    assert s["reported"][0]["type"] == "builtins.RuntimeError"
    assert s["reported"][0]["message"] == "only reported"
