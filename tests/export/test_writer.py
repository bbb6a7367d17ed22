"""The trace writer: counts in every chunk, whole chunks only, new private files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tidescope
from tidescope.capture import _core, runtime
from tidescope.events import Event, EventType
from tidescope.export import _tsformat
from tidescope.export import writer as writer_module
from tidescope.export.drain import Drain
from tidescope.export.reader import TraceFile, read_trace
from tidescope.export.writer import TraceWriter


def chunks(path: Path) -> list[_tsformat.Chunk]:
    """Every chunk of ``path``, decoded, checking the framing on the way."""
    data = path.read_bytes()
    assert data[:8] == _tsformat.MAGIC
    pos, out = 8, []
    while pos < len(data):
        assert data[pos : pos + 4] == _tsformat.SYNC
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = data[pos + 12 : pos + 12 + length]
        assert len(body) == length  # no torn chunk
        out.append(_tsformat.decode_body(body))
        pos += 12 + length
    return out


def test_every_batch_is_one_chunk_with_the_running_counts(tmp_path: Path) -> None:
    session = tidescope.start(buffer_size=8)
    # this thread's name note is written once per process: take it now, so the chunks
    # below are the same whether an earlier test wrote it or not
    _core.note_thread_once()
    _core.take_notes()
    base = tidescope.stats()["internal_errors"]  # counted per process, earlier tests included
    drain = Drain(tmp_path, interval=60, batch=2)  # not started: pump() writes
    for i in range(10):  # 20 events through 8 slots: the 12 oldest are lost
        runtime.report_function_exit(runtime.report_function_entry("app", "f", (i,)), i)
    assert drain.pump() == 8  # all that waits in one read, more than a batch
    runtime.report_function_entry("app", "g", ())
    assert drain.pump() == 1  # a batch at most of what waits
    path = drain.writer.path
    assert path.name == f"events-{os.getpid()}.tstrace"
    written = chunks(path)
    assert [c.kind for c in written] == [1, 2, 2]
    assert [c.seq for c in written] == [0, 1, 2]
    assert [len(c.content) for c in written[1:]] == [8, 1]
    assert [c.counts for c in written] == [(0, 0, 0), (8, 12, base), (9, 12, base)]
    assert drain.pump() == 0  # nothing new: nothing written
    assert len(chunks(path)) == 3
    # an empty batch writes a chunk of its counts alone when they moved, and only then
    assert drain.writer.write_records([], dropped_events=15, internal_errors=1) == 0
    assert drain.writer.write_records([], dropped_events=15, internal_errors=1) == 0
    (tail,) = chunks(path)[3:]
    assert (tail.kind, tail.seq, tail.counts, tail.content) == (2, 3, (9, 15, 1), [])
    drain.stop(session.stop())
    written = chunks(path)
    assert [c.seq for c in written] == list(range(len(written)))
    close = written[-1]
    assert close.kind == 3 and close.content["events_not_written"] == 0
    assert close.counts == (9, 12, base)  # from the stats
    read_counts = [r["$counts"] for r in read_trace(path) if "$counts" in r]
    assert read_counts[2] == {"events_written": 9, "dropped_events": 15, "internal_errors": 1}
    header = TraceFile(path).header
    assert header is not None and header["format"] == 1 and header["pid"] == os.getpid()
    assert {"ppid", "node", "argv", "python", "core", "tidescope"} <= set(header)


def test_whole_events_and_stray_objects_in_the_ring(tmp_path: Path) -> None:
    writer = TraceWriter(tmp_path / "events-7.tstrace", {"pid": 7, "node": "n"})
    ev = Event(5, 10, 20, "other", 8, 1, None, None, None, None, None, EventType.GENERIC, {})
    assert writer.write_records([(0, ev), (1, "stray")], dropped_events=0, internal_errors=0) == 1
    writer.close({})
    (got,) = TraceFile(writer.path).events()
    assert got == ev and TraceFile(writer.path).counts["events_written"] == 1


def test_a_batch_past_the_chunk_limit_is_split_into_several_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tsformat, "MAX_BODY", 300)
    # the C encoder's limit is compiled in: the splitting is the writer's, test it on the pure
    monkeypatch.setattr(writer_module, "encode_events_chunk", _tsformat.encode_events_chunk)
    writer = TraceWriter(tmp_path / "events-7.tstrace", {"pid": 7})
    records = [
        (i, i << 22 | 7, i, 1, None, None, None, None, None, EventType.GENERIC, {"i": f"{i:040}"})
        for i in range(20)
    ]
    assert writer.write_records(records, dropped_events=0, internal_errors=0) == 20
    writer.close({})
    monkeypatch.undo()
    written = chunks(writer.path)
    assert len(written) > 3 and [c.seq for c in written] == list(range(len(written)))
    events = [e for c in written if c.kind == 2 for e in c.content]
    assert [e[12]["i"] for e in events] == [f"{i:040}" for i in range(20)]
    assert [c.counts[0] for c in written if c.kind == 2][-1] == 20


def test_a_write_that_comes_up_short_is_cut_back_and_the_writer_stops(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, resource, signal
        import tidescope
        from tidescope.capture import runtime
        from tidescope.export.drain import Drain
        from tidescope.export.reader import trace_files

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # this test is about the file

        def batch():
            for i in range(50):
                runtime.report_function_exit(runtime.report_function_entry("app", "f", (i,)), i)

        session = tidescope.start(buffer_size=1024)
        drain = Drain({str(tmp_path)!r}, interval=60)  # not started: one write per pump()
        (path,) = trace_files({str(tmp_path)!r})
        header = path.stat().st_size
        batch()
        drain.pump()
        size = path.stat().st_size
        # room for one more batch and a half: the one after is cut short by the limit
        limit = size + (size - header) * 3 // 2
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        for _ in range(3):
            batch()
            drain.pump()
        drain.stop(session.stop())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    (path,) = tmp_path.glob("events-*.tstrace")
    written = chunks(path)  # no torn chunk anywhere
    stats = written[-1].content
    assert written[-1].kind == 3
    assert stats["write_error"] == "File too large (EFBIG)"
    assert stats["events_written"] == 200 and stats["events_not_written"] == 200
    assert sum(len(c.content) for c in written if c.kind == 2) == 200
    assert [c.seq for c in written] == list(range(len(written)))
    assert proc.stderr.count("tidescope: stopped writing") == 1


def test_the_writer_never_opens_an_existing_name_or_follows_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "events-7.tstrace").symlink_to(victim)
    (tmp_path / "events-7-1.tstrace").write_text("someone else's")
    (tmp_path / "events-7-2.tstrace").symlink_to(tmp_path / "nowhere")
    writer = TraceWriter(tmp_path / "events-7.tstrace", {"pid": 7})
    writer.close({"done": True})
    assert writer.path == tmp_path / "events-7-3.tstrace"
    assert victim.read_text() == "keep" and not (tmp_path / "nowhere").exists()
    assert (tmp_path / "events-7-1.tstrace").read_text() == "someone else's"
    assert stat.S_IMODE(os.stat(writer.path).st_mode) == 0o600
    assert [next(iter(r)) for r in read_trace(writer.path)] == ["$header", "$stats"]


def test_a_lazy_writer_creates_its_file_only_when_there_is_something_to_write(
    tmp_path: Path,
) -> None:
    idle = TraceWriter(tmp_path / "events-1.tstrace", {"pid": 1}, lazy=True)
    assert idle.write_records([], dropped_events=0, internal_errors=0) == 0
    idle.close({"dropped_events": 0, "internal_errors": 0})
    assert not idle.created and list(tmp_path.iterdir()) == []  # nothing recorded: no file
    session = tidescope.start(buffer_size=8)
    drain = Drain(tmp_path, interval=60, lazy=True)  # not started: pump() writes
    assert list(tmp_path.iterdir()) == []
    runtime.report_function_entry("app", "f", (1,))
    assert drain.pump() == 1 and drain.writer.created
    drain.stop(session.stop())
    written = chunks(drain.writer.path)
    assert [c.kind for c in written] == [1, 2, 3] and [c.seq for c in written] == [0, 1, 2]
    # no events but a loss to tell: the file is made at the close, to say so
    lossy = TraceWriter(tmp_path / "events-2.tstrace", {"pid": 2}, lazy=True)
    lossy.close({"dropped_events": 3, "internal_errors": 0})
    records = list(read_trace(lossy.path))
    assert records[0]["$header"]["pid"] == 2 and records[-1]["$stats"]["dropped_events"] == 3
