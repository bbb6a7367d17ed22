"""The drain: a background thread that empties the capture buffer into a trace file."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tidescope.capture import _core
from tidescope.capture.context import instrumentation_disabled
from tidescope.capture.ring_buffer import RingBuffer
from tidescope.export import _output
from tidescope.export.writer import SUFFIX, TraceWriter

__all__ = ["Drain"]


# Signals a fault raises in the thread that caused it: those stay deliverable here.
_SYNCHRONOUS_SIGNALS = frozenset(
    getattr(signal, name)
    for name in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT", "SIGTRAP", "SIGSYS")
    if hasattr(signal, name)
)


def _leave_signals_to_the_program() -> None:
    """Block process-directed signals in this (the drain's) thread, so the kernel hands them
    to a thread of the program. Delivered here, a signal with a Python handler would only
    set a flag for the main thread: a main thread blocked in a lock or a read (a pool
    worker waiting for a task, then ``terminate()``) would never run the handler, and the
    process would never end."""
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals() - _SYNCHRONOUS_SIGNALS)
    except (AttributeError, OSError, ValueError):  # no POSIX threads' signal masks here
        pass


def _otlp_config() -> Any:
    """The active session's Config when it asks for live OTLP export, else None."""
    from tidescope import _session  # noqa: PLC0415 - the package imports this module

    session = _session.active_session()
    if session is None or session.config.otlp_endpoint is None:
        return None
    return session.config


class Drain:
    """Moves events from the registered buffer to ``<directory>/events-<pid>.tstrace``.

    Every ``interval`` seconds, sooner when stopped or when the buffer passes a quarter
    full (the writer that crosses that mark wakes the thread), it drains what is there and
    writes it as chunks with the loss counts so far, and resamples the wall clock offset.
    A pass takes all that waits in one read, ``batch`` events at least: each write lets
    the GIL go, and a busy program holds it for a switch interval (5 ms) before the thread
    gets it back, so a pass of small batches would fall behind any program that records
    faster than a batch per interval. On the pure core the writer that crosses the mark
    makes the pass itself. :meth:`stop` closes the file with the session's stats. The
    thread never captures itself. After ``os.fork()`` the child gets a drain of its own writing
    its own file (the parent's thread does not exist there). An output fault stops the
    writing, never the draining: the program never waits on a full disk, and what is lost
    is counted (see :class:`TraceWriter`). When the active session's Config has an
    ``otlp_endpoint``, the writer hands each chunk it wrote to a live OTLP exporter with a
    thread and a bounded queue of its own (``docs/otlp.md``); :meth:`stop` waits for it at
    most ``otlp_timeout`` seconds and puts its counts in the closing stats.

    Args:
        directory: where trace files go; made absolute, and created (mode 0700) if
            missing.
        buffer: the buffer to empty (default: the one registered now, by ``start()``).
        interval: seconds between passes.
        batch: the fewest events a read takes (more when more wait).
        header: extra fields for the file header.
        pace: when the drain thread is slow to come (a machine short of CPU), have the
            C core's writer that reaches three quarters of the buffer wait for its pass,
            at most ``interval`` seconds with the GIL released, once per pass, rather than
            drop. Off by default, where invariant 1 holds as written (a report blocks only
            under the ``block`` strategy); ``tidescope run``, which records to keep
            everything, turns it on.
        lazy: create the file only when there is something to write (see
            :class:`TraceWriter`), so a process that records nothing leaves no file. A
            forked child's drain is always lazy: a server whose workers die as they start
            leaves no pile of empty files.

    Raises:
        OSError: the directory cannot be created or written.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        buffer: RingBuffer | None = None,
        interval: float = 0.05,
        batch: int = 4096,
        header: dict[str, Any] | None = None,
        pace: bool = False,
        lazy: bool = False,
    ) -> None:
        self.directory = _output.make_directory(directory)  # absolute: children may chdir
        # held, not looked up: stop() unregisters the buffer before the last pump
        self.buffer = buffer if buffer is not None else _core.get_buffer()
        self.interval = interval
        self.batch = batch
        self.pace = pace
        self._header = dict(header or {})
        self._stop = threading.Event()
        self._wake = self._new_wake()
        self._pass_lock = threading.RLock()
        self._pumping: int | None = None  # the thread in a pass
        self._thread: threading.Thread | None = None
        self.peak_backlog = 0  # the most events seen waiting in (or lost from) the buffer
        self.notes_lost = 0  # thread and task notes past MAX_NOTES between two passes
        self.writer = self._open_writer(lazy=lazy)
        self.otlp: Any = None  # the live OTLP exporter (export/_otlp_live.py), if configured
        self._otlp_config = _otlp_config()
        if self._otlp_config is not None:
            self._start_otlp()
        self.errors = 0
        self._started_ns = time.monotonic_ns()
        self._closing = False
        self._mp_hooked = False
        self._rejected = 0  # the buffer's rejections at the last read
        # the C ring encodes its slots itself; the pure one hands records to the writer
        self._encoded = _core.frame_events_chunk is not None
        os.register_at_fork(after_in_child=self._after_fork_in_child)

    def _path(self) -> Path:
        return self.directory / f"events-{os.getpid()}{SUFFIX}"

    def _open_writer(self, *, lazy: bool) -> TraceWriter:
        from tidescope import __version__  # noqa: PLC0415 - the package imports this module

        pid = os.getpid()
        header = {
            "pid": pid,
            "ppid": os.getppid(),
            "node": _core.node(),
            "started_wall_ns": time.time_ns(),
            "started_monotonic_ns": time.monotonic_ns(),
            "argv": list(sys.argv),
            "python": sys.version.split()[0],
            "core": _core.CORE_NAME,
            "tidescope": __version__,
            **self._header,
        }
        return TraceWriter(self._path(), header, lazy=lazy)

    def _start_otlp(self) -> None:
        """Export live what the writer writes (``otlp_endpoint`` of the session's Config)."""
        from tidescope.export._otlp_live import LiveExport  # noqa: PLC0415
        from tidescope.export.otlp import limits_of  # noqa: PLC0415

        cfg = self._otlp_config
        header = {"pid": os.getpid(), "node": _core.node(), "argv": list(sys.argv)}
        if self.otlp is not None:
            self.otlp = self.otlp.forked(self.writer.path.name, header)
        else:
            self.otlp = LiveExport(
                cfg.otlp_endpoint,
                limits_of(cfg),
                timeout=cfg.otlp_timeout,
                trace_file=self.writer.path.name,
                header={**header, **self._header},
            )
        self.writer.on_chunk = self.otlp.offer

    def start(self) -> Drain:
        """Start the background thread (returns self)."""
        self._thread = threading.Thread(target=self._run, name="tidescope-drain", daemon=True)
        self._thread.start()
        if not self._mp_hooked:
            import multiprocessing.util  # noqa: PLC0415 - cheap, and multiprocessing may come later

            multiprocessing.util.register_after_fork(self, Drain._after_multiprocessing_fork)
            self._mp_hooked = True
        return self

    @staticmethod
    def _new_wake() -> threading.Lock:
        # a held lock the thread waits on and a writer releases: a release is C with no
        # Python code, so it runs in any writer (a signal handler's, a finalizer's)
        wake = threading.Lock()
        wake.acquire()
        return wake

    def _wake_up(self) -> None:
        with contextlib.suppress(RuntimeError):  # released already: a pass is coming
            self._wake.release()

    def _run(self) -> None:
        _leave_signals_to_the_program()
        with instrumentation_disabled():
            while not self._stop.is_set():
                if not self._arm():
                    self._wake.acquire(timeout=self.interval)
                if self._stop.is_set():
                    break
                self.pump()
            self.pump()

    def _pass_here(self) -> None:
        """A pass in the writing thread that filled a quarter of the buffer (pure core)."""
        if self._stop.is_set() or self._pumping == threading.get_ident():
            return  # a writer inside a pass of this thread's (a signal handler's, say)
        with instrumentation_disabled():
            self.pump()
            self._arm()

    def _arm(self) -> bool:
        """Have the writer that fills a quarter of the buffer wake the thread; True if the
        buffer is that full already (then the next pass is now)."""
        buf = self.buffer
        if buf is None:
            return False
        try:
            mark = buf.read_position + max(buf.size // 4, 1)
            # the C core's writers only wake the thread (a lock's release, C code); the pure
            # core's drain encodes in Python about as fast as the pure core records, so
            # with the GIL shared by turns it falls behind: its writers pass it themselves
            # and when the thread is slow to come (a machine short of CPU), the C core's
            # writer at three quarters waits for its pass, an interval at most, once
            buf.wake_at(
                mark,
                self._wake.release if self._encoded else self._pass_here,
                wait_at=buf.read_position + buf.size * 3 // 4 if self.pace else -1,
                wait=self.interval if self.pace else 0.0,
            )
            return bool(buf.write_position >= mark)
        except Exception:  # not a RingBuffer of ours: the timed passes only
            self.errors += 1
            return False

    def pump(self) -> int:
        """Drain everything available now into the file; returns the events written."""
        if self._holds_read_lock():  # a stop from a signal handler: see there
            return self._pump()
        with self._pass_lock:  # one pass at a time: chunks go out in their order
            self._pumping = threading.get_ident()
            try:
                return self._pump()
            finally:
                self._pumping = None

    def _pump(self) -> int:
        total = 0
        buf = self.buffer
        if buf is None:
            return 0
        _core.resync_clock()
        try:
            if self._encoded:
                return total + self._pump_encoded(buf)
            while True:
                records = buf.drain_records(self._take(buf))
                self._write_notes()
                # the totals after this batch ride in its write (a lone line if they moved)
                total += self.writer.write_records(
                    records,
                    dropped_events=buf.stats()["dropped_events"],
                    internal_errors=_core.internal_errors()[0],
                )
                if not records:
                    return total
        except Exception:  # never kills the program; counted (output faults: the writer's)
            self.errors += 1
            return total

    def _pump_encoded(self, buf: RingBuffer) -> int:
        total = 0
        while True:
            before = buf.read_position
            try:
                records, n = buf.drain_encoded(self._take(buf))
            except NotImplementedError:  # a pure ring on the C core (a test's, say)
                self._encoded = False
                return total + self._pump()
            self._write_notes()
            total += self.writer.write_encoded(
                records,
                n,
                dropped_events=buf.stats()["dropped_events"],
                internal_errors=_core.internal_errors()[0],
            )
            if buf.read_position == before:  # (a batch of stray objects encodes to none)
                return total

    def _write_notes(self) -> None:
        """The thread and task notes taken after a batch: every note of a thread or task
        whose events are in it was made before them, so it goes in before them."""
        notes, lost = _core.take_notes()
        self.notes_lost += lost
        self.writer.write_notes(notes)

    def _take(self, buf: RingBuffer) -> int:
        """How many to read now: all that waits, ``batch`` at least; notes the peak."""
        stats = buf.stats()
        waiting = stats["write_position"] - stats["read_position"]
        demand = waiting + stats["rejected_events"] - self._rejected
        self._rejected = stats["rejected_events"]
        self.peak_backlog = max(self.peak_backlog, demand)
        return max(self.batch, min(int(waiting), buf.size))

    def stop(self, stats: dict[str, Any] | None = None, *, timeout: float | None = None) -> None:
        """Stop the thread, write what is left, close the file with ``stats``.

        Args:
            timeout: seconds to wait for the thread's pass in progress (None: as long as it
                takes); past them, what is left is written from here all the same. A stop
                from a signal handler bounds the wait, since the thread could need a lock the
                interrupted code holds.
        """
        self._closing = True
        self._stop.set()
        self._wake_up()
        if self._thread is not None and self._thread.is_alive() and not self._holds_read_lock():
            self._thread.join(timeout)
        self.pump()
        if self.otlp is not None:
            otlp = self.otlp.close()
            if stats is not None:
                stats = {**stats, **otlp.as_stats()}
        if stats is not None:
            stats = {
                **stats,
                "events_written": self.writer.events_written,
                "drain_errors": self.errors,
                "peak_backlog": self.peak_backlog,
                "duration_s": (time.monotonic_ns() - self._started_ns) / 1e9,
            }
        self.writer.close(stats)

    def _holds_read_lock(self) -> bool:
        # A stop from a signal handler that interrupted this thread inside a read of the
        # buffer (stats, a pass of its own) must not wait for the drain thread: that may be
        # waiting for the read lock this thread holds. The lock is re-entrant, so the last
        # pass here goes on; the process dies after it, the drain thread never resumes.
        owned = getattr(getattr(self.buffer, "_read_lock", None), "_is_owned", None)
        try:
            return bool(owned()) if owned is not None else False
        except Exception:
            return False

    def _after_fork_in_child(self) -> None:
        if self._thread is None or self._stop.is_set():
            return  # never started, or already stopped in the parent
        self.writer.abandon()  # the parent's file: its descriptor is closed, nothing written
        self._started_ns = time.monotonic_ns()
        self.buffer = _core.get_buffer()  # the core gave the child a fresh one
        self._closing = False
        self._stop = threading.Event()
        self._wake = self._new_wake()
        self._pass_lock = threading.RLock()
        self._pumping = None
        self.peak_backlog = self._rejected = 0
        try:
            self.writer = self._open_writer(lazy=True)
        except OSError as exc:  # the directory went away: drain anyway, count the loss
            self.writer = TraceWriter.unopened(self._path(), exc)
        if self.otlp is not None:
            try:
                self._start_otlp()
            except Exception:  # the child records all the same, without live export
                self.otlp = None
                self.errors += 1
        self.start()

    def _after_multiprocessing_fork(self) -> None:
        # multiprocessing's forked children leave through os._exit after running their
        # finalizers, never through atexit: flush there. (A finalizer registered by the
        # os-level fork hook would not survive: the child's bootstrap clears the registry
        # before it runs these after-fork callbacks.)
        import multiprocessing.util  # noqa: PLC0415

        # bound, so that a subclass's _final_stop is the one called
        multiprocessing.util.Finalize(self, self._final_stop, exitpriority=-100)

    def _final_stop(self) -> None:
        from tidescope import _session  # noqa: PLC0415

        self.stop(_session.stats())
