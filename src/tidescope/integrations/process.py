"""Process pools and processes: tasks carry the caller's correlation and call into the child.

Use :class:`TracedProcessPoolExecutor` for ``concurrent.futures.ProcessPoolExecutor``,
:class:`TracedPool` for ``multiprocessing.Pool``, and :func:`traced_process` for
``multiprocessing.Process``; each takes the same arguments as the original plus
``trace_dir``. Under fork and spawn alike, with capture on in the caller:

* submitting records ``remote_call_send`` (target ``"ProcessPoolExecutor"``,
  ``"multiprocessing.Pool"`` or ``"multiprocessing.Process"``; a W3C ``traceparent`` from
  the caller's correlation and current call; metadata ``{message_id, function}``);
* in the child the callable runs with the caller's correlation bound and the caller's call
  as its parent: the child records ``remote_call_receive`` (same header and message id),
  then a call ``tidescope.integrations.process`` / ``run`` with ``{target, args, kwargs}``
  whose ``parent_id`` is the caller's call id, and its exit with the result or exception.
  Every call recorded inside carries the caller's correlation id;
* each child reports ``node_event`` ``"up"`` when it starts and ``"down"`` when it leaves
  normally (see :mod:`tidescope.integrations._proc_child`).

Where the child's events go. Under ``tidescope run`` the child records into the run's
directory as it already does for every child: leave ``trace_dir`` unset. Elsewhere (a
program that called ``tidescope.start()``, a test inside ``tidescope.capture()``) pass
``trace_dir``: each child writes ``<trace_dir>/events-<pid>.tstrace``, recording with the
parent's settings; read them with :func:`tidescope.open_trace`. Without either,
the correlation is still bound in the child, for whatever records there.

A correlation id that is not a plain ``str``, ``int``, ``bytes``, ``float`` or UUID (or a
very long one) is replaced in the child by its trace id, so it always pickles. Callables
and arguments are pickled as the originals would be (spawn needs importable functions).
With capture off in the caller, callables are submitted unwrapped.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import multiprocessing
import multiprocessing.pool
import os
import uuid
from collections.abc import Callable, Iterable
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any, Final

import tidescope
from tidescope.capture import _core
from tidescope.capture.runtime.distributed import (
    format_traceparent,
    report_remote_call_receive,
    report_remote_call_send,
)
from tidescope.integrations._proc_child import ChildTrace, enter_child, flush
from tidescope.integrations._propagation import span_id_for, trace_id_for

__all__ = ["TracedPool", "TracedProcessPoolExecutor", "traced_process"]

_MODULE: Final = "tidescope.integrations.process"
_PORTABLE: Final = (str, int, float, bytes, uuid.UUID)
_MAX_PORTABLE_LEN: Final = 1024


def _child_trace(trace_dir: str | os.PathLike[str] | None) -> ChildTrace | None:
    """What children of this process need to record, or None when capture is off here."""
    session = tidescope.active_session()
    if session is None or _core.active_buffer() is None:
        return None
    return ChildTrace(
        None if trace_dir is None else os.fspath(trace_dir),
        dataclasses.asdict(session.config),
        _core.node(),
        os.getpid(),
    )


def _label(fn: Any) -> str:
    """``module.qualname`` of a callable, read without running its code where possible."""
    try:
        target = fn.func if type(fn) is functools.partial else fn
        module = getattr(target, "__module__", None)
        name = getattr(target, "__qualname__", None) or type(target).__qualname__
        return f"{module}.{name}" if type(module) is str else str(name)
    except Exception:
        return "?"


def _portable(correlation_id: Any, trace_id: str) -> Any:
    t = type(correlation_id)
    if correlation_id is None or t in _PORTABLE:
        if t in (str, bytes) and len(correlation_id) > _MAX_PORTABLE_LEN:
            return trace_id
        return correlation_id
    return trace_id


class _ProcCall:
    """A callable bound for a child process, with the caller's correlation, call and header.

    Picklable whenever the callable is. Made in the caller (which records the send), called
    in the child.
    """

    def __init__(self, fn: Callable[..., Any], trace: ChildTrace, target: str) -> None:
        self.fn = fn
        self.trace = trace
        self.function = _label(fn)
        self.message_id = _core.next_id()
        correlation = _core.current_correlation_id()
        call = _core.current_call_id()
        trace_id = trace_id_for(correlation)
        self.traceparent = format_traceparent(trace_id, span_id_for(call))
        self.correlation_id = _portable(correlation, trace_id)
        self.parent_call_id = call if type(call) is int else None
        report_remote_call_send(
            None,
            target,
            self.traceparent,
            {"message_id": self.message_id, "function": self.function},
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        enter_child(self.trace)
        if _core.active_buffer() is None:
            token = _core.bind_correlation(self.correlation_id)
            try:
                return self.fn(*args, **kwargs)
            finally:
                _core.restore_context(token)
        token = _core.save_context()
        try:
            _core.initialize_context()
            if self.parent_call_id is not None:
                _core.push_call_stack(self.parent_call_id)  # the caller's call, as our parent
            _core.bind_correlation(self.correlation_id)
            report_remote_call_receive(
                None,
                self.trace.parent_node,
                self.traceparent,
                {"message_id": self.message_id, "function": self.function},
            )
            call_id = _core.report_function_entry(
                _MODULE, "run", {"target": self.function, "args": args, "kwargs": kwargs}
            )
            try:
                result = self.fn(*args, **kwargs)
            except BaseException as exc:
                _core.report_function_exit(call_id, exc, exit_reason="exception")
                raise
            _core.report_function_exit(call_id, result)
            return result
        finally:
            _core.restore_context(token)
            flush()


def _wrap(fn: Any, trace_dir: Any, target: str) -> Any:
    """``fn`` bound for a child, or ``fn`` itself when capture is off (or on failure)."""
    if _core.active_buffer() is None or type(fn) is _ProcCall:
        return fn
    if type(fn) is functools.partial and fn.args and type(fn.args[0]) is _ProcCall:
        return fn  # ProcessPoolExecutor.map's chunk runner around a callable already bound
    try:
        trace = _child_trace(trace_dir)
        return fn if trace is None else _ProcCall(fn, trace, target)
    except Exception as exc:
        _core.count_error(exc)
        return fn


def _child_init(trace: ChildTrace, initializer: Any, initargs: tuple[Any, ...]) -> None:
    """A worker's initializer: enter the child (node up), then the user's initializer."""
    enter_child(trace)
    if initializer is not None:
        initializer(*initargs)


def _initializer(
    trace_dir: Any, initializer: Any, initargs: Iterable[Any]
) -> tuple[Any, tuple[Any, ...]]:
    trace = _child_trace(trace_dir)
    if trace is None:
        return initializer, tuple(initargs)
    return _child_init, (trace, initializer, tuple(initargs))


class TracedProcessPoolExecutor(concurrent.futures.ProcessPoolExecutor):
    """``ProcessPoolExecutor`` whose tasks carry the caller's correlation into the child.

    Args:
        trace_dir: where children write their traces when nothing records them already
            (see the module docstring); other arguments are ``ProcessPoolExecutor``'s.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        trace_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self._trace_dir = trace_dir
        init, args = _initializer(trace_dir, initializer, initargs)
        super().__init__(max_workers, mp_context, init, args, **kwargs)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return super().submit(_wrap(fn, self._trace_dir, "ProcessPoolExecutor"), *args, **kwargs)

    def map(self, fn: Any, *iterables: Any, **kwargs: Any) -> Any:
        return super().map(_wrap(fn, self._trace_dir, "ProcessPoolExecutor"), *iterables, **kwargs)


class TracedPool(multiprocessing.pool.Pool):
    """``multiprocessing.Pool`` whose tasks carry the caller's correlation into the child.

    ``apply``, ``apply_async``, ``map``, ``map_async``, ``starmap``, ``starmap_async``,
    ``imap`` and ``imap_unordered`` bind their callable. ``with TracedPool() as pool``
    terminates the workers at the end, as ``Pool`` does: their tasks' events are written,
    their ``"down"`` events are not; ``close()`` and ``join()`` let them leave normally.

    Args:
        trace_dir: where children write their traces when nothing records them already;
            other arguments are ``Pool``'s (``context=multiprocessing.get_context("spawn")``
            chooses the start method).
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        trace_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._trace_dir = trace_dir
        init, args = _initializer(trace_dir, initializer, initargs)
        super().__init__(processes, init, args, maxtasksperchild, context)

    def _bind(self, func: Any) -> Any:
        return _wrap(func, self._trace_dir, "multiprocessing.Pool")

    def apply_async(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return super().apply_async(self._bind(func), *args, **kwargs)

    def map(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return super().map(self._bind(func), *args, **kwargs)

    def map_async(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return super().map_async(self._bind(func), *args, **kwargs)

    def starmap(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return super().starmap(self._bind(func), *args, **kwargs)

    def starmap_async(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return super().starmap_async(self._bind(func), *args, **kwargs)

    def imap(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return super().imap(self._bind(func), *args, **kwargs)

    def imap_unordered(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return super().imap_unordered(self._bind(func), *args, **kwargs)


def traced_process(
    target: Callable[..., object],
    args: Iterable[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    context: BaseContext | None = None,
    trace_dir: str | os.PathLike[str] | None = None,
    **process_kwargs: Any,
) -> BaseProcess:
    """A ``multiprocessing`` Process (not started) running ``target`` with the caller's
    correlation; the child reports node up and down.

    Args:
        context: the multiprocessing context (start method); default the current one.
        trace_dir: where the child writes its trace when nothing records it already.
        **process_kwargs: ``name``, ``daemon``.
    """
    ctx: Any = context if context is not None else multiprocessing.get_context()
    bound = _wrap(target, trace_dir, "multiprocessing.Process")
    process: BaseProcess = ctx.Process(
        target=bound, args=tuple(args), kwargs=dict(kwargs or {}), **process_kwargs
    )
    return process
