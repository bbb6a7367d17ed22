"""Which thread or task an event belongs to, and its name, from a trace's ``$note`` records.

A thread is noted at its first root call (``docs/trace-format.md``, NOTES): its ident, OS
thread id, name and the time. An ident that is noted again, after events of an earlier
thread, belongs to a new thread from the note's time on: each such thread is a
*generation* of the ident (0, 1, ...), so readers keep threads apart that the OS gave the
same ident. Tasks have unique ids; their notes give their names.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["MAX_TASK_NAMES", "Tracks"]

MAX_TASK_NAMES: Final = 100_000
"""Task names kept; a task past them is unnamed (memory stays bounded)."""


class _Thread:
    __slots__ = ("gen", "name", "native_id", "notes", "used")

    def __init__(self) -> None:
        self.gen = 0
        self.name: str | None = None
        self.native_id: int | None = None
        self.used = False  # an event of this generation was seen
        self.notes: list[dict[str, Any]] = []  # notes whose time has not come


class Tracks:
    """Thread generations and names, and task names, fed the records in file order."""

    def __init__(self) -> None:
        self.threads: dict[tuple[Any, Any], _Thread] = {}
        self.tasks: dict[tuple[Any, Any], str] = {}
        self.waiting = 0  # thread notes whose time has not come: while 0, no thread changes

    def note(self, note: Any) -> None:
        """Take a ``$note`` record's value."""
        if type(note) is not dict:
            return
        pid = note.get("pid")
        if note.get("kind") == "thread":
            t = self.threads.get((pid, note.get("thread_id")))
            if t is None:
                t = self.threads[(pid, note.get("thread_id"))] = _Thread()
            t.notes.append(note)
            self.waiting += 1
        elif note.get("kind") == "task" and len(self.tasks) < MAX_TASK_NAMES:
            name = note.get("name")
            if type(name) is str:
                self.tasks[(pid, note.get("task_id"))] = name

    def thread(self, pid: Any, ident: Any, ts: Any) -> _Thread:
        """The thread of an event of ``ident`` at time ``ts``: its ``gen`` and ``name``."""
        t = self.threads.get((pid, ident))
        if t is None:
            t = self.threads[(pid, ident)] = _Thread()
        while t.notes and type(ts) is int and ts >= _time(t.notes[0]):
            note = t.notes.pop(0)
            self.waiting -= 1
            if t.used:  # a new thread with an ended one's ident
                t.gen += 1
                t.used = False
            t.name = note.get("name") if type(note.get("name")) is str else None
            t.native_id = note.get("native_id") if type(note.get("native_id")) is int else None
        t.used = True
        return t

    def task(self, pid: Any, task_id: Any) -> str | None:
        """The name of task ``task_id`` of ``pid``, if noted."""
        return self.tasks.get((pid, task_id))


def _time(note: dict[str, Any]) -> int:
    ts = note.get("timestamp")
    return ts if type(ts) is int else 0
