"""Parent calls across threads: work handed to another thread starts under the caller's call.

An asyncio task copies its creator's context, so its first call has the creating call as
its parent. A new thread starts with an empty context, and a pool thread keeps the one it
was started with, so without help a call made in a ``threading.Thread``, a
``ThreadPoolExecutor`` worker or ``loop.run_in_executor`` has no parent. While capture is
on, this module wraps two stdlib entry points (and puts them back when it goes off):

* ``threading.Thread.start``: a thread started inside a call (or inside a bound correlation)
  runs its ``run()`` with that frame as the top of its stack. A thread started outside any
  call starts empty, as before.
* ``concurrent.futures.ThreadPoolExecutor.submit`` (which ``loop.run_in_executor`` and
  ``asyncio.to_thread`` use): each work item runs with its submitter's frame on top, and the
  worker's own context is put back when the item ends, so a reused pool thread never shows
  an earlier submitter. The pool's threads, started by ``submit`` itself, get no frame.

Nothing is added to the report path: the frame is read once at start/submit time (an
immutable tuple on both cores, see ``_pure``) and set once in the worker. A failure here is
counted and the stdlib call goes ahead unchanged.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import thread as _futures_thread
from typing import Any

from tidescope.capture import _core

__all__ = ["set_on"]

_Thread = threading.Thread
_Pool = _futures_thread.ThreadPoolExecutor
_orig_start: Any = _Thread.start
_orig_submit: Any = _Pool.submit
_local = threading.local()  # .submitting: inside submit, whose pool threads get no frame


def _frame_here() -> Any:
    """This context's top frame when it is a call or a bound correlation, else None."""
    if _core.current_call_id() is None and _core.current_correlation_id() is None:
        return None  # an empty stack, or capture off here: the thread starts as before
    return _core.save_context()


class _Seeded:
    """``fn`` run with ``frame`` as the top of this context's stack, then the old top back."""

    __slots__ = ("fn", "frame")

    def __init__(self, fn: Any, frame: Any) -> None:
        self.fn = fn
        self.frame = frame

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        token = _core.save_context()
        _core.restore_context(self.frame)
        _core.note_thread_once()  # its calls are no root calls: the thread is noted here
        try:
            return self.fn(*args, **kwargs)
        finally:
            _core.restore_context(token)


def _start(self: threading.Thread) -> None:
    seeded = None
    try:
        if _core.is_started() and not getattr(_local, "submitting", False) and self.ident is None:
            frame = _frame_here()
            if frame is not None:
                run = self.run
                seeded = _SeededRun(self, run, frame)
                self.run = seeded  # type: ignore[method-assign]
    except Exception as exc:
        _core.count_error(exc)
        seeded = None
    try:
        _orig_start(self)
    except BaseException:
        if seeded is not None:
            seeded.forget()
        raise


class _SeededRun:
    """A thread's ``run`` (an instance attribute while it runs) under its starter's frame."""

    __slots__ = ("frame", "run", "thread")

    def __init__(self, thread: threading.Thread, run: Any, frame: Any) -> None:
        self.thread: threading.Thread | None = thread
        self.run = run
        self.frame = frame

    def forget(self) -> None:
        """Drop the instance attribute again (no cycle through the thread is left)."""
        thread, self.thread = self.thread, None
        try:
            if thread is not None and thread.__dict__.get("run") is self:
                del thread.__dict__["run"]
        except Exception as exc:
            _core.count_error(exc)

    def __call__(self) -> None:
        self.forget()
        token = _core.save_context()
        _core.restore_context(self.frame)
        _core.note_thread_once()
        try:
            self.run()
        finally:
            _core.restore_context(token)


def _interpreter_pool(executor: Any) -> bool:
    # 3.14's InterpreterPoolExecutor is a ThreadPoolExecutor whose work crosses
    # interpreters: a wrapper around fn could not be shared
    mod = sys.modules.get("concurrent.futures.interpreter")
    pool = getattr(mod, "InterpreterPoolExecutor", None)
    return pool is not None and isinstance(executor, pool)


def _submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    if not _core.is_started():
        return _orig_submit(self, fn, *args, **kwargs)
    work = fn
    try:
        if not _interpreter_pool(self):
            work = _Seeded(fn, _frame_here())
    except Exception as exc:
        _core.count_error(exc)
        work = fn
    outer = getattr(_local, "submitting", False)
    _local.submitting = True
    try:
        return _orig_submit(self, work, *args, **kwargs)
    finally:
        _local.submitting = outer


def set_on(flag: bool) -> None:
    """Wrap ``Thread.start`` and ``ThreadPoolExecutor.submit`` while capture is on.

    Switching off puts the originals back, unless something replaced ours since (then ours
    stays in place and keeps passing calls through).
    """
    if flag:
        if _Thread.start is _orig_start:
            _Thread.start = _start  # type: ignore[method-assign]
        if _Pool.submit is _orig_submit:
            _Pool.submit = _submit  # type: ignore[method-assign]
    else:
        if _Thread.start is _start:
            _Thread.start = _orig_start  # type: ignore[method-assign]
        if _Pool.submit is _submit:
            _Pool.submit = _orig_submit  # type: ignore[method-assign]


_core.on_enabled_change(set_on)
