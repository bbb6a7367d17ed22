"""The call stack of each thread and asyncio task, and the functions that read and change it.

The twin of ``_context.c``'s stack. The stack is an immutable linked list of frames
``(call_id, parent_frame, correlation_id, start_ns)`` held in one ContextVar. A task copies
its creator's context, so it sees the creator's frame as its parent and nothing it pushes
is seen by anyone else: the shared-mutable-list bug cannot happen by construction. Each
push and pop is one ``ContextVar.set`` (about 760 instructions on 3.11, the Token it makes
included: the largest single cost of a pure call pair, and the price of that guarantee in
pure Python, which cannot tell whether a copy of the context can see a mutable cell).
"""

from __future__ import annotations

import contextvars
from typing import Any, Final

from tidescope.capture import _clock

# A frame is (call_id, parent_frame, correlation_id, start_ns); None is the empty stack and
# _OFF marks a context where capture is switched off.
_stack: contextvars.ContextVar[Any] = contextvars.ContextVar("tidescope_stack", default=None)
_OFF: Final = ("off", None, None, 0)
# The stack's reader and writer. The pure core stores the top frame in the ContextVar
# itself; the C core keeps it in a cell there and rewrites the cell in place when no
# copy of the context can see it (see _speedups.c), so it swaps these two.
_get: Any = _stack.get
_set: Any = _stack.set
_monotonic_ns = _clock.monotonic_ns


def use(get: Any, set_: Any) -> None:
    """Read and write the stack with ``get`` and ``set_`` (``_pure.use_accelerator`` gives
    the C core's, and keeps its own copies for the report path)."""
    global _get, _set
    _get, _set = get, set_


def initialize_context() -> None:
    """Start this thread's / task's context afresh: empty call stack, capture allowed."""
    _set(None)


def clear_context() -> None:
    """Drop this context's call stack and stop capturing here until ``initialize_context()``."""
    _set(_OFF)


def current_call_id() -> Any:
    """The innermost traced call of this thread or task, or None."""
    f = _get()
    return None if f is None or f is _OFF else f[0]


def current_correlation_id() -> Any:
    """The correlation the next event here will carry: a bound id, else the outermost call."""
    f = _get()
    return None if f is None or f is _OFF else f[2]


def call_stack() -> list[Any]:
    """The call ids of this context, innermost first."""
    out: list[Any] = []
    f = _get()
    if f is _OFF:
        return out
    while f is not None:
        if f[0] is not None:
            out.append(f[0])
        f = f[1]
    return out


def push_call_stack(call_id: Any) -> None:
    """Push a call id (the seed's push; ``report_function_entry`` does this itself)."""
    f = _get()
    if f is _OFF:
        return
    corr = call_id if f is None or f[2] is None else f[2]
    _set((call_id, f, corr, _monotonic_ns()))


def pop_call_stack() -> Any:
    """Pop the innermost call id and return it (None if the stack is empty)."""
    f = _get()
    if f is None or f is _OFF or f[0] is None:
        return None  # empty, off, or only a correlation binding: no call to pop
    _set(f[1])
    return f[0]


def save_context() -> Any:
    """An opaque token of this context's stack state, for :func:`restore_context`."""
    return _get()


def restore_context(token: Any) -> None:
    """Put back a state from :func:`save_context` (no Token: safe across tasks and yields)."""
    _set(token)


def disable_here() -> Any:
    """Stop capture in this context; returns the token that :func:`restore_context` takes."""
    f = _get()
    _set(_OFF)
    return f


def bind_correlation(correlation_id: Any) -> Any:
    """Make ``correlation_id`` the correlation of every event here; returns a restore token."""
    f = _get()
    if f is _OFF:
        return f
    if f is None:
        _set((None, None, correlation_id, 0))
    else:
        _set((f[0], f[1], correlation_id, f[3]))
    return f


def _unwind(f: Any, call_id: Any) -> Any:
    """The frame of ``call_id`` in stack ``f`` (None if absent)."""
    while f is not None and f is not _OFF:
        if f[0] == call_id:
            return f
        f = f[1]
    return None


def frame_ids() -> tuple[Any, Any, Any]:
    """``(call_id, parent_id, correlation_id)`` of the innermost call here."""
    f = _get()
    if f is None or f is _OFF:
        return None, None, None
    p = f[1]
    return f[0], (p[0] if p is not None and p is not _OFF else None), f[2]
