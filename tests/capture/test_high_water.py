"""The buffer's high-water wake-up: the writer that claims the armed position calls back once."""

from __future__ import annotations

from typing import Any

import pytest

import tidescope
from tidescope.capture import _core
from tidescope.capture import runtime as rt
from tidescope.capture.ring_buffer import RingBuffer


def test_the_writer_that_claims_the_armed_position_calls_back_once() -> None:
    calls: list[int] = []
    ring = RingBuffer(size=16)
    ring.wake_at(3, lambda: calls.append(ring.write_position))
    for i in range(10):
        ring.write(i)
    assert calls == [4]
    ring.wake_at(12, None)  # disarmed
    for i in range(10):
        ring.write(i)
    assert calls == [4]


@pytest.mark.parametrize("strategy", ["drop_oldest", "block"])
def test_report_paths_and_blocking_writers_call_back_too(strategy: str) -> None:
    calls: list[int] = []
    with tidescope.capture(buffer_size=64, overflow_strategy=strategy) as cap:
        buf = _core.get_buffer()
        assert buf is not None
        buf.wake_at(1, lambda: calls.append(1))
        cid = rt.report_function_entry("tests", "f", [])  # position 0
        rt.report_function_exit(cid, 1)  # position 1: calls back
        buf.wake_at(2, lambda: calls.append(2))
        rt.report_function_entry("tests", "g", [])
    assert calls == [1, 2]
    assert len(cap.events()) == 3


def test_a_callback_that_raises_never_reaches_the_writer() -> None:
    ring = RingBuffer(size=16)

    def fail() -> None:
        raise RuntimeError("released already")

    ring.wake_at(0, fail)
    assert ring.write(1) is True
    assert ring.stats()["consumed_events"] + ring.stats()["available_events"] == 1


@pytest.mark.parametrize("strategy", ["drop_oldest", "drop_newest", "block"])
def test_a_callback_that_drains_the_buffer_sees_the_event_that_called_it(strategy: str) -> None:
    # the pure core's drain passes in the writer that crosses the mark: stored, no lock held
    ring = RingBuffer(size=8, overflow_strategy=strategy)
    got: list[Any] = []
    ring.wake_at(5, lambda: got.extend(ring.drain()))
    for i in range(8):
        assert ring.write(i) is True
    assert got == list(range(6))
    assert ring.drain() == [6, 7]


def test_the_writer_at_the_wait_mark_goes_on_when_no_pass_comes() -> None:
    # (the C core's writer there waits for the drain's next wake_at(), at most `wait`, once)
    calls: list[int] = []
    ring = RingBuffer(size=16)
    ring.wake_at(1, lambda: calls.append(1), wait_at=3, wait=0.001)
    assert all(ring.write(i) for i in range(40))
    assert calls == [1]
    assert ring.stats()["total_writes"] == 40
    ring.wake_at(41, lambda: calls.append(2), wait_at=42, wait=0.001)  # re-armed
    assert all(ring.write(i) for i in range(4))
    assert calls == [1, 2]
