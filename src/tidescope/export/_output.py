"""Trace output that cannot hurt the program: private new files, whole writes, one-line notices.

Every file tidescope creates in an output directory goes through :func:`create_file`: a new
file (never an existing one, never through a symlink someone planted), readable by its
owner only. Every write goes through :func:`append`, which writes all of its bytes or raises;
a caller that catches the error truncates back to its last whole record. Nothing here
prints a traceback: :func:`notice` says one line on stderr, or nothing if stderr is gone.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import sys
from pathlib import Path
from typing import Final

__all__ = ["FILE_MODE", "append", "create_file", "describe", "make_directory", "notice"]

FILE_MODE: Final = 0o600
DIRECTORY_MODE: Final = 0o700
_CREATE_FLAGS: Final = (
    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
)
_MAX_TRIES: Final = 100
# A write past RLIMIT_FSIZE sends SIGXFSZ: Python ignores it, but a program may restore its
# default action, which kills. The kernel sends it to the writing thread, so blocking it
# there around our own writes spares the program and leaves its own writes' fate alone.
_XFSZ: Final = {signal.SIGXFSZ} if hasattr(signal, "SIGXFSZ") else set()


def make_directory(directory: str | os.PathLike[str]) -> Path:
    """``directory`` made absolute (a later ``os.chdir`` cannot move it) and created, mode
    0700, if missing; an existing directory keeps its mode.

    Raises:
        OSError: it cannot be created.
    """
    path = Path(os.path.abspath(directory))
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    return path


def create_file(path: str | os.PathLike[str]) -> tuple[int, Path]:
    """Create ``path`` new, mode 0600, for appending; returns the descriptor and the path.

    If the name is taken (by a file, or by a symlink pointing anywhere), the next free one
    of ``<stem>-1<suffix>``, ``<stem>-2<suffix>``... is used instead: an existing file is
    never opened, followed or truncated. The descriptor is close-on-exec and never 0, 1 or
    2, so a program that closed its standard streams cannot end up printing into the trace.

    Raises:
        OSError: the file cannot be created (``FileExistsError`` after 100 taken names).
    """
    first = Path(path)
    candidate = first
    for n in range(1, _MAX_TRIES + 1):
        try:
            fd = os.open(candidate, _CREATE_FLAGS, FILE_MODE)
        except FileExistsError:
            candidate = first.with_name(f"{first.stem}-{n}{first.suffix}")
            continue
        if fd <= 2:
            low = fd
            try:
                fd = fcntl.fcntl(low, fcntl.F_DUPFD_CLOEXEC, 3)
            finally:
                os.close(low)
        return fd, candidate
    raise FileExistsError(errno.EEXIST, "no free file name", str(first))


def append(fd: int, data: bytes | bytearray) -> None:
    """Write all of ``data`` at the end of ``fd`` or raise; a short write is continued.

    Raises:
        OSError: the write failed (some of ``data`` may have been written).
    """
    view = memoryview(data)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _XFSZ) if _XFSZ else None
    try:
        while view:
            n = os.write(fd, view)
            if n <= 0:  # pragma: no cover - a regular file never writes nothing without an error
                raise OSError(errno.EIO, "write wrote nothing")
            view = view[n:]
    except OSError as exc:
        if exc.errno == errno.EFBIG and _XFSZ:
            signal.sigtimedwait(_XFSZ, 0)  # ours: take it before it is unblocked
        raise
    finally:
        view.release()
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def describe(exc: BaseException) -> str:
    """``exc`` as a short reason: ``No space left on device (ENOSPC)``."""
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{exc.strerror or os.strerror(exc.errno)} ({name})"
    return f"{type(exc).__name__}: {exc}"


def notice(message: str) -> None:
    """Say ``tidescope: <message>`` on stderr as one line; never raises.

    Written to descriptor 2 in one call, after the program's own buffered stderr: nothing
    of ours stays in a Python buffer, so a closed stderr cannot fail the interpreter's
    final flush and change the exit status.
    """
    try:
        if sys.__stderr__ is not None:
            sys.__stderr__.flush()
    except Exception:  # closed, or held by the code a signal interrupted
        pass
    try:
        os.write(2, f"tidescope: {message}\n".encode(errors="backslashreplace"))
    except OSError:
        pass
