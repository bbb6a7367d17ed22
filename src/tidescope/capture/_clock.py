"""Process identity, ids and clocks of the capture core.

Ids are ints ``(sequence << 22) | pid``: unique in a process and across its forks (the
child's ids carry its own pid), sortable by creation order within a process, and free of
random bits. Linux pids are below 2**22; elsewhere a pid is taken modulo 2**22.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from typing import Final

__all__ = ["PID_BITS", "id_parts", "monotonic_ns", "node", "pid", "resync_clock", "set_node"]

PID_BITS: Final = 22
"""Low bits of every id hold the pid; the rest is a sequence that never wraps."""

_ID_STEP: Final = 1 << PID_BITS
monotonic_ns: Final = time.monotonic_ns

_pid = os.getpid()
wall_offset = time.time_ns() - time.monotonic_ns()
"""Added to a monotonic timestamp to give wall time; see :func:`resync_clock`."""
_node = ""
_node_configured = False


def new_ids() -> itertools.count[int]:
    """A fresh id counter for this process: ``(sequence << 22) | pid``, sequence from 1."""
    return itertools.count(_ID_STEP | (_pid & (_ID_STEP - 1)), _ID_STEP)


def id_parts(any_id: int) -> tuple[int, int]:
    """Split an id into ``(sequence, pid_tag)``."""
    return any_id >> PID_BITS, any_id & (_ID_STEP - 1)


def resync_clock() -> int:
    """Resample the offset that turns monotonic timestamps into wall time; returns it.

    ``wall_time`` of an event is its monotonic ``timestamp`` plus this offset, sampled at
    import, at ``start()``, after fork and whenever a drain calls this. Between samples it
    drifts only by NTP slewing (parts per million), never by a clock step: reading one
    clock instead of two saves about 60 ns per event in the pure core.
    """
    global wall_offset
    wall_offset = time.time_ns() - time.monotonic_ns()
    return wall_offset


def set_node(name: str | None) -> None:
    """Name this process in events; ``None`` restores ``<hostname>:<pid>``."""
    global _node, _node_configured
    _node_configured = name is not None
    _node = name if name is not None else f"{socket.gethostname()}:{_pid}"


def node() -> str:
    """This process's node name."""
    return _node


def pid() -> int:
    """This process's pid, as of the last fork."""
    return _pid


def after_fork_in_child() -> None:
    """Take the child's pid and node name and resample the wall clock."""
    global _pid
    _pid = os.getpid()
    if not _node_configured:
        set_node(None)
    resync_clock()


set_node(None)
