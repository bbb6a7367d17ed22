"""Run directories: ``tidescope run`` records each run into a directory of its own.

The layout under the output directory (``tidescope-trace`` by default)::

    tidescope-trace/
      LATEST                      the name of the latest run's directory, one line
      20261202-142501-4242/       one run: a file per process of it
        events-4242.tstrace
        events-4250.tstrace       (a child process that recorded something)
        nodes-4242.jsonl

``LATEST`` is a small regular file, not a symlink: trace files are never written through
a symlink, and a reader trusts no symlink either (a planted ``LATEST`` symlink, or one
named in it, is ignored). It is replaced whole (a new file renamed over it) at the start of
each run. Readers given the output directory read the run ``LATEST`` names; given a run's
own directory, that run; they never merge two runs.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path
from typing import Final

from tidescope.export import _output

__all__ = ["LATEST", "make_run_directory", "run_directory"]

LATEST: Final = "LATEST"
_TRACE_GLOB: Final = "events-*.tstrace"
_MAX_TRIES: Final = 100


def make_run_directory(parent: str | os.PathLike[str]) -> Path:
    """Create ``<parent>/<YYYYmmdd-HHMMSS>-<pid>/`` (mode 0700; ``parent`` too if missing)
    and name it in ``<parent>/LATEST``; returns its absolute path.

    A taken name (a second run in the same second with a reused pid, a planted file or
    symlink) moves on to ``<name>-1`` and so on. Failing to write ``LATEST`` is said once
    and is no error: readers then take the newest run by name.

    Raises:
        OSError: the run directory cannot be created.
    """
    root = _output.make_directory(parent)
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    name = base
    for n in range(1, _MAX_TRIES + 1):
        try:
            os.mkdir(root / name, _output.DIRECTORY_MODE)  # never through a symlink
            break
        except FileExistsError:
            name = f"{base}-{n}"
    else:
        raise FileExistsError(f"no free run directory name in {root}")
    try:
        _write_latest(root, name)
    except OSError as exc:
        _output.notice(f"{root / LATEST} not updated: {_output.describe(exc)}")
    return root / name


def _write_latest(root: Path, name: str) -> None:
    fd, tmp = _output.create_file(root / f".{LATEST}-{os.getpid()}.tmp")
    try:
        try:
            _output.append(fd, f"{name}\n".encode())
        finally:
            os.close(fd)
        os.replace(tmp, root / LATEST)  # replaces a planted symlink itself, never its target
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def run_directory(directory: str | os.PathLike[str]) -> Path:
    """The run a reader given ``directory`` reads: the run ``LATEST`` names; else
    ``directory`` itself if it holds trace files (a run's own directory, or one a
    :class:`~tidescope.export.drain.Drain` wrote to); else its newest run by name; else
    ``directory`` as given."""
    path = Path(directory)
    latest = _named_latest(path)
    if latest is not None:
        return latest
    if next(path.glob(_TRACE_GLOB), None) is not None:
        return path
    try:
        runs = sorted(
            p
            for p in path.iterdir()
            if _is_real_directory(p) and next(p.glob(_TRACE_GLOB), None) is not None
        )
    except OSError:
        return path
    return runs[-1] if runs else path


def _named_latest(path: Path) -> Path | None:
    """The run directory ``<path>/LATEST`` names, if it is a regular file naming one."""
    try:
        fd = os.open(path / LATEST, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        raw = os.read(fd, 256)
    except OSError:
        return None
    finally:
        os.close(fd)
    name = raw.decode("utf-8", "replace").strip()
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        return None
    run = path / name
    return run if _is_real_directory(run) else None


def _is_real_directory(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
