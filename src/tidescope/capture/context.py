"""Per-thread and per-asyncio-task capture context: call stack, correlation, on/off, buffer.

Python port of the seed's ``InstrumentationRuntime.Context``. The seed kept one process
dictionary per BEAM process; here every thread and every asyncio task has its own context
(``contextvars``), with these rules:

* Capture is switched on for every thread and task at once by ``tidescope.start()``; a thread
  started later is captured with no call of its own.
* A task copies its creator's context: its first traced call has the call that created the
  task as its parent. Nothing a task pushes is seen by its creator or its siblings.
* Work handed to another thread inside a call (``threading.Thread.start``,
  ``ThreadPoolExecutor.submit``, ``loop.run_in_executor``, ``asyncio.to_thread``) starts
  with that call as its parent, as a task does (``capture._threads``); a thread started
  outside any call starts with an empty call stack.
* ``clear_context()`` switches capture off here until ``initialize_context()``.

The seed conflated call ids and correlation ids. Here ``current_call_id()`` is the innermost
traced call, and ``current_correlation_id()`` is what groups one logical operation: the id
bound with :func:`bind_correlation_id` (an HTTP request, say), otherwise the outermost
traced call of this stack.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

from tidescope.capture import _core
from tidescope.capture._core import (
    call_stack,
    clear_context,
    current_call_id,
    current_correlation_id,
    current_task_id,
    enabled,
    get_buffer,
    initialize_context,
    pop_call_stack,
    push_call_stack,
)
from tidescope.capture.ring_buffer import RingBuffer

__all__ = [
    "bind_correlation_id",
    "call_stack",
    "clear_context",
    "current_call_id",
    "current_correlation_id",
    "current_task_id",
    "enabled",
    "get_buffer",
    "get_context",
    "initialize_context",
    "instrumentation_disabled",
    "pop_call_stack",
    "push_call_stack",
    "register_buffer",
    "unregister_buffer",
    "with_instrumentation_disabled",
]

P = ParamSpec("P")
R = TypeVar("R")


def register_buffer(buffer: RingBuffer) -> None:
    """Make ``buffer`` the one every report writes to (the one buffer registry).

    ``tidescope.start()`` does this; call it yourself only to drive a buffer by hand.

    Raises:
        TypeError: ``buffer`` is not a RingBuffer.
    """
    if not isinstance(buffer, RingBuffer):
        raise TypeError(f"register_buffer() takes a RingBuffer, got {type(buffer).__name__}")
    _core.register_buffer(buffer)


def unregister_buffer() -> RingBuffer | None:
    """Remove the registered buffer (reports become no-ops) and return it."""
    buf = _core.get_buffer()
    _core.register_buffer(None)
    return buf


def with_instrumentation_disabled(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run ``fn(*args, **kwargs)`` with capture off in this context; return its result.

    The context (call stack included) is restored afterwards, also when ``fn`` raises.
    """
    token = _core.disable_here()
    try:
        return fn(*args, **kwargs)
    finally:
        _core.restore_context(token)


@contextlib.contextmanager
def instrumentation_disabled() -> Iterator[None]:
    """Context-manager form of :func:`with_instrumentation_disabled`."""
    token = _core.disable_here()
    try:
        yield
    finally:
        _core.restore_context(token)


@contextlib.contextmanager
def bind_correlation_id(correlation_id: Any) -> Iterator[Any]:
    """Give every event of this context the correlation ``correlation_id`` inside the block.

    Tasks created inside inherit it. Restoring does not use a ContextVar token, so the block
    may span ``await`` and ``yield`` without "was created in a different Context" errors.
    """
    token = _core.bind_correlation(correlation_id)
    try:
        yield correlation_id
    finally:
        _core.restore_context(token)


def get_context() -> dict[str, Any]:
    """This context as the seed's map: enabled, buffer, correlation_id, call_stack (and more)."""
    return {
        "enabled": enabled(),
        "buffer": get_buffer(),
        "correlation_id": current_correlation_id(),
        "call_id": current_call_id(),
        "call_stack": call_stack(),
        "task_id": current_task_id(),
    }
