"""Reading damaged, hostile and cut-short trace files: skip what is damaged and say so, never
a traceback; the CLI's reader and setting errors are one line and status 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from tidescope import cli
from tidescope.export import jsonl
from tidescope.export.jsonl import TraceError, read_trace
from tidescope.export.summary import format_summary, summarize

HEADER = b'{"$header": {"format": 2, "pid": 7, "node": "n"}}\n'


def record(eid: int, etype: str = "function_entry", data: Any = None) -> bytes:
    if data is None:
        data = ["app", "f", 1, [eid]] if etype == "function_entry" else {"k": eid}
    return json.dumps([eid, 1000 + eid, 1, None, eid, None, eid, None, etype, data]).encode()


GOOD = [record(1), record(2, "generic")]
# each of these lines, alone between good ones, is damaged
DAMAGED = {
    "garbage": b"hello, world",
    "binary": bytes(range(256)).replace(b"\n", b""),
    "not JSON": b"{'single': 'quotes'}",
    "a torn line mid-file": record(3)[:17],
    "a bare number": b"42",
    "a record of 3 fields": b"[1, 2, 3]",
    "a record of 11 fields": b"[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]",
    "a string timestamp": record(4).replace(b"1004", b'"1004"'),
    "a list call_id": b'[5, 6, 1, null, 5, null, [5], null, "generic", {}]',
    "a numeric event_type": b"[5, 6, 1, null, 5, null, 5, null, 12, {}]",
    "a string data": b'[5, 6, 1, null, 5, null, 5, null, "generic", "x"]',
    "an entry of 3 values": b'[5, 6, 1, null, 5, null, 5, null, "function_entry", [1, 2, 3]]',
    "an object that is no event": b'{"event_id": 1}',
    "a $clock without an offset": b'{"$clock": {"wall_offset_ns": "x"}}',
    "a $counts with a negative count": (
        b'{"$counts": {"events_written": 1, "dropped_events": -1, "internal_errors": 0}}'
    ),
    "a $stats that is a list": b'{"$stats": [1, 2]}',
    "a $ key beside others": b'{"$counts": {}, "event_type": "x"}',
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    " deep nesting for the standard library": b" " + b"[" * 100_000 + b"]" * 100_000,
}


def trace_dir(tmp_path: Path, *lines: bytes, name: str = "events-7.jsonl") -> Path:
    directory = tmp_path / "trace"
    directory.mkdir(exist_ok=True)
    (directory / name).write_bytes(HEADER + b"".join(line + b"\n" for line in lines))
    return directory


def tidescope(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidescope", *args],
        capture_output=True, text=True, check=False, timeout=60,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *names: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tidescope: "), proc.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])


# -- read_trace ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(DAMAGED))
def test_a_damaged_line_is_skipped_counted_with_its_line_and_reading_goes_on(
    tmp_path: Path, kind: str
) -> None:
    path = trace_dir(tmp_path, GOOD[0], DAMAGED[kind], GOOD[1]) / "events-7.jsonl"
    records = list(read_trace(path))
    assert [r["event_id"] for r in records if "event_type" in r] == [1, 2]
    (damaged,) = [r["$damaged"] for r in records if "$damaged" in r]
    assert damaged["line"] == 3 and damaged["reason"]


def test_a_torn_last_line_is_skipped_without_a_count(tmp_path: Path) -> None:
    path = tmp_path / "events-7.jsonl"
    path.write_bytes(HEADER + GOOD[0] + b"\n" + GOOD[1][:20])
    assert [next(iter(r)) for r in read_trace(path)] == ["$header", "event_id"]


@pytest.mark.parametrize(
    "content",
    [
        b"hello, world\n",
        bytes(range(256)) * 4,
        b"[1, 2, 3]\n" + HEADER,
        b'{"$counts": {"events_written": 0, "dropped_events": 0, "internal_errors": 0}}\n',
        b'{"$header": {"pid": [1]}}\n',
        b'{"$header": "x"}\n',
    ],
    ids=["text", "binary", "header second", "counts first", "list pid", "string header"],
)
def test_a_file_that_does_not_start_with_a_header_is_not_a_trace(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "events-7.jsonl"
    path.write_bytes(content)
    with pytest.raises(TraceError, match=r"events-7\.jsonl: not a tidescope trace"):
        list(read_trace(path))


@pytest.mark.parametrize("content", [b"", HEADER[:20]], ids=["empty", "torn header"])
def test_a_file_cut_before_its_header_was_written_reads_as_empty(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "events-7.jsonl"
    path.write_bytes(content)
    assert list(read_trace(path)) == []


def test_a_line_over_the_cap_is_skipped_in_memory_bounded_by_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jsonl, "MAX_LINE", 1 << 16)
    huge = b'[1, 2, 1, null, 1, null, 1, null, "generic", {"s": "' + b"x" * (32 << 20) + b'"}]'
    path = trace_dir(tmp_path, GOOD[0], huge, GOOD[1]) / "events-7.jsonl"
    tracemalloc.start()
    try:
        records = list(read_trace(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # the line is 32 MiB; chunks of at most 1 MiB are held
    assert [r["event_id"] for r in records if "event_type" in r] == [1, 2]
    (damaged,) = [r["$damaged"] for r in records if "$damaged" in r]
    assert damaged == {"line": 3, "reason": f"a line longer than {1 << 16} bytes"}
    # the cap is also an argument; a line just under it is read
    assert len([r for r in read_trace(path, max_line=64 << 20) if "$damaged" in r]) == 0


def test_counts_records_are_read_but_are_no_events(tmp_path: Path) -> None:
    counts = b'{"$counts": {"events_written": 2, "dropped_events": 5, "internal_errors": 1}}'
    path = trace_dir(tmp_path, *GOOD, counts) / "events-7.jsonl"
    records = list(read_trace(path))
    assert records[-1] == {
        "$counts": {"events_written": 2, "dropped_events": 5, "internal_errors": 1}
    }
    assert len([r for r in records if "event_type" in r]) == 2


# -- show ---------------------------------------------------------------------------------

COUNTS = [
    b'{"$counts": {"events_written": 1, "dropped_events": 10, "internal_errors": 0}}',
    b'{"$counts": {"events_written": 2, "dropped_events": 90000, "internal_errors": 3}}',
]


def test_show_of_a_killed_process_reports_the_last_counts_it_flushed(tmp_path: Path) -> None:
    # no closing $stats: the process was killed with SIGKILL after its second batch
    directory = trace_dir(tmp_path, GOOD[0], COUNTS[0], GOOD[1], COUNTS[1])
    s = summarize(directory)
    assert s["dropped"] == 90000 and s["internal_errors"] == 3 and s["events"] == 2
    (proc,) = s["processes"]
    assert proc["complete"] is False and proc["dropped"] == 90000
    text = format_summary(s)
    assert "90000 dropped, 3 internal errors" in text.splitlines()[0]
    assert "at least 90000 dropped" in text


def test_show_prefers_the_closing_stats_and_falls_back_per_count(tmp_path: Path) -> None:
    stats = b'{"$stats": {"dropped_events": 90001, "total_writes": 9}}'  # no internal_errors
    s = summarize(trace_dir(tmp_path, GOOD[0], COUNTS[1], GOOD[1], stats))
    assert s["dropped"] == 90001 and s["internal_errors"] == 3
    assert s["processes"][0]["complete"] is True


def test_show_reports_damaged_lines_and_goes_on(tmp_path: Path) -> None:
    directory = trace_dir(
        tmp_path, GOOD[0], DAMAGED["garbage"], DAMAGED["a torn line mid-file"], GOOD[1]
    )
    proc = tidescope("show", str(directory))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "2 events in 1 process file(s), 0 dropped, 2 damaged line(s) skipped" in proc.stdout
    assert "events-7.jsonl: pid 7, 2 events" in proc.stdout
    assert "(first: line 3, not a JSON line)" in proc.stdout
    proc = tidescope("show", str(directory), "--json")
    s = json.loads(proc.stdout)
    assert s["damaged"] == 2 and s["processes"][0]["damaged"] == 2 and s["events"] == 2


@pytest.mark.parametrize("command", [["show"], ["show", "--json"], ["export"]])
@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (b"hello, world\n", "not a tidescope trace"),
        (bytes(range(256)) * 64, "not a tidescope trace"),
        (b'[1, "x"]\n', "not a tidescope trace"),
    ],
    ids=["garbage", "binary", "a record first"],
)
def test_show_and_export_of_a_file_that_is_no_trace_fail_in_one_line(
    tmp_path: Path, command: list[str], content: bytes, complaint: str
) -> None:
    directory = tmp_path / "trace"
    directory.mkdir()
    (directory / "events-1.jsonl").write_bytes(content)
    proc = tidescope(*command[:1], str(directory), *command[1:])
    assert_one_line_error(proc, str(directory / "events-1.jsonl"), complaint)


@pytest.mark.parametrize("command", ["show", "export"])
def test_a_directory_named_like_a_trace_file_fails_in_one_line(
    tmp_path: Path, command: str
) -> None:
    directory = tmp_path / "trace"
    (directory / "events-1.jsonl").mkdir(parents=True)
    proc = tidescope(command, str(directory))
    assert_one_line_error(proc, str(directory / "events-1.jsonl"), "Is a directory")


def test_show_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    directory = tmp_path / "trace"
    directory.mkdir()
    for pid in range(1000):  # a page of --json far larger than a pipe's buffer
        (directory / f"events-{pid}.jsonl").write_bytes(HEADER)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidescope", "show", str(directory), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip() == b"{"
    proc.stdout.close()  # as `| head -1` does
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE
    assert stderr == b""


# -- export -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "chrome"])
def test_export_skips_damaged_lines_and_counts_and_says_so(tmp_path: Path, fmt: str) -> None:
    directory = trace_dir(tmp_path, GOOD[0], DAMAGED["binary"], COUNTS[0], GOOD[1], COUNTS[1])
    out = tmp_path / "out.json"
    proc = tidescope("export", str(directory), "--format", fmt, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    damage, done = proc.stderr.splitlines()
    assert str(directory / "events-7.jsonl") in damage
    assert "1 damaged line(s) skipped (first: line 3, not a JSON line)" in damage
    assert done.endswith(f"-> {out}")
    text = out.read_text()
    assert "$counts" not in text and "$damaged" not in text and "$header" not in text
    if fmt == "jsonl":
        assert [json.loads(line)["event_id"] for line in text.splitlines()] == [1, 2]
    else:
        phases = [e["ph"] for e in json.loads(text)["traceEvents"]]
        assert phases == ["M", "i", "B"]  # a track name, the instant, the call never exited


@pytest.mark.parametrize("fmt", ["jsonl", "chrome", "nodes"])
@pytest.mark.parametrize("where", ["missing directory", "a directory"])
def test_export_to_an_unwritable_output_fails_in_one_line(
    tmp_path: Path, fmt: str, where: str
) -> None:
    directory = trace_dir(tmp_path, *GOOD)
    target = tmp_path / "no" / "out.json" if where == "missing directory" else tmp_path
    proc = tidescope("export", str(directory), "--format", fmt, "-o", str(target))
    assert_one_line_error(proc, f"cannot write '{target}'")


def test_export_of_nodes_fails_in_one_line_on_an_unreadable_nodes_file(tmp_path: Path) -> None:
    directory = trace_dir(tmp_path, *GOOD)
    (directory / "nodes-7.jsonl").mkdir()
    proc = tidescope("export", str(directory), "--format", "nodes")
    assert_one_line_error(proc, str(directory / "nodes-7.jsonl"))


def test_export_of_nodes_copies_lines_whatever_their_bytes(tmp_path: Path) -> None:
    directory = trace_dir(tmp_path, *GOOD)
    (directory / "nodes-7.jsonl").write_bytes(b'{"a": 1}\n\xff\xfe\n{"b": 2}')
    out = tmp_path / "nodes.jsonl"
    assert cli.main(["export", str(directory), "--format", "nodes", "-o", str(out)]) == 0
    assert out.read_bytes() == b'{"a": 1}\n\xff\xfe\n{"b": 2}\n'


# -- settings -----------------------------------------------------------------------------

BAD_SETTINGS = {
    "TIDESCOPE_CORE": "bogus",
    "TIDESCOPE_BUFFER_SIZE": "2**40",
    "TIDESCOPE_MAX_DEPTH": "1000000",
    "TIDESCOPE_MAX_STRING": str(1 << 40),
    "TIDESCOPE_BLOCK_TIMEOUT": "1e300",
}


@pytest.mark.parametrize("command", ["run", "debug", "demo"])
@pytest.mark.parametrize("var", [*BAD_SETTINGS, "TIDESCOPE_BUFFER_SIZE=2**40 as a number"])
def test_a_bad_setting_fails_a_command_that_captures_in_one_line(
    tmp_path: Path, command: str, var: str
) -> None:
    env = (
        {"TIDESCOPE_BUFFER_SIZE": str(1 << 40)}
        if var.endswith("number")
        else {var: BAD_SETTINGS[var]}
    )
    script = tmp_path / "x.py"
    script.write_text("print('ran')\n")
    args = ["run", "-o", str(tmp_path / "t"), str(script)] if command == "run" else [command]
    proc = tidescope(*args, env=env)
    assert_one_line_error(proc, next(iter(env)))
    assert "ran" not in proc.stdout


@pytest.mark.parametrize("var", list(BAD_SETTINGS))
def test_show_does_not_need_the_capture_settings(tmp_path: Path, var: str) -> None:
    proc = tidescope("show", str(trace_dir(tmp_path, *GOOD)), env={var: BAD_SETTINGS[var]})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "2 events in 1 process file(s)" in proc.stdout


def test_an_unusable_core_lets_tidescope_import_and_start_raise_at_the_boundary() -> None:
    code = (
        "import tidescope\n"
        "from tidescope.capture._core import CoreSelectionError\n"
        "try:\n"
        "    tidescope.start()\n"
        "except CoreSelectionError as exc:\n"
        "    print('refused:', exc)\n"
        "try:\n"
        "    tidescope.capture(buffer_size=8).__enter__()\n"
        "except ImportError as exc:\n"
        "    print('refused:', exc)\n"
        "print(tidescope.active_session())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False,
        env={**os.environ, "TIDESCOPE_CORE": "bogus"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "refused: TIDESCOPE_CORE='bogus' is invalid: it must be one of 'c', 'python' or unset"
    ] * 2 + ["None"]
