"""``tidescope.record()``: capture on and a trace file written, in one call (an application
factory, a server's worker start) for programs not started by ``tidescope run``."""

from __future__ import annotations

import os
import threading
from typing import Any

from tidescope import _session
from tidescope.config import Config
from tidescope.export.drain import Drain

__all__ = ["record"]

_lock = threading.Lock()


def record(
    directory: str | os.PathLike[str] = "tidescope-trace",
    config: Config | None = None,
    **settings: Any,
) -> _session.Session:
    """Capture in every thread and task of this process and write the trace to
    ``directory/events-<pid>.tstrace`` until the process ends.

    The call for an application factory: each worker process of a server that calls it
    writes its own file in ``directory``, and ``tidescope show directory`` reads them all.
    The file is closed however the process ends, as in ``tidescope run``: a normal exit,
    a ``multiprocessing`` worker's exit (uvicorn's ``--workers``), ``os._exit``, SIGTERM,
    a server that re-raises SIGTERM on itself; a forked worker of a process that called
    it writes its own file too. Calling it again while capture is on returns the
    active session unchanged. Only requests, queries and other integration events are
    recorded: the application's own calls need its modules instrumented, which ``tidescope
    run`` does.

    Args:
        directory: where the trace files go; created (mode 0700) if missing.
        config: a complete Config; otherwise one is loaded from ``settings`` and the
            ``TIDESCOPE_*`` environment variables.
        **settings: Config settings, as for :func:`tidescope.start`.

    Raises:
        ConfigError: a setting is invalid.
        OSError: ``directory`` cannot be created or written.
    """
    with _lock:
        active = _session.active_session()
        if active is not None:
            return active
        session = _session.start(config, **settings)
        try:
            drain = Drain(directory).start()
        except BaseException:
            session.stop()
            raise
        from tidescope import runner  # noqa: PLC0415 - its exit paths close the file

        runner.close_at_exit(session, drain)
    return session
