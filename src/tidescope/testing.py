"""``tidescope.capture()``: record what a block of code does, for your own tests."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from tidescope import _session
from tidescope.capture import _core
from tidescope.config import Config
from tidescope.events import Event, EventType

__all__ = ["Capture", "capture"]


class Capture:
    """A temporary session: a fresh buffer, capture on inside the ``with`` block.

    The session that was active before (if any) is restored on exit, and this context's
    call stack with it. ``events()`` returns everything captured so far, in order; events
    past the buffer's size are lost as the overflow strategy says and counted in
    ``stats()["dropped_events"]``: size the buffer for the block.
    """

    def __init__(self, config: Config | None = None, **settings: Any) -> None:
        self._config = config.replace(**settings) if config is not None else Config.load(**settings)
        self._events: list[Event] = []
        self._session: _session.Session | None = None
        self._previous: _session.Session | None = None
        self._context: Any = None

    def __enter__(self) -> Capture:
        self._previous = _session.active_session()
        self._context = _core.save_context()
        self._session = _session.activate(self._config)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._collect()
        _session.swap_session(self._previous)
        _core.restore_context(self._context)

    def _collect(self) -> None:
        buf = self._session.buffer if self._session is not None else None
        if buf is not None:
            self._events.extend(buf.drain())

    def events(self, event_type: EventType | str | None = None) -> list[Event]:
        """The captured events in order (only those of ``event_type`` if given)."""
        self._collect()
        if event_type is None:
            return list(self._events)
        return [e for e in self._events if e.event_type == event_type]

    def stats(self) -> dict[str, Any]:
        """The capture buffer's counters, ``internal_errors`` and the core."""
        return self._session.stats() if self._session is not None else {}

    @property
    def session(self) -> _session.Session | None:
        """The session this capture runs (None before ``__enter__``)."""
        return self._session


def capture(config: Config | None = None, **settings: Any) -> Capture:
    """Capture a block: ``with tidescope.capture(buffer_size=4096) as cap: ...``.

    Settings are those of :class:`tidescope.Config` (``TIDESCOPE_*`` variables apply too).
    """
    return Capture(config, **settings)
