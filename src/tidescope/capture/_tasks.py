"""Who runs a report: the ids of asyncio tasks, and the notes of threads and tasks.

The twin of ``_context.c``'s task ids and ``_report.c``'s thread note. Both cores number a
task when a report first runs in it, and note a thread at its first root call (off the hot
path: once each; see ``_notes``).
"""

from __future__ import annotations

import threading
from asyncio import current_task as _current_task
from asyncio.events import _get_running_loop
from typing import Any

from tidescope.capture import _clock, _notes

_monotonic_ns = _clock.monotonic_ns
_get_ident = threading.get_ident


def _new_id() -> int:
    from tidescope.capture._pure import next_id  # noqa: PLC0415 - _pure imports this module

    return next_id()


def _count_error(exc: BaseException) -> None:
    from tidescope.capture._pure import count_error  # noqa: PLC0415 - as above

    count_error(exc)


def after_fork_in_child() -> None:
    """Forget the parent's tasks (a child's tasks are new ones)."""
    global _task_ids
    _task_ids = {}


_task_ids: dict[int, int] = {}


def _task_id() -> int | None:
    loop = _get_running_loop()
    return None if loop is None else _loop_task_id(loop)


def _loop_task_id(loop: Any) -> int | None:
    task = _current_task(loop)
    if task is None:
        return None
    tid = _task_ids.get(id(task))
    if tid is None:
        tid = _new_id()
        try:
            # forget the id when the task ends, so a new task at the same address gets its own
            task.add_done_callback(_forget_task)
        except Exception:
            return tid  # a task-like object without callbacks: unique id, not cached
        _task_ids[id(task)] = tid
        _note_task(task, tid)
    return tid


_noted = threading.local()  # .seen: this thread's start is noted (a thread-local dies
# with its thread, so a later thread that gets the same ident is noted again)


def take_notes() -> tuple[list[dict[str, Any]], int]:
    """The thread and task notes since the last call, and how many were lost (the drain
    writes them to the trace before the events it drains after them)."""
    return _notes.take()


def _note_thread(ts: int) -> None:
    """Note this thread's name at its first root call (both cores call this there, ``ts``
    that call's time), so readers can name its track and tell it from an earlier thread
    with the same ident.

    Kept apart from the events (no ring slot): ``{"kind": "thread", "pid", "thread_id",
    "native_id", "name", "timestamp"}``.
    """
    _noted.seen = True
    try:
        # threading's table, not current_thread(): that would register a dummy Thread
        ident = _get_ident()
        thread = threading._active.get(ident)  # type: ignore[attr-defined]
        name = None if thread is None else str(thread.name)[: _notes.MAX_NAME]
        _notes.add({
            "kind": "thread", "pid": _clock.pid(), "thread_id": ident,
            "native_id": threading.get_native_id(), "name": name, "timestamp": ts,
        })  # fmt: skip
    except Exception as exc:
        _count_error(exc)


def note_thread_once() -> None:
    """Note this thread unless it has a note already: for work run under another thread's
    call (its first call is then no root call; ``tidescope.capture._threads``)."""
    try:
        _noted.seen  # noqa: B018
    except AttributeError:
        _note_thread(_monotonic_ns())


def _note_task(task: Any, tid: int) -> None:
    """Note a task's name when it gets its id (both cores number tasks here), as
    ``{"kind": "task", "pid", "task_id", "thread_id", "name", "timestamp"}``."""
    try:
        name = task.get_name()
        name = name[: _notes.MAX_NAME] if type(name) is str else None
    except Exception:
        name = None
    try:
        _notes.add({
            "kind": "task", "pid": _clock.pid(), "task_id": tid, "thread_id": _get_ident(),
            "name": name, "timestamp": _monotonic_ns(),
        })  # fmt: skip
    except Exception as exc:
        _count_error(exc)


def _forget_task(task: Any) -> None:
    _task_ids.pop(id(task), None)


def current_task_id() -> int | None:
    """The id tidescope gives the running asyncio task (unique, unlike ``id(task)``), or None."""
    try:
        return _task_id()
    except Exception as exc:
        _count_error(exc)
        return None
