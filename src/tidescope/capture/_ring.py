"""The pure-Python ring buffer: bounded, multi-writer, with a consuming drain and lap accounting.

Storage. Each slot holds one tuple whose first item is the slot's position: the sequence
stamp, written in the same store as the data (one reference store is atomic under the
GIL), so a reader can tell a current slot (stamp == position), an overwritten one
(stamp > position) and one claimed but not yet filled (stamp < position, or empty).
Events written with ``write()`` are stored as ``(pos, event)``; the report path stores a
flat record ``(pos, event_id, timestamp, thread_id, task_id, correlation_id, parent_id,
call_id, ast_node_id, event_type, data)`` and the ``Event`` object is built when it is
read: a 13-slot ``Event.__init__`` costs about 310 ns on 3.11 against 85 ns for the tuple
(bench/RESULTS.md), and a flight recorder never reads most of what it records.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from tidescope.capture import _clock
from tidescope.events import Event, EventType

__all__ = ["OVERFLOW_STRATEGIES", "RingBuffer", "RingBufferError", "ring_class"]

_monotonic_ns = _clock.monotonic_ns
OVERFLOW_STRATEGIES: Final = ("drop_oldest", "drop_newest", "block")
_DEFAULT_BLOCK_TIMEOUT: Final = 0.1
_ABANDONED: Final = object()  # published by a writer interrupted after claiming its slot


class RingBufferError(ValueError):
    """Invalid ring-buffer arguments; ``reason`` is the seed's error atom as a string."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _RingLogic:
    """A bounded, multi-writer event ring with a consuming drain and any number of readers.

    Args:
        size: slots; a positive power of two.
        overflow_strategy: ``"drop_oldest"`` overwrites the oldest event (a flight
            recorder); ``"drop_newest"`` rejects the new event; ``"block"`` waits up to
            ``block_timeout`` seconds for the drain to make room, then rejects. Rejections
            and overwrites are counted in ``dropped_events``.
        block_timeout: seconds a ``block`` write may wait. After one write has waited in
            vain, later writes drop at once until the drain moves again, so a dead consumer
            costs the program one timeout, not one per event.

    Raises:
        RingBufferError: ``reason`` is ``"invalid_size"``, ``"size_must_be_power_of_2"``,
            ``"invalid_overflow_strategy"`` or ``"invalid_block_timeout"``.

    Positions count writes from 0 and never wrap. ``drain()`` is the consumer: it advances
    ``read_position``, against which ``drop_newest`` and ``block`` measure fullness.
    ``read()`` and ``read_batch()`` take the reader's own position and consume nothing.
    """

    if not TYPE_CHECKING:  # the concrete classes declare the slots (a C base has its own)
        __slots__ = ()

    # storage operations: _PyStorage below, or the C accelerator's RingStorage
    _fast: bool
    _lock: threading.Lock
    _read_lock: threading.RLock
    _space: threading.Condition
    _mask: int
    _size: int
    _strategy: str
    _timeout: float
    _pid: int
    _node: str
    _waiters: int
    _w: int
    _r: int
    _rejected: int
    _lapped: int
    _discarded: int
    _consumed: int
    _total_reads: int
    _stalled_r: int
    _closed: bool
    _wake: Callable[[], object] | None
    _wake_pos: int

    def _new_storage(self, size: int) -> None:
        raise NotImplementedError

    def _wipe_storage(self) -> None:
        raise NotImplementedError

    def _claimed(self) -> int:
        raise NotImplementedError

    def _put(self, payload: tuple[Any, ...]) -> bool:
        raise NotImplementedError

    def _store(self, pos: int, payload: tuple[Any, ...]) -> bool:
        raise NotImplementedError

    def _store_abandoned(self, pos: int) -> None:
        raise NotImplementedError

    def _set_wake(
        self, position: int, callback: Callable[[], object] | None, wait_at: int, wait: float
    ) -> None:
        raise NotImplementedError

    def _scan(self, p: int, count: int) -> tuple[list[Any], int, int]:
        raise NotImplementedError

    def _scan_events(self, p: int, count: int) -> tuple[list[Any], int, int]:
        raise NotImplementedError

    def __init__(
        self,
        size: int = 1024,
        overflow_strategy: str = "drop_oldest",
        block_timeout: float = _DEFAULT_BLOCK_TIMEOUT,
    ) -> None:
        if type(size) is not int or size <= 0:
            raise RingBufferError(
                "invalid_size", f"size must be a positive integer power of two, got {size!r}"
            )
        if size & (size - 1):
            raise RingBufferError(
                "size_must_be_power_of_2",
                f"size must be a power of two (for example {1 << size.bit_length()}), got {size}",
            )
        if overflow_strategy not in OVERFLOW_STRATEGIES:
            raise RingBufferError(
                "invalid_overflow_strategy",
                f"overflow_strategy must be one of {', '.join(map(repr, OVERFLOW_STRATEGIES))}"
                f", got {overflow_strategy!r}",
            )
        if (
            type(block_timeout) not in (int, float)
            or not block_timeout >= 0
            or block_timeout == float("inf")
        ):
            raise RingBufferError(
                "invalid_block_timeout",
                f"block_timeout must be a finite number of seconds >= 0, got {block_timeout!r}",
            )
        self._size = size
        self._mask = size - 1
        self._strategy = overflow_strategy
        self._timeout = float(block_timeout)
        self._lock = threading.Lock()  # claims under drop_newest/block, rejection counts
        # the drain's cursor and read statistics; re-entrant so that a SIGTERM handler can
        # flush the trace even when it interrupted a read on the same thread
        self._read_lock = threading.RLock()
        self._space = threading.Condition(threading.Lock())  # block writers wait here
        self._pid = _clock.pid()
        self._node = _clock.node()
        self._waiters = 0  # block writers waiting now; clear() must not reset it
        self._wake = None
        self._wake_pos = -1
        self._set_wake(-1, None, -1, 0.0)
        self._reset()

    def _reset(self) -> None:
        # drop_oldest claims with one atomic step in the storage; the others claim under
        # _lock so the fullness check and the claim are one step (the seed's CAS loop).
        self._new_storage(self._size)
        self._w = 0
        self._r = 0
        self._rejected = 0
        self._lapped = 0
        self._discarded = 0
        self._consumed = 0
        self._total_reads = 0
        self._stalled_r = -1
        self._closed = False
        self._fast = self._strategy == "drop_oldest"

    # -- properties ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of slots."""
        return self._size

    @property
    def overflow_strategy(self) -> str:
        """``"drop_oldest"``, ``"drop_newest"`` or ``"block"``."""
        return self._strategy

    @property
    def block_timeout(self) -> float:
        """Seconds a ``block`` write may wait."""
        return self._timeout

    @property
    def read_position(self) -> int:
        """The drain's cursor: every position before it was consumed or counted as dropped."""
        return self._r

    @property
    def write_position(self) -> int:
        """Positions claimed by writers so far."""
        if self._strategy == "drop_oldest":
            return self._claimed()
        return self._w

    # -- writing ------------------------------------------------------------------------

    def write(self, event: Any) -> bool:
        """Write one event; False when it was dropped (and counted). Never raises."""
        return self._put((event,))

    def _put_slow(self, payload: tuple[Any, ...]) -> bool:
        """Write ``(pos, *payload)`` under drop_newest/block, or count a write after destroy."""
        pos = self._claim_bounded()
        if pos < 0:
            return False
        try:
            self._store(pos, payload)
        except BaseException:
            # A signal between claim and store must not leave a hole the drain waits on.
            self._store_abandoned(pos)
            raise
        if pos == self._wake_pos:  # stored, and no lock held: the callback may read
            self._high_water()
        return True

    def _claim_bounded(self) -> int:
        with self._lock:
            if self._closed:
                self._rejected += 1
                return -1
            w = self._w
            if w - self._r < self._size:
                self._w = w + 1
                return w
            if self._strategy == "drop_newest" or self._timeout == 0 or self._stalled_r == self._r:
                self._rejected += 1
                return -1
        return self._claim_blocking()

    def _claim_blocking(self) -> int:
        deadline = _monotonic_ns() + int(self._timeout * 1e9)
        with self._space:
            self._waiters += 1
            try:
                while True:
                    with self._lock:
                        if self._closed:
                            self._rejected += 1
                            return -1
                        w = self._w
                        if w - self._r < self._size:
                            self._w = w + 1
                            return w
                        remaining = deadline - _monotonic_ns()
                        if remaining <= 0:
                            self._stalled_r = self._r  # until the drain moves: drop at once
                            self._rejected += 1
                            return -1
                    self._space.wait(remaining / 1e9)
            finally:
                self._waiters -= 1

    def wake_at(
        self,
        position: int,
        callback: Callable[[], object] | None,
        *,
        wait_at: int = -1,
        wait: float = 0.0,
    ) -> None:
        """Have the writer that claims ``position`` call ``callback()`` (the drain's wake-up
        when the buffer fills; None or a position already claimed: no call).

        The call is made from the writing thread right after its write, once: it must be
        quick and must not block (a lock's ``release``). What it raises is ignored. Costs
        the writers one comparison per write. On the C core, the writer that then claims
        ``wait_at`` waits, at most ``wait`` seconds with the GIL released, for the next
        ``wake_at()`` (the drain's next pass), once.
        """
        self._wake = callback
        self._wake_pos = position if callback is not None else -1
        # the fast paths' copy (the C storage's)
        self._set_wake(self._wake_pos, callback, wait_at, float(wait))

    def _high_water(self) -> None:
        wake = self._wake
        if wake is not None:
            try:
                wake()
            except Exception:  # never raised into the writer
                pass

    # -- reading ------------------------------------------------------------------------

    def read(self, position: int = 0) -> tuple[Event, int] | None:
        """The event at ``position`` and the position after it, or None if there is none yet.

        If writers lapped ``position``, the oldest event still held is returned instead:
        ``next_position - position - 1`` events were missed. A newer event is never
        returned in place of an older one.
        """
        got = self.read_batch(position, 1)
        if not got[0]:
            return None
        return got[0][0], got[1]

    def read_batch(self, start_position: int, count: int) -> tuple[list[Event], int]:
        """Up to ``count`` events from ``start_position``, without consuming them.

        Returns ``(events, new_position)``; ``new_position - start_position - len(events)``
        is exactly the number of events this reader missed because writers lapped it.
        """
        if type(start_position) is not int or start_position < 0:
            raise ValueError(f"start_position must be an int >= 0, got {start_position!r}")
        if type(count) is not int or count < 0:
            raise ValueError(f"count must be an int >= 0, got {count!r}")
        events, pos, _ = self._scan_events(start_position, count)
        if events:
            with self._read_lock:
                self._total_reads += len(events)
        return events, pos

    def drain(self, max_count: int | None = None) -> list[Event]:
        """Consume up to ``max_count`` events (all available if None), advancing ``read_position``.

        Events writers overwrote before the drain reached them are counted in
        ``dropped_events``. Safe to call from several threads; each event goes to one caller.
        """
        return self._consume(max_count, self._scan_events)

    def drain_records(self, max_count: int | None = None) -> list[tuple[Any, ...]]:
        """:meth:`drain`, but the raw slots, for writers that encode them directly.

        Each item is ``(position, event_id, timestamp, thread_id, task_id, correlation_id,
        parent_id, call_id, ast_node_id, event_type, data)`` as the report path stored it
        (``data`` a dict, or a 4-tuple for function entries and exits), or ``(position,
        event)`` for an event written with :meth:`write`. Building no ``Event`` objects
        saves about 1.8 µs an event in the pure core.
        """
        return self._consume(max_count, self._scan)

    def drain_encoded(self, max_count: int | None = None) -> tuple[bytes, int]:
        """:meth:`drain_records`, encoded: the records of one EVENTS chunk of the binary trace
        (``docs/trace-format.md``) and how many there are, for the C core's
        ``frame_events_chunk``. The slots are encoded straight from the ring, with no
        Python object built for their machine values; an object written with :meth:`write`
        that is no ``Event`` is consumed and left out. Fewer than ``max_count`` are taken
        when the chunk would pass 32 MiB.

        Raises:
            NotImplementedError: on the pure core, which encodes :meth:`drain_records`
                (``export._tsformat.encode_events_chunk``).
        """
        if max_count is not None and (type(max_count) is not int or max_count < 0):
            raise ValueError(f"max_count must be an int >= 0 or None, got {max_count!r}")
        with self._read_lock:
            start = self._r
            count = self._size if max_count is None else max_count
            records, n, pos, consumed = self._scan_encoded(start, count)
            self._account(start, pos, consumed)
        if self._waiters and pos != start:
            with self._space:
                self._space.notify_all()
        return records, n

    def _scan_encoded(self, p: int, count: int) -> tuple[bytes, int, int, int]:
        raise NotImplementedError("the pure core encodes drain_records()")

    def _account(self, start: int, pos: int, consumed: int) -> None:
        # abandoned slots are counted as lapped, through the position gap
        self._lapped += pos - start - consumed
        self._r = pos
        self._consumed += consumed
        self._total_reads += consumed

    def _consume(
        self, max_count: int | None, scan: Callable[[int, int], tuple[list[Any], int, int]]
    ) -> list[Any]:
        if max_count is not None and (type(max_count) is not int or max_count < 0):
            raise ValueError(f"max_count must be an int >= 0 or None, got {max_count!r}")
        with self._read_lock:
            start = self._r
            raw, pos, _ = scan(start, self._size if max_count is None else max_count)
            self._account(start, pos, len(raw))
        if self._waiters and pos != start:
            with self._space:
                self._space.notify_all()
        return raw

    def _materialize(self, s: tuple[Any, ...]) -> Event:
        if len(s) == 2:
            return s[1]  # type: ignore[no-any-return]
        return _event_from_record(s, self._node, self._pid)

    # -- bookkeeping --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters; at any quiet moment ``total_writes == consumed_events + dropped_events
        + available_events``."""
        with self._read_lock:
            r = self._r
            w = self.write_position
            pending = w - r
            available = min(pending, self._size)
            overwritten = pending - available
            return {
                "size": self._size,
                "overflow_strategy": self._strategy,
                "write_position": w,
                "read_position": r,
                "available_events": available,
                "total_writes": w + self._rejected,
                "total_reads": self._total_reads,
                "consumed_events": self._consumed,
                "dropped_events": self._rejected + self._lapped + self._discarded + overwritten,
                "rejected_events": self._rejected,
                "overwritten_events": self._lapped + overwritten,
                "utilization": available / self._size,
                "destroyed": self._closed,
            }

    def clear(self) -> None:
        """Discard every event and reset every counter to zero.

        Meant for a quiet buffer (between tests or runs): a write racing ``clear()`` may
        land in the old storage and be lost without being counted.
        """
        with self._read_lock, self._lock:
            closed = self._closed
            self._reset()
            self._closed = closed
            self._fast = self._fast and not closed
        with self._space:
            self._space.notify_all()

    def destroy(self) -> None:
        """Free the storage; later writes are dropped and counted, never raised."""
        with self._read_lock, self._lock:
            self._closed = True
            self._fast = False
            w = self.write_position
            self._discarded += w - self._r
            self._r = w
            self._wipe_storage()
        with self._space:
            self._space.notify_all()

    def __len__(self) -> int:
        return int(self.stats()["available_events"])

    def __repr__(self) -> str:
        return (
            f"RingBuffer(size={self._size}, overflow_strategy={self._strategy!r}, "
            f"write_position={self.write_position}, read_position={self._r})"
        )


_LOGIC_SLOTS: Final = (
    "__weakref__",
    "_closed",
    "_consumed",
    "_discarded",
    "_lapped",
    "_lock",
    "_mask",
    "_node",
    "_pid",
    "_r",
    "_read_lock",
    "_rejected",
    "_size",
    "_space",
    "_stalled_r",
    "_strategy",
    "_timeout",
    "_total_reads",
    "_w",
    "_waiters",
    "_wake",
    "_wake_pos",
)


class RingBuffer(_RingLogic):
    __doc__ = _RingLogic.__doc__
    __slots__ = (*_LOGIC_SLOTS, "_claim", "_fast", "_slots")

    # Storage: a list of slot tuples and an itertools.count whose next() is the atomic claim.

    def _new_storage(self, size: int) -> None:
        self._slots: list[Any] = [None] * size
        self._claim = itertools.count()

    def _wipe_storage(self) -> None:
        self._slots = [None] * self._size

    def _claimed(self) -> int:
        # itertools.count has no reader; its repr is "count(N)" on every CPython.
        return int(repr(self._claim)[6:-1])

    def _claim_next(self) -> int:
        """Claim a position without storing (tests: a writer descheduled after its claim)."""
        return next(self._claim)

    def _set_wake(
        self, position: int, callback: Callable[[], object] | None, wait_at: int, wait: float
    ) -> None:
        pass  # the fast paths read _wake_pos themselves; pure writers never wait

    def _put(self, payload: tuple[Any, ...]) -> bool:
        """Write ``(pos, *payload)`` under any strategy (``write`` and the ingestor)."""
        if self._fast:
            pos = next(self._claim)
            try:
                slots = self._slots
                i = pos & self._mask
                old = slots[i]
                if old is None or old[0] < pos:  # as _store, inlined: this is the hot path
                    slots[i] = (pos, *payload)
            except BaseException:
                # a payload rejected (or a signal) after the claim must not leave a hole
                # that readers wait on until the ring wraps
                self._store_abandoned(pos)
                raise
            if pos == self._wake_pos:
                self._high_water()
            return True
        return self._put_slow(payload)

    def _store(self, pos: int, payload: tuple[Any, ...]) -> bool:
        """Store ``(pos, *payload)`` in its slot unless a newer position is there already.

        A writer descheduled between claim and store may have been lapped: its event is
        then older than the slot's and is lost (readers count it from the gap); storing it
        would hide the newer event behind an apparently unfilled slot.
        """
        slots = self._slots
        i = pos & self._mask
        old = slots[i]
        if old is None or old[0] < pos:
            slots[i] = (pos, *payload)
            return True
        return False

    def _store_abandoned(self, pos: int) -> None:
        self._store(pos, (_ABANDONED,))  # unless lapped, as any store

    def _scan_events(self, p: int, count: int) -> tuple[list[Any], int, int]:
        """:meth:`_scan` with each slot built into its ``Event`` (or the written object)."""
        raw, p, abandoned = self._scan(p, count)
        return [self._materialize(s) for s in raw], p, abandoned

    def _scan(self, p: int, count: int) -> tuple[list[Any], int, int]:
        """Collect up to ``count`` current slots from position ``p``.

        Returns ``(slots, new_position, abandoned)``. Overwritten positions are skipped (the
        caller counts them from the position gap); a slot claimed but not yet filled ends
        the scan so it is read next time, never skipped.
        """
        slots = self._slots
        mask = self._mask
        size = self._size
        out: list[Any] = []
        abandoned = 0
        while len(out) < count:
            s = slots[p & mask]
            if s is None:
                break
            q = s[0]
            if q == p:
                if s[1] is _ABANDONED:
                    abandoned += 1
                else:
                    out.append(s)
                p += 1
            elif q > p:
                # Position q is published, so every position up to q - size was overwritten
                # (or is being overwritten by a writer holding a claim): all lost to us.
                p = max(p + 1, q - size + 1)
            else:
                break
        return out, p, abandoned


def ring_class(storage: type) -> type[_RingLogic]:
    """The ``RingBuffer`` class over another storage (the C accelerator's ``RingStorage``).

    The storage comes first in the method order, so its ``write``, ``_put``, ``_store`` and
    ``_scan`` replace the pure ones; everything else (checks, locks, stats, block) is shared.
    """
    ns = {"__slots__": _LOGIC_SLOTS, "__doc__": _RingLogic.__doc__, "__module__": __name__}
    return type("RingBuffer", (storage, _RingLogic), ns)


# Record layout after the position stamp: ``data`` is a dict, or for the two hottest types a
# 4-tuple turned into a dict here (the report path avoids building a dict per event).
_FUNCTION_ENTRY: Final = EventType.FUNCTION_ENTRY
_FUNCTION_EXIT: Final = EventType.FUNCTION_EXIT


def _event_from_record(s: tuple[Any, ...], node_name: str, pid: int) -> Event:
    _, eid, ts, thread_id, task_id, corr, parent, call, ast_id, etype, data = s
    if type(data) is tuple:
        # identity tests, not a dict keyed by type (Enum.__hash__ is a Python call), and
        # dict displays, not dict(zip()) (a quarter of the cost)
        a, b, c, d = data
        if etype is _FUNCTION_ENTRY:
            data = {"module": a, "function": b, "arity": c, "args": d}
        else:
            data = {"return_value": a, "exception": b, "duration_ns": c, "exit_reason": d}
    return Event(
        eid, ts, ts + _clock.wall_offset, node_name, pid, thread_id, task_id, corr, parent, call,
        ast_id, etype, data,
    )  # fmt: skip
