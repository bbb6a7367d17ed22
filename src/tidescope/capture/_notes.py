"""Thread and task notes: names the trace keeps apart from the events (its NOTES chunks).

The core notes a thread at its first root call and a task when it gets its id (off the hot
path: once each); the drain takes the notes after each batch and writes them before it.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["MAX_NAME", "MAX_NOTES", "add", "clear", "take"]

MAX_NOTES: Final = 4096
"""Notes kept between two :func:`take` (a drain's pass); more are counted as lost."""
MAX_NAME: Final = 200
"""Characters of a thread's or task's name kept."""

_notes: list[dict[str, Any]] = []
_lost = 0


def add(note: dict[str, Any]) -> None:
    """Keep ``note`` for the next :func:`take` (from any thread)."""
    global _lost
    if len(_notes) < MAX_NOTES:
        _notes.append(note)
    else:
        _lost += 1


def take() -> tuple[list[dict[str, Any]], int]:
    """The notes since the last call, and how many were lost since."""
    global _lost
    # a copy, then a delete of as many: each one step under the GIL, so a note added by
    # another thread in between stays for the next call
    notes = _notes[:]
    del _notes[: len(notes)]
    lost, _lost = _lost, 0
    return notes, lost


def clear() -> None:
    """Forget every note (a forked child starts with none)."""
    global _lost
    _notes.clear()
    _lost = 0
