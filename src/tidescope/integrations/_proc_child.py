"""Child side of the process integration: recording in a worker process, node up and down.

Once per child process (from the pool's initializer, or from the first task or process
target that reaches it), :func:`enter_child`:

1. makes sure the child records. If a drain already runs here (``tidescope run`` restarts
   its drain in forked children and bootstraps spawned ones, and a forked child of any
   process with a drain gets its own), nothing is added. Otherwise, when the parent gave a
   trace directory, the child records into ``<directory>/events-<pid>.tstrace``: with the
   capture session it inherited (fork), or with a new one made from the parent's
   :class:`tidescope.Config` (spawn);
2. reports ``node_event`` ``"up"`` for this process (``node_name`` its node, metadata its pid
   and the parent's node and pid);
3. registers, through ``multiprocessing.util.Finalize`` (which runs when a multiprocessing
   child leaves normally, ahead of ``tidescope run``'s own flush), the ``"down"`` event and
   the final flush of the drain it started.

A drain started here is also flushed at the end of every task (:func:`flush`), so that a
pool's ``terminate()`` (which kills workers with SIGTERM: no finalizer runs) loses none of
the finished tasks' events; only their ``"down"`` events are missing then.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any

import tidescope
from tidescope.capture import _core
from tidescope.capture.runtime.distributed import report_node_event
from tidescope.config import Config
from tidescope.export.drain import Drain

__all__ = ["ChildTrace", "enter_child", "flush"]

_DRAIN_THREAD = "tidescope-drain"  # the name Drain.start() gives its thread


@dataclasses.dataclass(frozen=True)
class ChildTrace:
    """What a parent hands its children: where to record, with which settings, who it is."""

    directory: str | None
    config: dict[str, Any]
    parent_node: str
    parent_pid: int


class _ProcDrain(Drain):
    """A drain whose passes are serialized, so a task's own flush and the drain thread's
    pass never write batches out of order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pump_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def pump(self) -> int:
        with self._pump_lock:
            return super().pump()

    def _after_fork_in_child(self) -> None:
        self._pump_lock = threading.Lock()  # the parent's drain thread may have held it
        super()._after_fork_in_child()


_lock = threading.Lock()
_entered_pid: int | None = None
_drain: _ProcDrain | None = None


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _recording_here() -> bool:
    """A drain thread runs in this process (``tidescope run``'s, or a user's)."""
    return any(t.name == _DRAIN_THREAD and t.is_alive() for t in threading.enumerate())


def enter_child(trace: ChildTrace | None) -> None:
    """In a child process, once: record if asked, report node up, arrange node down."""
    global _entered_pid, _drain
    if trace is None:
        return
    pid = os.getpid()
    if pid == trace.parent_pid:
        return  # run in the parent itself: it records already
    with _lock:
        if _entered_pid == pid:
            return
        _entered_pid = pid
        _drain = None  # a drain inherited through fork writes the parent's file
    try:
        drain: _ProcDrain | None = None
        own: tidescope.Session | None = None
        if trace.directory is not None and not _recording_here():
            if tidescope.active_session() is None:
                own = tidescope.start(Config(**trace.config))
            drain = _ProcDrain(trace.directory, header={"argv": ["<tidescope process child>"]})
            drain.start()
            _drain = drain
        _report_node("up", trace)
        import multiprocessing.util  # noqa: PLC0415 - children of multiprocessing have it

        # priority 10: before tidescope run's own flush at exit (priority -100)
        multiprocessing.util.Finalize(
            None, _leave_child, args=(trace, drain, own, pid), exitpriority=10
        )
        flush()
    except Exception as exc:
        _core.count_error(exc)


def _report_node(event: str, trace: ChildTrace) -> None:
    token = _core.save_context()
    try:
        _core.initialize_context()  # the node's own event, not part of whatever call forked it
        report_node_event(
            event,
            _core.node(),
            {
                "pid": os.getpid(),
                "parent_node": trace.parent_node,
                "parent_pid": trace.parent_pid,
            },
        )
    finally:
        _core.restore_context(token)


def _leave_child(
    trace: ChildTrace, drain: _ProcDrain | None, own: tidescope.Session | None, pid: int
) -> None:
    if os.getpid() != pid:
        return  # a fork of the child inherited the finalizer
    try:
        _report_node("down", trace)
        if drain is not None:
            stats = own.stop() if own is not None else tidescope.stats()
            drain.stop(stats)
        elif own is not None:
            own.stop()
    except Exception as exc:
        _core.count_error(exc)


def flush() -> None:
    """Write out what this child has recorded so far, if its drain is ours."""
    drain = _drain
    if drain is None or _entered_pid != os.getpid():
        return
    try:
        drain.pump()
    except Exception as exc:
        _core.count_error(exc)
