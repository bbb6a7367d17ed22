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

import tidescope
from tidescope import cli
from tidescope.capture import runtime
from tidescope.events import EventType
from tidescope.export._tsformat import (
    CHUNK_NOTES,
    MAGIC,
    encode_close_chunk,
    encode_events_chunk,
    encode_header_chunk,
    frame,
)
from tidescope.export.drain import Drain
from tidescope.export.reader import TraceError, TraceFile, read_trace, trace_files
from tidescope.export.summary import format_summary, summarize

HEADER = MAGIC + encode_header_chunk({"pid": 7, "node": "n"})
NAME = "events-7.tstrace"


def record(eid: int, etype: str = "function_entry", data: Any = None) -> tuple[Any, ...]:
    if data is None:
        data = ("app", "f", 1, (eid,)) if etype == "function_entry" else {"k": eid}
    return (0, eid, 1000 + eid, 1, None, eid, None, eid, None, EventType(etype), data)


def chunk(*records: tuple[Any, ...], seq: int = 1, counts: tuple[int, int] = (0, 0)) -> bytes:
    return encode_events_chunk(
        list(records), seq=seq, events_written=seq, dropped_events=counts[0],
        internal_errors=counts[1], wall_offset_ns=0,
    )  # fmt: skip


GOOD = [chunk(record(1), seq=1), chunk(record(2, "generic"), seq=2)]
_bad_body = bytearray(GOOD[0])
_bad_body[20] ^= 0x40
# each of these, alone between good chunks, is damaged
DAMAGED = {
    "garbage": b"hello, world",
    "binary": bytes(range(256)),
    "a flipped byte": bytes(_bad_body),
    "a torn chunk mid-file": GOOD[0][:17],
    "a wrong sync": b"XSCK" + GOOD[0][4:],
    "a zero length": GOOD[0][:4] + bytes(4) + GOOD[0][8:],
    "an impossible length": GOOD[0][:4] + (65 << 20).to_bytes(4, "little") + GOOD[0][8:],
    "a length past the next chunk": GOOD[0][:4]
    + (len(GOOD[0]) + 3).to_bytes(4, "little")
    + GOOD[0][8:],
    "a body that does not decode": frame(b"\x02\x01\x00\x00\x00\x00\x05"),
    "bytes after the records": frame(GOOD[0][12:] + b"\x00"),
    "an unknown value tag": frame(b"\x03\x01\x00\x00\x00\x1e"),
    "a list call_id": chunk((0, 5, 6, 1, None, 5, None, [5], None, EventType.GENERIC, {})),
    "a string data": chunk((0, 5, 6, 1, None, 5, None, 5, None, EventType.GENERIC, "x")),
    "a string timestamp": chunk((0, 5, "6", 1, None, 5, None, 5, None, EventType.GENERIC, {})),
    "deep nesting": frame(b"\x03\x01\x00\x00\x00" + b"\x0a\x01" * 100_000 + b"\x00"),
    "a header with a list pid": encode_header_chunk({"pid": [7], "node": "n"}),
    "stats with a negative count": encode_close_chunk(
        {"dropped_events": -1}, seq=2, events_written=1, dropped_events=0, internal_errors=0
    ),
    "a huge count": frame(b"\x03\x01\x00\x00\x00\x0a\xff\xff\xff\xff\x0f"),
}


def trace_dir(tmp_path: Path, *chunks: bytes, name: str = NAME) -> Path:
    directory = tmp_path / "trace"
    directory.mkdir(exist_ok=True)
    (directory / name).write_bytes(HEADER + b"".join(chunks))
    return directory


def tidescope_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
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
def test_a_damaged_chunk_is_skipped_counted_with_its_offset_and_reading_goes_on(
    tmp_path: Path, kind: str
) -> None:
    path = trace_dir(tmp_path, GOOD[0], DAMAGED[kind], GOOD[1]) / NAME
    records = list(read_trace(path))
    assert [r["event_id"] for r in records if "event_type" in r] == [1, 2]
    (damaged,) = [r["$damaged"] for r in records if "$damaged" in r]
    assert damaged["offset"] == len(HEADER) + len(GOOD[0]) and damaged["reason"]
    trace = TraceFile(path)
    assert (trace.damaged, trace.torn) == (1, False)


def real_trace(tmp_path: Path, batches: int = 4) -> Path:
    """A trace written by a drain: a header, ``batches`` chunks of 10 events, a close."""
    session = tidescope.start(buffer_size=64)
    drain = Drain(tmp_path / "real", interval=60)  # not started: pump() writes
    for b in range(batches):
        for i in range(5):
            runtime.report_function_exit(runtime.report_function_entry("app", "f", (b, i)), i)
        drain.pump()
    drain.stop(session.stop())
    (path,) = trace_files(tmp_path / "real")
    return path


def chunk_offsets(data: bytes) -> list[int]:
    pos, out = len(MAGIC), []
    while pos < len(data):
        out.append(pos)
        pos += 12 + int.from_bytes(data[pos + 4 : pos + 8], "little")
    return out


def test_a_flipped_byte_anywhere_in_a_chunk_loses_that_chunk_only(tmp_path: Path) -> None:
    path = real_trace(tmp_path)
    data = path.read_bytes()
    # header, 4 batches, close (and the notes of the test's thread, if it has none yet)
    starts = [at for at in chunk_offsets(data) if data[at + 12] != CHUNK_NOTES]
    assert len(starts) == 6
    third, fourth = starts[3], starts[4]
    for at in range(third, fourth):
        damaged = bytearray(data)
        damaged[at] ^= 0x01
        path.write_bytes(damaged)
        trace = TraceFile(path)
        events = list(trace.events())
        assert len(events) == 30, at  # the other three batches
        assert {e.data["args"][0] for e in events if e.event_type == "function_entry"} == {0, 1, 3}
        assert (trace.damaged, trace.torn, trace.complete) == (1, False, True), at
        counts = trace.counts  # internal errors are per process: earlier tests' count too
        assert (counts["events_written"], counts["dropped_events"]) == (40, 0)


def test_a_file_cut_anywhere_in_its_last_chunk_is_a_torn_tail(tmp_path: Path) -> None:
    path = real_trace(tmp_path, batches=2)
    data = path.read_bytes()
    last_batch, close = chunk_offsets(data)[2:]
    for end in range(last_batch + 1, close):
        path.write_bytes(data[:end])
        trace = TraceFile(path)
        assert len(list(trace.events())) == 10
        assert (trace.torn, trace.damaged, trace.complete) == (True, 0, False), end
        assert trace.counts["events_written"] == 10  # the last whole chunk's


def test_garbage_between_chunks_is_one_damage_and_the_rest_reads(tmp_path: Path) -> None:
    path = trace_dir(tmp_path, GOOD[0], b"TSCK" * 3 + b"\xff" * 1000 + b"TS", GOOD[1]) / NAME
    trace = TraceFile(path)
    assert [e.event_id for e in trace.events()] == [1, 2]
    assert (trace.damaged, trace.torn) == (1, False)


def test_open_trace_lists_files_with_header_counts_and_events(tmp_path: Path) -> None:
    close = encode_close_chunk(
        {"total_writes": 2}, seq=3, events_written=2, dropped_events=4, internal_errors=0
    )
    directory = trace_dir(tmp_path, GOOD[0], GOOD[1], close)
    trace_dir(tmp_path, GOOD[0], name="events-8.tstrace")  # killed after one batch
    trace = tidescope.open_trace(directory)
    done, killed = trace.files
    assert done.header == {"format": 1, "pid": 7, "node": "n"}
    assert done.complete and done.stats == {"total_writes": 2}
    assert done.counts == {"events_written": 2, "dropped_events": 4, "internal_errors": 0}
    assert not killed.complete and killed.counts["events_written"] == 1
    events = list(trace.events())
    assert [(e.event_id, e.event_type, e.pid, e.node) for e in events] == [
        (1, EventType.FUNCTION_ENTRY, 7, "n"), (2, EventType.GENERIC, 7, "n"),
        (1, EventType.FUNCTION_ENTRY, 7, "n"),
    ]  # fmt: skip
    assert events[0].data == {"module": "app", "function": "f", "arity": 1, "args": (1,)}
    assert events[0].wall_time == events[0].timestamp  # an offset of 0
    with pytest.raises(TraceError, match="not a trace directory"):
        tidescope.open_trace(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "content",
    [
        b"hello, world\n",
        bytes(range(256)) * 4,
        b'{"$header": {"format": 2, "pid": 7, "node": "n"}}\n',
        GOOD[0] + HEADER,
        MAGIC[:7] + b"x",
    ],
    ids=["text", "binary", "a JSON-lines trace", "no magic", "a wrong magic"],
)
def test_a_file_without_the_magic_is_not_a_trace(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / NAME
    path.write_bytes(content)
    with pytest.raises(TraceError, match=r"events-7\.tstrace: not a tidescope trace"):
        list(read_trace(path))


def test_a_format_newer_than_the_reader_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / NAME
    path.write_bytes(MAGIC + encode_header_chunk({"format": 2, "pid": 7}) + GOOD[0])
    with pytest.raises(TraceError, match=r"events-7\.tstrace: trace format 2 is newer"):
        list(read_trace(path))


@pytest.mark.parametrize(
    "content", [b"", MAGIC[:3], MAGIC, HEADER[:20]], ids=["empty", "torn magic", "magic", "torn"]
)
def test_a_file_cut_before_its_header_was_written_reads_as_empty(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / NAME
    path.write_bytes(content)
    assert list(read_trace(path)) == []
    assert TraceFile(path).header is None


def test_a_chunk_over_the_cap_is_skipped_in_memory_bounded_by_the_cap(tmp_path: Path) -> None:
    huge = chunk(record(3, "generic", {"s": "x" * (32 << 20)}), seq=2)
    path = trace_dir(tmp_path, GOOD[0], huge, GOOD[1]) / NAME
    size = len(huge) - 12
    del huge
    tracemalloc.start()
    try:
        records = list(read_trace(path, max_chunk=1 << 16))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # the chunk is 32 MiB; pieces of at most 1 MiB are held
    assert [r["event_id"] for r in records if "event_type" in r] == [1, 2]
    (damaged,) = [r["$damaged"] for r in records if "$damaged" in r]
    assert damaged["reason"] == f"a chunk of {size} bytes, over the cap of {1 << 16}"
    # the cap is an argument; by default a chunk of up to 64 MiB is read
    assert len([r for r in read_trace(path) if "$damaged" in r]) == 0


def test_a_chunk_of_an_unknown_kind_is_skipped_and_counted_apart_from_damage(
    tmp_path: Path,
) -> None:
    later = frame(b"\x09\x02\x05\x06\x07" + b"a later kind's own fields")
    path = trace_dir(tmp_path, GOOD[0], later, GOOD[1]) / NAME
    trace = TraceFile(path)
    assert [e.event_id for e in trace.events()] == [1, 2]
    assert (trace.unknown, trace.damaged) == (1, 0)
    assert not any("$damaged" in r for r in read_trace(path))


def test_counts_records_are_read_but_are_no_events(tmp_path: Path) -> None:
    path = trace_dir(tmp_path, GOOD[0], chunk(seq=2, counts=(5, 1))) / NAME
    records = list(read_trace(path))
    assert records[-1] == {
        "$counts": {"events_written": 2, "dropped_events": 5, "internal_errors": 1}
    }
    assert len([r for r in records if "event_type" in r]) == 1


# -- show ---------------------------------------------------------------------------------

COUNTS = [
    chunk(record(1), seq=1, counts=(10, 0)),
    chunk(record(2, "generic"), seq=2, counts=(90000, 3)),
]


def test_show_of_a_killed_process_reports_the_last_counts_it_flushed(tmp_path: Path) -> None:
    # no CLOSE chunk: the process was killed with SIGKILL after its second batch
    directory = trace_dir(tmp_path, *COUNTS)
    s = summarize(directory)
    assert s["dropped"] == 90000 and s["internal_errors"] == 3 and s["events"] == 2
    (proc,) = s["processes"]
    assert proc["complete"] is False and proc["dropped"] == 90000
    text = format_summary(s)
    assert "90000 dropped, 3 internal errors" in text.splitlines()[0]
    assert "at least 90000 dropped" in text


def test_show_prefers_the_closing_stats_and_falls_back_per_count(tmp_path: Path) -> None:
    stats = encode_close_chunk(
        {"dropped_events": 90001, "total_writes": 9},  # no internal_errors
        seq=3, events_written=2, dropped_events=90001, internal_errors=0,
    )  # fmt: skip
    s = summarize(trace_dir(tmp_path, *COUNTS, stats))
    assert s["dropped"] == 90001 and s["internal_errors"] == 3
    assert s["processes"][0]["complete"] is True


def test_show_reports_damaged_chunks_and_goes_on(tmp_path: Path) -> None:
    directory = trace_dir(
        tmp_path, GOOD[0], DAMAGED["garbage"], GOOD[1], DAMAGED["a flipped byte"], GOOD[1]
    )
    proc = tidescope_cli("show", str(directory))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "3 events in 1 process file(s), 0 dropped, 2 damaged chunk(s) skipped" in proc.stdout
    assert f"{NAME}: pid 7, 3 events" in proc.stdout
    offset = len(HEADER) + len(GOOD[0])
    assert f"(first: at byte {offset}, bytes that are no chunk)" in proc.stdout
    proc = tidescope_cli("show", str(directory), "--json")
    s = json.loads(proc.stdout)
    assert s["damaged"] == 2 and s["processes"][0]["damaged"] == 2 and s["events"] == 3


@pytest.mark.parametrize("command", [["show"], ["show", "--json"], ["export"]])
@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (b"hello, world\n", "not a tidescope trace"),
        (bytes(range(256)) * 64, "not a tidescope trace"),
        (b'{"$header": {"format": 2}}\n[1, "x"]\n', "not a tidescope trace"),
        (MAGIC + encode_header_chunk({"format": 9}), "trace format 9 is newer"),
    ],
    ids=["garbage", "binary", "a JSON-lines trace", "a newer format"],
)
def test_show_and_export_of_a_file_that_is_no_trace_fail_in_one_line(
    tmp_path: Path, command: list[str], content: bytes, complaint: str
) -> None:
    directory = tmp_path / "trace"
    directory.mkdir()
    (directory / "events-1.tstrace").write_bytes(content)
    proc = tidescope_cli(*command[:1], str(directory), *command[1:])
    assert_one_line_error(proc, str(directory / "events-1.tstrace"), complaint)


@pytest.mark.parametrize("command", ["show", "export"])
def test_a_directory_named_like_a_trace_file_fails_in_one_line(
    tmp_path: Path, command: str
) -> None:
    directory = tmp_path / "trace"
    (directory / "events-1.tstrace").mkdir(parents=True)
    proc = tidescope_cli(command, str(directory))
    assert_one_line_error(proc, str(directory / "events-1.tstrace"), "Is a directory")


def test_show_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    directory = tmp_path / "trace"
    directory.mkdir()
    for pid in range(1000):  # a page of --json far larger than a pipe's buffer
        (directory / f"events-{pid}.tstrace").write_bytes(HEADER)
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
def test_export_skips_damaged_chunks_and_counts_and_says_so(tmp_path: Path, fmt: str) -> None:
    directory = trace_dir(tmp_path, GOOD[0], DAMAGED["binary"], COUNTS[1])
    out = tmp_path / "out.json"
    proc = tidescope_cli("export", str(directory), "--format", fmt, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    damage, done = proc.stderr.splitlines()
    assert str(directory / NAME) in damage
    offset = len(HEADER) + len(GOOD[0])
    assert (
        f"1 damaged chunk(s) skipped (first: at byte {offset}, bytes that are no chunk)" in damage
    )
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
    proc = tidescope_cli("export", str(directory), "--format", fmt, "-o", str(target))
    assert_one_line_error(proc, f"cannot write '{target}'")


def test_export_of_nodes_fails_in_one_line_on_an_unreadable_nodes_file(tmp_path: Path) -> None:
    directory = trace_dir(tmp_path, *GOOD)
    (directory / "nodes-7.jsonl").mkdir()
    proc = tidescope_cli("export", str(directory), "--format", "nodes")
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
    proc = tidescope_cli(*args, env=env)
    assert_one_line_error(proc, next(iter(env)))
    assert "ran" not in proc.stdout


@pytest.mark.parametrize("var", list(BAD_SETTINGS))
def test_show_does_not_need_the_capture_settings(tmp_path: Path, var: str) -> None:
    proc = tidescope_cli("show", str(trace_dir(tmp_path, *GOOD)), env={var: BAD_SETTINGS[var]})
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
