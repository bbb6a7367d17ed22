"""Self-measurement of the report path (the seed's ``Performance.measure_overhead``)."""

from __future__ import annotations

import threading
import time
from typing import Any

from tidescope.capture import _core
from tidescope.capture.ring_buffer import RingBuffer

__all__ = ["measure_overhead"]


def _noop(module: Any, function: Any, args: Any) -> None:
    return None


class _MeasurementBuffer(RingBuffer):
    """The private buffer of a measurement; once retired, late writes go to ``target``.

    A thread that picked this buffer up just before the registered one was put back still
    writes here: with ``_fast`` off, every write path goes through ``_put_slow``, which then
    forwards instead of storing.
    """

    __slots__ = ("_target",)

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._target: RingBuffer | None = None

    def retire(self, target: RingBuffer | None) -> None:
        self._target = target
        self._fast = False

    def _put_slow(self, payload: tuple[Any, ...]) -> bool:
        target = self._target
        if target is None:
            return super()._put_slow(payload)
        return target._put(payload)


def measure_overhead(iterations: int = 10000) -> dict[str, Any]:
    """Time ``report_function_entry``, ``report_function_exit`` and a disabled entry.

    Returns ``entry_avg_ns``, ``exit_avg_ns``, ``disabled_avg_ns`` and, for scale,
    ``baseline_call_ns`` (a plain three-argument Python call in the same loop), plus the
    core that was measured. The measurement writes into a private buffer; the caller's
    context and the registered buffer are left as they were, and events other threads
    wrote meanwhile are passed on to the registered buffer.

    Raises:
        ValueError: ``iterations`` is not a positive int.
    """
    if type(iterations) is not int or iterations <= 0:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}")
    saved_ctx = _core.save_context()
    saved_buf = _core.get_buffer()
    saved_on = _core.is_started()
    private = _MeasurementBuffer(1 << max(16, (2 * iterations).bit_length()))
    me = threading.get_ident()
    entry = _core.report_function_entry
    exit_ = _core.report_function_exit
    args = ["measure", 2, 3.0]
    pc = time.perf_counter_ns
    try:
        _core.register_buffer(private)
        _core.set_enabled(True)
        _core.initialize_context()
        t0 = pc()
        for _ in range(iterations):
            _noop("tidescope", "measure_overhead", args)
        baseline = pc() - t0
        t0 = pc()
        cids = [entry("tidescope", "measure_overhead", args) for _ in range(iterations)]
        t_entry = pc() - t0
        cids.reverse()
        t0 = pc()
        for cid in cids:
            exit_(cid, 3, 0)
        t_exit = pc() - t0
        _core.set_enabled(False)
        t0 = pc()
        for _ in range(iterations):
            entry("tidescope", "measure_overhead", args)
        t_disabled = pc() - t0
    finally:
        _core.set_enabled(saved_on)
        _core.register_buffer(saved_buf)
        _core.restore_context(saved_ctx)
        private.retire(saved_buf)
    if saved_buf is not None:
        for ev in private.drain():
            if ev.thread_id != me:
                saved_buf.write(ev)
    n = iterations
    return {
        "iterations": n,
        "core": _core.CORE_NAME,
        "entry_avg_ns": t_entry / n,
        "exit_avg_ns": t_exit / n,
        "disabled_avg_ns": t_disabled / n,
        "baseline_call_ns": baseline / n,
    }
