"""The trace writer: one binary file per process (``docs/trace-format.md``), whole chunks only.

A file is ``events-<pid>.tstrace``: the format's magic and a HEADER chunk, then one EVENTS
chunk per batch the drain hands over, each carrying the process's running counts (events
written, dropped, internal errors), then a CLOSE chunk with the session's final stats when
the process ends normally. Each write is one call, whole or not at all: a write that fails
or comes up short is cut back to the end of the last whole chunk, and the writer stops,
saying so once. A process killed with SIGKILL leaves a file missing at most its last batch,
and the reader skips a torn tail. Files are created new, mode 0600, never through a symlink
(:mod:`tidescope.export._output`).

The records are encoded by the chosen core's encoder when it has one (``_core``), else by
the pure-Python one (:mod:`tidescope.export._tsformat`); both give the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

from tidescope.capture import _clock, _core
from tidescope.events import Event
from tidescope.export import _output, _tsformat

__all__ = ["SUFFIX", "TraceWriter", "encode_events_chunk"]

SUFFIX: Final = ".tstrace"

encode_events_chunk: Callable[..., bytes] = (
    _core.encode_events_chunk or _tsformat.encode_events_chunk
)
"""The EVENTS chunk encoder the writer uses: the C core's when built, else the pure one."""


def _writable(r: tuple[Any, ...]) -> bool:
    return len(r) == 11 or (len(r) == 2 and type(r[1]) is Event)


class TraceWriter:
    """Appends batches of events to one process's trace file, a chunk a batch.

    The file is created new, mode 0600, never through a symlink: if ``path`` is taken (by
    a file or a planted symlink) the writer uses ``<stem>-1.tstrace`` and so on;
    :attr:`path` is the name used. Each batch is one write, whole or not at all: a failed
    or short write is truncated back to the end of the last whole chunk. After such a fault
    the writer stops writing, says so once on stderr, and counts what it was handed in
    :attr:`events_not_written`; :attr:`write_error` says why. The closing stats still go in
    if they fit.

    With ``lazy``, the file is created at the first batch or count to write, or at
    :meth:`close` if the stats tell of a loss: a process that records nothing leaves no
    file (a crash-looping server's workers left thousands of empty ones).

    Raises:
        OSError: the file cannot be created (an unwritable directory, say); with ``lazy``,
            a later failure to create it is a write fault instead.
    """

    def __init__(
        self, path: str | os.PathLike[str], header: dict[str, Any], *, lazy: bool = False
    ) -> None:
        self._fd: int | None = None
        self.path = Path(path)
        self._init_counters()
        self._head: bytes | None = _tsformat.MAGIC + _tsformat.encode_header_chunk(header)
        if not lazy:
            self._fd, self.path = _output.create_file(path)
            self._open()

    @property
    def created(self) -> bool:
        """True once the file exists (a lazy writer's, at its first write)."""
        return self._fd is not None or self._size > 0

    def _open(self) -> None:
        """Create the file if it waits to be (lazy) and write its header."""
        head, self._head = self._head, None
        if head is None:
            return
        if self._fd is None:
            try:
                self._fd, self.path = _output.create_file(self.path)
            except OSError as exc:
                self._fault(
                    exc, f"cannot create {self.path}", consequence="this process is not recorded"
                )
                return
        self._write(head)

    @classmethod
    def unopened(cls, path: str | os.PathLike[str], error: OSError) -> TraceWriter:
        """A writer whose file could not be created: it counts what it is handed as not
        written (and says why, once); for a forked child whose directory is gone."""
        self = cls.__new__(cls)
        self._fd, self.path, self._head = None, Path(path), None
        self._init_counters()
        self._fault(error, f"cannot create {self.path}", consequence="this process is not recorded")
        return self

    def _init_counters(self) -> None:
        self.events_written = 0
        self.events_not_written = 0
        self.write_error: str | None = None
        self._size = 0  # where the last whole write ends
        self._seq = 0  # the next chunk's sequence number
        self._torn = False  # a failed write could not be cut back: never write again
        self._counts = (0, 0, 0)  # the totals of the last chunk written
        self.on_chunk: Callable[[bytes, int], None] | None = None
        """Handed each EVENTS write that went in (its chunks' bytes, its events): the live
        OTLP exporter's queue. It must return at once and never raise."""

    def _write(self, data: bytes | bytearray, *, chunks: int = 1, closing: bool = False) -> bool:
        """Append ``data`` (``chunks`` whole chunks) whole or not at all; True if it went in."""
        fd = self._fd
        if fd is None or self._torn or (self.write_error is not None and not closing):
            return False
        try:
            _output.append(fd, data)
        except OSError as exc:
            try:
                os.ftruncate(fd, self._size)
            except OSError:
                self._torn = True
            if self.write_error is None:
                if closing:
                    self._fault(exc, f"{self.path}", consequence="its closing stats are lost")
                else:
                    self._fault(
                        exc,
                        f"stopped writing {self.path}",
                        consequence="the events that follow are not recorded",
                    )
            return False
        self._size += len(data)
        self._seq += chunks
        return True

    def _fault(self, exc: OSError, what: str, *, consequence: str) -> None:
        self.write_error = _output.describe(exc)
        _output.notice(f"{what}: {self.write_error}; {consequence}")

    def write_records(
        self, records: Iterable[tuple[Any, ...]], *, dropped_events: int, internal_errors: int
    ) -> int:
        """Write a batch of ring records (``RingBuffer.drain_records``) as one EVENTS chunk
        with the totals after it, in one write; returns the events written.

        ``dropped_events`` and ``internal_errors`` are this process's running totals now.
        An empty batch writes a chunk of no events if the totals changed. An item that is
        not an event (``(position, x)`` with ``x`` no ``Event``) is left out.
        """
        if self.write_error is not None:  # stopped: count what is lost, encode nothing
            self.events_not_written += sum(1 for _ in records)
            return 0
        batch = records if type(records) is list else list(records)
        if not batch and (self.events_written, dropped_events, internal_errors) == self._counts:
            return 0
        self._open()
        offset = _clock.wall_offset
        try:
            chunks = self._encode(batch, dropped_events, internal_errors, offset)
        except TypeError:  # rare: something else was written to the ring
            batch = [r for r in batch if _writable(r)]
            chunks = self._encode(batch, dropped_events, internal_errors, offset)
        n = len(batch)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        # one write per batch, its counts included: a kill tears at most its last chunk
        if not self._write(data, chunks=len(chunks)):
            self.events_not_written += n
            return 0
        if self.on_chunk is not None and n:
            self.on_chunk(data, n)
        self.events_written += n
        self._counts = (self.events_written, dropped_events, internal_errors)
        return n

    def write_notes(self, notes: list[dict[str, Any]]) -> None:
        """Write thread and task notes (``take_notes``) as one NOTES chunk, with the totals
        of the last chunk; nothing if there are none or the writer has stopped."""
        if not notes or self.write_error is not None:
            return
        written, dropped, errors = self._counts
        data = _tsformat.encode_notes_chunk(
            notes, seq=self._seq, events_written=written, dropped_events=dropped,
            internal_errors=errors,
        )  # fmt: skip
        self._write(data)

    def write_encoded(
        self, records: bytes, n: int, *, dropped_events: int, internal_errors: int
    ) -> int:
        """:meth:`write_records` for ``n`` records the C ring encoded itself
        (``RingBuffer.drain_encoded``): framed as one EVENTS chunk, in one write."""
        if self.write_error is not None:
            self.events_not_written += n
            return 0
        if not n and (self.events_written, dropped_events, internal_errors) == self._counts:
            return 0
        self._open()
        assert _core.frame_events_chunk is not None  # only the C core's ring encodes
        data = _core.frame_events_chunk(
            records,
            n,
            seq=self._seq,
            events_written=self.events_written + n,
            dropped_events=dropped_events,
            internal_errors=internal_errors,
            wall_offset_ns=_clock.wall_offset,
        )
        if not self._write(data):
            self.events_not_written += n
            return 0
        if self.on_chunk is not None and n:
            self.on_chunk(data, n)
        self.events_written += n
        self._counts = (self.events_written, dropped_events, internal_errors)
        return n

    def _encode(
        self, batch: list[tuple[Any, ...]], dropped: int, errors: int, offset: int
    ) -> list[bytes]:
        return _encode(batch, self.events_written, self._seq, dropped, errors, offset)

    def abandon(self) -> None:
        """Close the descriptor without writing (a forked child's copy of the parent's file)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self, stats: dict[str, Any] | None = None) -> None:
        """Write the CLOSE chunk with ``stats`` (if given) and close the file; never raises.

        After a write fault the chunk, with ``events_not_written`` and ``write_error``, is
        still tried once. A file deleted while it was written counts its events as lost.
        """
        if self._head is not None:  # lazy, and nothing written yet
            if stats is None or not any(
                _count(stats.get(k), 0) for k in ("dropped_events", "internal_errors")
            ):
                self._head = None
                return  # nothing recorded, nothing lost: no file
            self._open()
        fd = self._fd
        if fd is None:
            return
        try:
            if os.fstat(fd).st_nlink == 0 and self.write_error is None:
                self.write_error = "the trace file was deleted during the run"
                self.events_not_written += self.events_written
                self.events_written = 0
                _output.notice(f"{self.path}: {self.write_error}; its events are lost")
        except OSError:
            pass
        if stats is not None:
            stats = {**stats, "events_not_written": self.events_not_written}
            if self.write_error is not None:
                stats["write_error"] = self.write_error
            _, dropped, errors = self._counts
            try:
                data = _tsformat.encode_close_chunk(
                    stats,
                    seq=self._seq,
                    events_written=self.events_written,
                    dropped_events=_count(stats.get("dropped_events"), dropped),
                    internal_errors=_count(stats.get("internal_errors"), errors),
                )
            except Exception:  # never raises; the file stays readable without it
                data = b""
            if data:
                # a file whose header never went in still starts as a trace
                self._write(_tsformat.MAGIC + data if not self._size else data, closing=True)
        self._fd = None
        try:
            os.close(fd)
        except OSError:
            pass


def _encode(
    batch: list[tuple[Any, ...]], written: int, seq: int, dropped: int, errors: int, offset: int
) -> list[bytes]:
    """``batch`` as EVENTS chunks from ``seq`` on, after ``written`` events: one chunk, or
    more if one would pass the format's size limit."""
    try:
        chunk = encode_events_chunk(
            batch,
            seq=seq,
            events_written=written + len(batch),
            dropped_events=dropped,
            internal_errors=errors,
            wall_offset_ns=offset,
        )
    except ValueError:
        if len(batch) <= 1:
            raise
    else:
        return [chunk]
    half = len(batch) // 2
    first = _encode(batch[:half], written, seq, dropped, errors, offset)
    return first + _encode(batch[half:], written + half, seq + len(first), dropped, errors, offset)


def _count(value: Any, default: int) -> int:
    return value if type(value) is int and 0 <= value < 1 << 64 else default
