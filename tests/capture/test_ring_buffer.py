"""Tests of the bounded event ring: arguments, overflow strategies, lap accounting, the
consuming drain, statistics, clear/destroy, concurrency and a stateful model check."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tidescope.capture.ring_buffer import RingBuffer, RingBufferError

STRATEGIES = ("drop_oldest", "drop_newest", "block")
STATS_KEYS = {
    "size",
    "write_position",
    "read_position",
    "available_events",
    "total_writes",
    "total_reads",
    "dropped_events",
    "utilization",
    "consumed_events",
    "rejected_events",
    "overwritten_events",
    "destroyed",
}


# -- helpers ------------------------------------------------------------------------------


def assert_accounting(buf: RingBuffer) -> dict[str, Any]:
    """The identity that must hold at any quiet moment; returns the stats checked."""
    s = buf.stats()
    assert s["total_writes"] == s["consumed_events"] + s["dropped_events"] + s["available_events"]
    assert 0 <= s["available_events"] <= s["size"]
    assert s["utilization"] == s["available_events"] / s["size"]
    assert s["dropped_events"] >= s["rejected_events"] + s["overwritten_events"]
    return s


def write_all(buf: RingBuffer, events: list[Any]) -> list[bool]:
    return [buf.write(e) for e in events]


def drain_until_empty(buf: RingBuffer) -> list[Any]:
    out: list[Any] = []
    while True:
        got = buf.drain()
        if not got:
            return out
        out.extend(got)


class ThreadRunner:
    """Starts threads that record their exception instead of letting it escape (which
    pytest's -W error would turn into a failure far from its cause)."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self.results: dict[Any, Any] = {}

    def start(self, key: Any, fn: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                self.results[key] = fn()
            except BaseException as exc:
                self.errors.append(exc)

        t = threading.Thread(target=run, daemon=True)
        self.threads.append(t)
        t.start()

    def join(self, timeout: float = 60.0) -> None:
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "a test thread did not finish"
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def runner() -> Any:
    r = ThreadRunner()
    yield r
    for t in r.threads:
        t.join(10)


# -- construction -------------------------------------------------------------------------


def test_defaults_are_size_1024_drop_oldest_and_timeout_0_1() -> None:
    buf = RingBuffer()
    assert buf.size == 1024
    assert buf.overflow_strategy == "drop_oldest"
    assert buf.block_timeout == pytest.approx(0.1)
    s = buf.stats()
    assert s["size"] == 1024
    assert s["write_position"] == s["read_position"] == s["available_events"] == 0


@pytest.mark.parametrize("size", [1, 2, 4, 8, 1024, 1 << 16])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_accepts_every_positive_power_of_two_size(size: int, strategy: str) -> None:
    buf = RingBuffer(size=size, overflow_strategy=strategy, block_timeout=0)
    assert buf.size == size
    assert buf.stats()["size"] == size


def test_size_one_buffer_holds_exactly_one_event() -> None:
    buf = RingBuffer(size=1)
    assert buf.write("a") and buf.write("b")
    assert buf.read_batch(0, 10) == (["b"], 2)
    assert buf.drain() == ["b"]
    s = assert_accounting(buf)
    assert s["overwritten_events"] == 1


@pytest.mark.parametrize("size", [0, -1, -1024, 1.0, 4.0, "4", "invalid", None, True, False])
def test_non_int_bool_or_non_positive_size_is_rejected_as_invalid_size(size: Any) -> None:
    with pytest.raises(RingBufferError) as info:
        RingBuffer(size=size)
    assert info.value.reason == "invalid_size"
    assert "power of two" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("size", [3, 6, 1000, 1023, 1025])
def test_size_that_is_not_a_power_of_two_is_rejected_with_a_clear_message(size: int) -> None:
    with pytest.raises(RingBufferError) as info:
        RingBuffer(size=size)
    assert info.value.reason == "size_must_be_power_of_2"
    assert "power of two" in str(info.value)
    assert str(size) in str(info.value)


@pytest.mark.parametrize("strategy", ["", "DROP_OLDEST", "drop", "overwrite", None, 1])
def test_unknown_overflow_strategy_is_rejected(strategy: Any) -> None:
    with pytest.raises(RingBufferError) as info:
        RingBuffer(size=4, overflow_strategy=strategy)
    assert info.value.reason == "invalid_overflow_strategy"
    assert "drop_oldest" in str(info.value)


@pytest.mark.parametrize(
    "timeout", [-1, -0.001, math.nan, math.inf, -math.inf, "0.1", None, True, [0.1]]
)
def test_negative_nan_infinite_or_non_number_block_timeout_is_rejected(timeout: Any) -> None:
    with pytest.raises(RingBufferError) as info:
        RingBuffer(size=4, overflow_strategy="block", block_timeout=timeout)
    assert info.value.reason == "invalid_block_timeout"


@pytest.mark.parametrize("timeout", [0, 0.0, 0.001, 1, 2.5])
def test_zero_or_positive_finite_block_timeout_is_accepted(timeout: float) -> None:
    assert RingBuffer(4, "block", timeout).block_timeout == timeout


def test_ring_buffer_error_is_a_value_error_with_a_reason() -> None:
    err = RingBufferError("invalid_size", "message")
    assert isinstance(err, ValueError)
    assert err.reason == "invalid_size"
    assert str(err) == "message"


# -- writing and reading ------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_write_returns_true_and_read_returns_event_and_next_position(strategy: str) -> None:
    buf = RingBuffer(8, strategy, 0)
    marker = object()
    assert buf.write(marker) is True
    assert buf.write(("tuple", 1)) is True
    assert buf.read(0) == (marker, 1)
    assert buf.read(0)[0] is marker  # type: ignore[index]
    assert buf.read(1) == (("tuple", 1), 2)
    assert buf.read(2) is None
    assert buf.read(100) is None


def test_read_on_empty_buffer_returns_none() -> None:
    assert RingBuffer(4).read(0) is None
    assert RingBuffer(4).read() is None


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_read_batch_returns_events_in_write_order_without_consuming(strategy: str) -> None:
    buf = RingBuffer(8, strategy, 0)
    write_all(buf, list(range(5)))
    assert buf.read_batch(0, 10) == ([0, 1, 2, 3, 4], 5)
    assert buf.read_batch(0, 2) == ([0, 1], 2)
    assert buf.read_batch(2, 2) == ([2, 3], 4)
    assert buf.read_batch(5, 3) == ([], 5)
    s = assert_accounting(buf)
    assert s["read_position"] == 0
    assert s["available_events"] == 5
    assert s["consumed_events"] == 0
    assert s["total_reads"] == 5 + 2 + 2


def test_read_batch_of_a_lapped_reader_returns_only_older_events_first_and_counts_missed() -> None:
    buf = RingBuffer(4, "drop_oldest")
    write_all(buf, ["e1", "e2", "e3", "e4", "e5", "e6"])
    events, new_pos = buf.read_batch(0, 10)
    assert events == ["e3", "e4", "e5", "e6"]
    assert new_pos == 6
    assert new_pos - 0 - len(events) == 2


def test_read_of_a_lapped_position_returns_oldest_held_event_and_reports_missed() -> None:
    buf = RingBuffer(4, "drop_oldest")
    write_all(buf, ["e1", "e2", "e3", "e4", "e5", "e6"])
    assert buf.read(0) == ("e3", 3)  # 3 - 0 - 1 == 2 missed
    assert buf.read(1) == ("e3", 3)
    assert buf.read(2) == ("e3", 3)
    assert buf.read(3) == ("e4", 4)


def test_read_batch_of_a_reader_lapped_by_many_rounds_counts_every_missed_event() -> None:
    buf = RingBuffer(8, "drop_oldest")
    write_all(buf, list(range(1000)))
    events, new_pos = buf.read_batch(0, 100)
    assert events == list(range(992, 1000))
    assert new_pos == 1000
    assert new_pos - len(events) == 992
    # partial batches from a lapped position still never skip an older held event
    events, new_pos = buf.read_batch(5, 3)
    assert events == [992, 993, 994]
    assert new_pos - 5 - len(events) == 992 - 5


@pytest.mark.parametrize("start", [0, 1, 7, 8, 500, 991, 992, 995])
def test_read_batch_never_returns_a_newer_event_in_place_of_an_older_one(start: int) -> None:
    buf = RingBuffer(8, "drop_oldest")
    write_all(buf, list(range(1000)))
    events, new_pos = buf.read_batch(start, 1000)
    first = max(start, 1000 - 8)
    assert events == list(range(first, 1000))
    assert new_pos == 1000
    assert new_pos - start - len(events) == first - start


def test_reader_position_lapped_in_a_drop_newest_buffer_skips_only_overwritten_events() -> None:
    buf = RingBuffer(4, "drop_newest")
    write_all(buf, [0, 1, 2, 3])
    assert buf.drain() == [0, 1, 2, 3]
    write_all(buf, [4, 5, 6])
    events, new_pos = buf.read_batch(0, 10)
    assert events == [3, 4, 5, 6]
    assert new_pos == 7
    assert new_pos - len(events) == 3


def test_read_batch_stops_at_a_claimed_but_unfilled_slot_and_reads_it_next_time() -> None:
    buf = RingBuffer(8, "drop_oldest")
    write_all(buf, ["e0", "e1"])
    hole = buf._claim_next()  # a writer claimed position 2 and has not stored yet
    assert hole == 2
    write_all(buf, ["e3", "e4"])
    assert buf.read_batch(0, 10) == (["e0", "e1"], 2)
    assert buf.read_batch(2, 10) == ([], 2)
    assert buf.read(2) is None
    buf._store(hole, ("e2",))  # the writer finishes its store
    assert buf.read_batch(2, 10) == (["e2", "e3", "e4"], 5)
    assert buf.read_batch(0, 10) == (["e0", "e1", "e2", "e3", "e4"], 5)


def test_drain_stops_at_a_claimed_but_unfilled_slot_and_never_skips_it() -> None:
    buf = RingBuffer(8, "drop_oldest")
    write_all(buf, ["e0", "e1"])
    hole = buf._claim_next()
    write_all(buf, ["e3", "e4"])
    assert buf.drain() == ["e0", "e1"]
    assert buf.read_position == 2
    assert buf.drain() == []
    assert buf.read_position == 2
    buf._store(hole, ("e2",))
    assert buf.drain() == ["e2", "e3", "e4"]
    assert buf.read_position == 5
    s = assert_accounting(buf)
    assert s["dropped_events"] == 0
    assert s["consumed_events"] == 5


def test_drain_stops_at_an_unfilled_slot_that_still_holds_an_older_event() -> None:
    buf = RingBuffer(4, "drop_oldest")
    write_all(buf, [0, 1, 2, 3])
    assert buf.drain() == [0, 1, 2, 3]
    write_all(buf, [4, 5])
    hole = buf._claim_next()  # position 6; slot 2 still holds consumed position 2
    write_all(buf, [7])
    assert buf.drain() == [4, 5]
    assert buf.drain() == []
    assert buf.read_position == 6
    buf._store(hole, (6,))
    assert buf.drain() == [6, 7]
    s = assert_accounting(buf)
    assert s["dropped_events"] == 0
    assert s["consumed_events"] == 8


def test_read_batch_of_a_lapped_ring_returns_held_events_and_stops_at_a_hole() -> None:
    buf = RingBuffer(4, "drop_oldest")
    write_all(buf, [0, 1, 2, 3, 4, 5])  # positions 0..5; 2..5 held
    hole = buf._claim_next()  # position 6 claimed; its slot still holds position 2
    write_all(buf, [7])  # position 7 overwrites position 3
    # position 2 is still held, 3 was overwritten, 6 is not filled yet
    assert buf.read_batch(0, 10) == ([2, 4, 5], 6)
    assert buf.read_batch(6, 10) == ([], 6)
    buf._store(hole, (6,))
    assert buf.read_batch(6, 10) == ([6, 7], 8)
    assert buf.read_batch(0, 10) == ([4, 5, 6, 7], 8)


def test_late_store_of_a_lapped_claim_does_not_hide_newer_events_from_the_drain() -> None:
    # A drop_oldest writer descheduled between its claim and its store while the others lap
    # the ring must not store its (older) event over the newer one in the same slot: the
    # drain would take the slot for one claimed but unfilled and stop there for good while
    # the stats call its events available. The older event is lost and counted instead.
    buf = RingBuffer(4, "drop_oldest")
    late = buf._claim_next()  # position 0 claimed, store delayed
    write_all(buf, [1, 2, 3, 4])  # position 4 lands in slot 0
    assert buf._store(late, (0,)) is False  # the delayed writer resumes: its store is refused
    assert buf.read_batch(0, 10) == ([1, 2, 3, 4], 5)
    assert drain_until_empty(buf) == [1, 2, 3, 4]
    s = assert_accounting(buf)
    assert s["available_events"] == 0
    assert s["dropped_events"] == 1
    assert s["consumed_events"] == 4


# -- argument checks for reads ------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "count"),
    [(-1, 1), (0, -1), (1.0, 1), (0, 1.0), ("0", 1), (0, "1"), (None, 1), (0, None),
     (True, 1), (0, True)],
)  # fmt: skip
def test_read_batch_rejects_negative_or_non_int_arguments(start: Any, count: Any) -> None:
    buf = RingBuffer(4)
    buf.write(1)
    with pytest.raises(ValueError):
        buf.read_batch(start, count)


@pytest.mark.parametrize("position", [-1, 0.0, "0", None])
def test_read_rejects_negative_or_non_int_position(position: Any) -> None:
    with pytest.raises(ValueError):
        RingBuffer(4).read(position)


@pytest.mark.parametrize("max_count", [-1, 1.0, "1", True])
def test_drain_rejects_negative_or_non_int_max_count(max_count: Any) -> None:
    buf = RingBuffer(4)
    buf.write(1)
    with pytest.raises(ValueError):
        buf.drain(max_count)
    assert buf.read_position == 0


@pytest.mark.parametrize("start", [0, 3, 6, 50])
def test_read_batch_with_count_zero_returns_empty_list_and_start(start: int) -> None:
    buf = RingBuffer(4, "drop_oldest")
    write_all(buf, list(range(6)))
    assert buf.read_batch(start, 0) == ([], start)


def test_drain_with_max_count_zero_consumes_nothing() -> None:
    buf = RingBuffer(4)
    write_all(buf, [1, 2])
    assert buf.drain(0) == []
    assert buf.read_position == 0
    assert buf.stats()["available_events"] == 2


# -- drain --------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_drain_consumes_events_in_order_and_advances_read_position(strategy: str) -> None:
    buf = RingBuffer(8, strategy, 0)
    write_all(buf, list(range(6)))
    assert buf.drain(2) == [0, 1]
    assert buf.read_position == 2
    assert buf.drain(3) == [2, 3, 4]
    assert buf.read_position == 5
    assert buf.drain() == [5]
    assert buf.drain() == []
    s = assert_accounting(buf)
    assert s["consumed_events"] == 6
    assert s["available_events"] == 0
    assert s["total_reads"] == 6


def test_drain_of_an_overflowed_drop_oldest_buffer_counts_overwritten_as_dropped() -> None:
    buf = RingBuffer(4, "drop_oldest")
    write_all(buf, ["e1", "e2", "e3", "e4", "e5", "e6"])
    s = assert_accounting(buf)  # overflow before any drain
    assert s["dropped_events"] == 2
    assert s["overwritten_events"] == 2
    assert s["available_events"] == 4
    assert buf.drain(1) == ["e3"]
    assert buf.read_position == 3
    s = assert_accounting(buf)
    assert s["dropped_events"] == 2
    assert s["available_events"] == 3
    assert buf.drain() == ["e4", "e5", "e6"]
    s = assert_accounting(buf)
    assert s["consumed_events"] == 4
    assert s["dropped_events"] == 2


def test_drain_of_a_buffer_lapped_by_many_rounds_counts_every_overwritten_event() -> None:
    buf = RingBuffer(8, "drop_oldest")
    write_all(buf, list(range(1000)))
    assert buf.drain() == list(range(992, 1000))
    s = assert_accounting(buf)
    assert s["read_position"] == 1000
    assert s["dropped_events"] == 992
    assert s["consumed_events"] == 8


def test_drain_with_max_count_larger_than_size_returns_at_most_what_is_held() -> None:
    buf = RingBuffer(4, "drop_oldest")
    write_all(buf, list(range(10)))
    assert buf.drain(100) == [6, 7, 8, 9]


def test_drain_does_not_move_reader_positions_of_read_batch() -> None:
    buf = RingBuffer(8, "drop_newest")
    write_all(buf, [1, 2, 3])
    assert buf.drain() == [1, 2, 3]
    assert buf.read_batch(0, 10) == ([1, 2, 3], 3)


# -- overflow strategies ------------------------------------------------------------------


def test_drop_oldest_overwrites_and_write_returns_true() -> None:
    buf = RingBuffer(2, "drop_oldest")
    assert write_all(buf, [1, 2, 3]) == [True, True, True]
    assert buf.read_batch(0, 10) == ([2, 3], 3)
    s = assert_accounting(buf)
    assert s["rejected_events"] == 0
    assert s["overwritten_events"] == 1


def test_drop_newest_rejects_writes_when_full_and_counts_them() -> None:
    buf = RingBuffer(4, "drop_newest")
    assert write_all(buf, [1, 2, 3, 4, 5, 6]) == [True] * 4 + [False] * 2
    assert buf.read_batch(0, 10) == ([1, 2, 3, 4], 4)
    s = assert_accounting(buf)
    assert s["rejected_events"] == 2
    assert s["dropped_events"] == 2
    assert s["overwritten_events"] == 0
    assert s["total_writes"] == 6
    assert s["write_position"] == 4
    assert s["utilization"] == 1.0


def test_drop_newest_accepts_writes_again_after_drain_over_many_rounds() -> None:
    buf = RingBuffer(4, "drop_newest")
    expected: list[int] = []
    got: list[int] = []
    n = 0
    for _ in range(50):
        for _ in range(4):
            assert buf.write(n) is True
            expected.append(n)
            n += 1
        assert buf.write(-1) is False  # full
        got.extend(buf.drain())
    assert got == expected
    s = assert_accounting(buf)
    assert s["rejected_events"] == 50
    assert s["consumed_events"] == 200


def test_drop_newest_partial_drain_frees_exactly_that_many_slots() -> None:
    buf = RingBuffer(4, "drop_newest")
    write_all(buf, [0, 1, 2, 3])
    assert buf.drain(1) == [0]
    assert write_all(buf, [4, 5]) == [True, False]
    assert buf.drain() == [1, 2, 3, 4]
    assert_accounting(buf)


def test_block_with_zero_timeout_behaves_like_drop_newest() -> None:
    a = RingBuffer(4, "drop_newest")
    b = RingBuffer(4, "block", block_timeout=0)
    ops: list[tuple[str, int]] = [("w", i) for i in range(7)] + [("d", 2)]
    ops += [("w", i) for i in range(7, 12)] + [("d", 10)] + [("w", 12)]
    for op, arg in ops:
        if op == "w":
            assert a.write(arg) == b.write(arg)
        else:
            assert a.drain(arg) == b.drain(arg)
    sa, sb = a.stats(), b.stats()
    sa.pop("overflow_strategy")
    sb.pop("overflow_strategy")
    assert sa == sb
    assert sb["rejected_events"] > 0
    assert_accounting(b)


def test_block_writer_succeeds_once_a_consumer_drains(runner: ThreadRunner) -> None:
    buf = RingBuffer(2, "block", block_timeout=5.0)
    write_all(buf, [0, 1])
    started = threading.Event()

    def consumer() -> list[int]:
        started.wait()
        time.sleep(0.05)
        return buf.drain()

    runner.start("consumer", consumer)
    started.set()
    assert buf.write(2) is True
    runner.join()
    assert runner.results["consumer"] in ([0, 1], [0])
    rest = drain_until_empty(buf)
    assert runner.results["consumer"] + rest == [0, 1, 2]
    s = assert_accounting(buf)
    assert s["rejected_events"] == 0
    assert s["dropped_events"] == 0


def test_several_block_writers_all_succeed_when_consumer_keeps_draining(
    runner: ThreadRunner,
) -> None:
    buf = RingBuffer(2, "block", block_timeout=5.0)
    write_all(buf, [-2, -1])
    stop = threading.Event()
    drained: list[Any] = []

    def consumer() -> None:
        time.sleep(0.05)
        while not stop.is_set():
            drained.extend(buf.drain())
            time.sleep(0.001)

    for w in range(4):
        runner.start(("w", w), lambda w=w: [buf.write((w, i)) for i in range(5)])
    runner.start("consumer", consumer)
    for w in range(4):
        while ("w", w) not in runner.results and not runner.errors:
            time.sleep(0.005)
    stop.set()
    runner.join()
    drained.extend(drain_until_empty(buf))
    assert all(all(runner.results[("w", w)]) for w in range(4))
    assert sorted(drained[2:]) == sorted((w, i) for w in range(4) for i in range(5))
    s = assert_accounting(buf)
    assert s["rejected_events"] == 0


def test_block_write_with_dead_consumer_drops_after_timeout_then_drops_at_once() -> None:
    timeout = 0.1
    buf = RingBuffer(2, "block", block_timeout=timeout)
    write_all(buf, [0, 1])
    assert buf.write(2) is False  # waited in vain for the consumer
    s = assert_accounting(buf)
    assert s["rejected_events"] == 1
    assert s["dropped_events"] == 1
    t0 = time.monotonic()
    results = [buf.write(i) for i in range(100)]
    elapsed = time.monotonic() - t0
    assert results == [False] * 100
    # behavioural, not a benchmark: 100 waits would take 100 * timeout
    assert elapsed < 5 * timeout
    s = assert_accounting(buf)
    assert s["rejected_events"] == 101
    assert s["total_writes"] == 103
    # once the drain moves, writes succeed again
    assert buf.drain(1) == [0]
    assert buf.write(3) is True
    assert buf.read_batch(0, 10) == ([1, 3], 3)  # rejected writes take no position
    assert_accounting(buf)


def test_block_writer_waits_again_after_drain_moves_then_times_out() -> None:
    buf = RingBuffer(1, "block", block_timeout=0.02)
    buf.write(0)
    assert buf.write(1) is False
    assert buf.drain() == [0]
    assert buf.write(2) is True
    assert buf.write(3) is False
    assert buf.drain() == [2]
    s = assert_accounting(buf)
    assert s["rejected_events"] == 2
    assert s["consumed_events"] == 2


def test_block_writer_woken_by_destroy_returns_false_and_is_counted(
    runner: ThreadRunner,
) -> None:
    buf = RingBuffer(1, "block", block_timeout=2.0)
    buf.write(0)
    runner.start("writer", lambda: buf.write(1))
    time.sleep(0.05)
    buf.destroy()
    runner.join()
    assert runner.results["writer"] is False
    s = assert_accounting(buf)
    assert s["rejected_events"] == 1
    assert s["destroyed"] is True


# -- stats --------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_stats_has_every_documented_key(strategy: str) -> None:
    s = RingBuffer(4, strategy, 0).stats()
    assert s.keys() >= STATS_KEYS
    assert s["destroyed"] is False
    assert s["utilization"] == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_accounting_identity_holds_across_overflow_partial_drains_clear_and_destroy(
    strategy: str, size: int
) -> None:
    buf = RingBuffer(size, strategy, 0)
    assert_accounting(buf)
    n = 0
    for round_ in range(6):
        for _ in range(size * (round_ + 1) + 1):  # overflow before any drain
            buf.write(n)
            n += 1
            assert_accounting(buf)
        buf.read_batch(0, 3)
        assert_accounting(buf)
        buf.drain(round_ % 3)  # partial drains, including drain(0)
        assert_accounting(buf)
    drain_until_empty(buf)
    s = assert_accounting(buf)
    assert s["total_writes"] == n
    assert s["available_events"] == 0
    write_all(buf, list(range(size + 1)))
    buf.destroy()
    s = assert_accounting(buf)
    assert s["available_events"] == 0
    assert s["destroyed"] is True
    write_all(buf, [1, 2, 3])
    s = assert_accounting(buf)
    assert s["total_writes"] == n + size + 1 + 3


def test_utilization_is_available_over_size() -> None:
    buf = RingBuffer(8, "drop_newest")
    write_all(buf, [1, 2])
    assert buf.stats()["utilization"] == 0.25
    assert len(buf) == 2


# -- clear and destroy --------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_clear_discards_every_event_and_resets_counters(strategy: str) -> None:
    buf = RingBuffer(4, strategy, 0)
    write_all(buf, list(range(7)))
    buf.drain(1)
    buf.read_batch(0, 2)
    buf.clear()
    s = assert_accounting(buf)
    for key in (
        "write_position", "read_position", "available_events", "total_writes", "total_reads",
        "dropped_events", "consumed_events", "rejected_events", "overwritten_events",
    ):  # fmt: skip
        assert s[key] == 0, key
    assert s["utilization"] == 0
    assert buf.read_batch(0, 10) == ([], 0)
    assert buf.drain() == []
    # and the buffer works as new afterwards
    assert write_all(buf, ["a", "b"]) == [True, True]
    assert buf.drain() == ["a", "b"]
    assert_accounting(buf)


def test_clear_of_a_stalled_block_buffer_lets_writes_wait_again() -> None:
    buf = RingBuffer(1, "block", block_timeout=0.01)
    buf.write(0)
    assert buf.write(1) is False
    buf.clear()
    assert buf.write(2) is True
    assert buf.drain() == [2]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_write_after_destroy_returns_false_and_is_counted_never_raises(strategy: str) -> None:
    buf = RingBuffer(4, strategy, 0.05)
    write_all(buf, [1, 2, 3])
    buf.drain(1)
    buf.destroy()
    s = assert_accounting(buf)
    assert s["destroyed"] is True
    assert s["available_events"] == 0
    assert s["dropped_events"] == 2  # the two undrained events were discarded
    assert write_all(buf, list(range(10))) == [False] * 10
    s = assert_accounting(buf)
    assert s["total_writes"] == 13
    assert s["dropped_events"] == 12
    assert buf.drain() == []
    assert buf.read(0) is None
    assert buf.read_batch(0, 10)[0] == []


def test_destroy_of_an_overflowed_drop_oldest_buffer_keeps_the_identity() -> None:
    buf = RingBuffer(4, "drop_oldest")
    write_all(buf, list(range(10)))
    buf.destroy()
    s = assert_accounting(buf)
    assert s["dropped_events"] == 10
    assert s["total_writes"] == 10
    buf.write(99)
    s = assert_accounting(buf)
    assert s["dropped_events"] == 11


def test_destroy_twice_is_harmless() -> None:
    buf = RingBuffer(4)
    write_all(buf, [1, 2])
    buf.destroy()
    buf.destroy()
    s = assert_accounting(buf)
    assert s["dropped_events"] == 2


def test_clear_while_a_block_writer_waits_keeps_the_waiter_count_consistent(
    runner: ThreadRunner,
) -> None:
    # The drain only wakes block writers when it sees waiters; a clear() that forgets a
    # writer already waiting makes that count go negative when the writer leaves, so a
    # later blocked writer counts as no waiter and sleeps its whole timeout.
    buf = RingBuffer(1, "block", block_timeout=5.0)
    buf.write(0)
    runner.start("writer", lambda: buf.write(1))
    deadline = time.monotonic() + 5
    while buf._waiters == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    buf.clear()
    runner.join()
    assert runner.results["writer"] is True
    assert buf._waiters == 0


# -- concurrency --------------------------------------------------------------------------

WRITERS = 8
PER_WRITER = 20_000


@pytest.mark.parametrize(
    ("strategy", "size"), [("drop_oldest", 1024), ("drop_newest", 1024), ("block", 256)]
)
def test_concurrent_writers_and_consumer_deliver_each_writer_in_order_without_duplicates(
    strategy: str, size: int, runner: ThreadRunner
) -> None:
    buf = RingBuffer(size, strategy, block_timeout=0.002)
    stop = threading.Event()
    drained: list[tuple[int, int]] = []

    def writer(w: int) -> list[int]:
        accepted = []
        write = buf.write
        for i in range(PER_WRITER):
            if write((w, i)):
                accepted.append(i)
        return accepted

    def consumer() -> None:
        while not stop.is_set():
            drained.extend(buf.drain())

    runner.start("consumer", consumer)
    for w in range(WRITERS):
        runner.start(w, lambda w=w: writer(w))
    for t in runner.threads[1:]:
        t.join(60)
    stop.set()
    runner.join()
    drained.extend(drain_until_empty(buf))

    assert len(set(drained)) == len(drained), "duplicate events"
    last = [-1] * WRITERS
    for w, i in drained:
        assert i > last[w], f"writer {w} out of order: {i} after {last[w]}"
        last[w] = i
    s = assert_accounting(buf)
    assert s["total_writes"] == WRITERS * PER_WRITER
    assert s["consumed_events"] == len(drained)
    assert s["available_events"] == 0
    if strategy == "drop_oldest":
        assert all(len(runner.results[w]) == PER_WRITER for w in range(WRITERS))
        assert s["rejected_events"] == 0
    else:
        # nothing accepted is ever lost: exactly the accepted events are delivered
        accepted = {(w, i) for w in range(WRITERS) for i in runner.results[w]}
        assert set(drained) == accepted
        assert s["overwritten_events"] == 0
        assert s["dropped_events"] == s["rejected_events"]
        assert s["rejected_events"] == WRITERS * PER_WRITER - len(accepted)


def test_concurrent_readers_with_read_batch_see_ordered_positions(
    runner: ThreadRunner,
) -> None:
    buf = RingBuffer(64, "drop_oldest")
    done = threading.Event()

    def reader() -> tuple[int, int]:
        pos = 0
        got = missed = 0
        last = -1
        while True:
            finished = done.is_set()
            events, new_pos = buf.read_batch(pos, 16)
            assert new_pos - pos - len(events) >= 0
            for e in events:
                assert e > last
                last = e
            got += len(events)
            missed += new_pos - pos - len(events)
            pos = new_pos
            if finished and not events:
                return got, missed

    for r in range(2):
        runner.start(r, reader)
    for i in range(50_000):
        buf.write(i)
    done.set()
    runner.join()
    for r in range(2):
        got, missed = runner.results[r]
        assert got + missed == 50_000


# -- stateful model -----------------------------------------------------------------------


class RingModel(RuleBasedStateMachine):
    """Compares RingBuffer with a list of accepted events plus the model's read position."""

    @initialize(
        size=st.sampled_from([1, 2, 4, 8]),
        strategy=st.sampled_from(["drop_oldest", "drop_newest", "block0"]),
    )
    def setup(self, size: int, strategy: str) -> None:
        self.size = size
        self.strategy = "block" if strategy == "block0" else strategy
        self.buf = RingBuffer(size, self.strategy, block_timeout=0)
        self._reset_model()

    def _reset_model(self) -> None:
        self.accepted: list[int] = []  # every accepted event, position == index
        self.r = 0
        self.writes = self.consumed = self.rejected = self.reads = 0
        self.next_event = 0
        self.reader_positions: list[int] = []

    def _expected_from(self, pos: int, count: int) -> tuple[list[int], int]:
        w = len(self.accepted)
        first = max(pos, w - self.size)
        events = self.accepted[first : first + count] if count else []
        return events, (first + len(events) if events else pos)

    @rule()
    def write(self) -> None:
        ev = self.next_event
        self.next_event += 1
        self.writes += 1
        full = len(self.accepted) - self.r >= self.size
        expect_ok = self.strategy == "drop_oldest" or not full
        assert self.buf.write(ev) is expect_ok
        if expect_ok:
            self.accepted.append(ev)
        else:
            self.rejected += 1

    @rule(n=st.integers(1, 20))
    def write_many(self, n: int) -> None:
        for _ in range(n):
            self.write()

    @rule(k=st.one_of(st.none(), st.integers(0, 10)))
    def drain(self, k: int | None) -> None:
        events, new_r = self._expected_from(self.r, self.size if k is None else k)
        assert self.buf.drain(k) == events
        self.r = new_r
        self.consumed += len(events)
        self.reads += len(events)
        assert self.buf.read_position == self.r

    @rule()
    def new_reader(self) -> None:
        self.reader_positions.append(0)

    @precondition(lambda self: self.reader_positions)
    @rule(data=st.data(), k=st.integers(0, 10))
    def read_batch_from_reader(self, data: st.DataObject, k: int) -> None:
        i = data.draw(st.integers(0, len(self.reader_positions) - 1))
        pos = self.reader_positions[i]
        expected = self._expected_from(pos, k)
        got = self.buf.read_batch(pos, k)
        assert got == expected
        events, new_pos = got
        if k and events:
            assert new_pos - pos - len(events) == max(0, len(self.accepted) - self.size - pos)
        self.reads += len(events)
        self.reader_positions[i] = new_pos

    @rule(data=st.data(), k=st.integers(0, 10))
    def read_batch_anywhere(self, data: st.DataObject, k: int) -> None:
        pos = data.draw(st.integers(0, len(self.accepted) + 3))
        expected = self._expected_from(pos, k)
        assert self.buf.read_batch(pos, k) == expected
        self.reads += len(expected[0])

    @rule(data=st.data())
    def read_one(self, data: st.DataObject) -> None:
        pos = data.draw(st.integers(0, len(self.accepted) + 2))
        events, new_pos = self._expected_from(pos, 1)
        assert self.buf.read(pos) == ((events[0], new_pos) if events else None)
        self.reads += len(events)

    @rule()
    def clear(self) -> None:
        self.buf.clear()
        self._reset_model()

    @invariant()
    def accounting_identity_holds(self) -> None:
        assert_accounting(self.buf)

    @invariant()
    def stats_match_the_model(self) -> None:
        s = self.buf.stats()
        w = len(self.accepted)
        assert s["write_position"] == w
        assert s["read_position"] == self.r
        assert s["total_writes"] == self.writes
        assert s["consumed_events"] == self.consumed
        assert s["rejected_events"] == self.rejected
        assert s["total_reads"] == self.reads
        assert s["available_events"] == min(w - self.r, self.size)
        if self.strategy != "drop_oldest":
            assert w - self.r <= self.size
            assert s["overwritten_events"] == 0
            assert s["dropped_events"] == self.rejected
        else:
            assert self.rejected == 0

    @invariant()
    def last_size_accepted_events_are_readable(self) -> None:
        w = len(self.accepted)
        got, _ = self.buf.read_batch(0, self.size)
        # a read_batch from 0 sees the last `size` accepted events (not counted in the model)
        self.reads += len(got)
        assert got == self.accepted[max(0, w - self.size) :]


TestRingBufferAgainstModel = RingModel.TestCase
TestRingBufferAgainstModel.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)


# -- faults: cycles through the ring, rejected payloads, reader errors -----------------


class _Holder:
    def __init__(self) -> None:
        self.ring: Any = None


def test_a_cycle_through_an_event_in_the_ring_is_collected() -> None:
    import gc
    import weakref

    ring = RingBuffer(8)
    holder = _Holder()
    holder.ring = ring  # the ring holds the event, the event holds the ring
    ring.write(holder)
    ref = weakref.ref(holder)
    del ring, holder
    gc.collect()
    assert ref() is None


def test_a_cycle_through_a_report_record_in_the_ring_is_collected() -> None:
    import gc
    import weakref

    from tidescope.capture import _core

    ring = RingBuffer(8)
    holder = _Holder()
    holder.ring = ring
    _core.write_event(ring, "custom", {"value": holder})  # a flat record, data by reference
    ref = weakref.ref(holder)
    del ring, holder
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("payload", [5, None])
def test_a_payload_rejected_after_its_claim_leaves_no_slot_that_wedges_readers(
    payload: Any,
) -> None:
    ring = RingBuffer(8)
    with pytest.raises(TypeError):
        ring._put(payload)
    assert ring.write("after")
    assert ring.drain() == ["after"]
    stats = ring.stats()
    assert (
        stats["total_writes"]
        == stats["consumed_events"] + stats["dropped_events"] + (stats["available_events"])
    )


def test_reader_argument_errors_leak_no_reference() -> None:
    import sys

    ring = RingBuffer(8)
    node = ring._node
    before = sys.getrefcount(node)
    for bad in (("x", 1), (0, "y")):
        for _ in range(100):
            with pytest.raises(TypeError):
                ring._scan_events(*bad)
    assert sys.getrefcount(node) == before
