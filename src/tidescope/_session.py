"""The long-lived capture session behind ``tidescope.start()`` / ``tidescope.stop()``."""

from __future__ import annotations

import os
import threading
from typing import Any

import tidescope.capture._threads  # noqa: F401  (parents across threads while capture is on)
from tidescope.capture import _core, _redact
from tidescope.capture._core import Limits
from tidescope.capture.ring_buffer import RingBuffer
from tidescope.config import Config

__all__ = ["Session", "active_session", "core_info", "start", "stats", "stop"]

# Reentrant: a signal handler that stops capture (``tidescope run``'s SIGTERM, or a user's)
# may run on the main thread while it is inside start() or stop(); a plain Lock would then
# wait for itself forever.
_lock = threading.RLock()
_active: Session | None = None


class Session:
    """One capture run: its Config and the buffer every report writes to."""

    __slots__ = ("_buffer", "config")

    def __init__(self, config: Config, buffer: RingBuffer | None) -> None:
        self.config = config
        self._buffer = buffer

    @property
    def buffer(self) -> RingBuffer | None:
        """The session's buffer (after a fork, the child's fresh one)."""
        return self._buffer

    @property
    def active(self) -> bool:
        """True until the session is stopped."""
        return self is _active

    def stats(self) -> dict[str, Any]:
        """Buffer counters plus ``internal_errors`` and the core in use."""
        out: dict[str, Any] = dict(self._buffer.stats()) if self._buffer is not None else {}
        errors, last = _core.internal_errors()
        out["internal_errors"] = errors
        out["last_internal_error"] = last
        out["core"] = _core.CORE_NAME
        return out

    def stop(self) -> dict[str, Any]:
        """Stop capturing (if this session is the active one); returns its final stats."""
        global _active
        with _lock:
            if _active is self:
                _core.set_enabled(False)
                _core.register_buffer(None)
                _active = None
        return self.stats()

    def __repr__(self) -> str:
        state = "active" if self.active else "stopped"
        return f"<tidescope.Session {state} buffer={self._buffer!r}>"


def _limits_of(cfg: Config) -> Limits:
    return Limits(
        cfg.max_depth, cfg.max_items, cfg.max_string, cfg.max_event_bytes, cfg.repr_objects
    )


def _redact_as(cfg: Config) -> None:
    _redact.configure(cfg.redact, cfg.redact_pattern, cfg.redact_extra)


def activate(cfg: Config) -> Session:
    """Install ``cfg``: a fresh buffer, the value limits, the node name; capture on.

    Raises:
        CoreSelectionError: ``TIDESCOPE_CORE`` asks for a core that cannot be used.
    """
    global _active
    if _core.CORE_ERROR is not None:
        raise _core.CoreSelectionError(_core.CORE_ERROR)
    _core.set_node(cfg.node)  # first: a buffer records the node name when it is made
    buf = (
        RingBuffer(cfg.buffer_size, cfg.overflow_strategy, cfg.block_timeout)
        if cfg.enabled
        else None
    )
    session = Session(cfg, buf)
    _core.set_limits(_limits_of(cfg))
    _core.set_value_policy(cfg.values, cfg.deep_modules)
    _redact_as(cfg)
    _core.resync_clock()
    _core.register_buffer(buf)
    _core.initialize_context()
    _core.set_enabled(buf is not None)
    _active = session
    return session


def start(config: Config | None = None, **settings: Any) -> Session:
    """Start capturing in every thread and task of this process.

    Args:
        config: a complete Config; otherwise one is loaded from ``settings`` and the
            ``TIDESCOPE_*`` environment variables (see :meth:`Config.load`).
        **settings: Config settings, applied over ``config`` or the environment.

    Returns:
        The active :class:`Session`; its ``buffer`` is where events go.

    Raises:
        RuntimeError: capture is already started.
        ConfigError: a setting is invalid.
        CoreSelectionError: ``TIDESCOPE_CORE`` asks for a core that cannot be used.
    """
    cfg = config.replace(**settings) if config is not None else Config.load(**settings)
    with _lock:
        if _active is not None:
            raise RuntimeError("tidescope is already started; call tidescope.stop() first")
        return activate(cfg)


def stop() -> dict[str, Any]:
    """Stop capturing; returns the stopped session's stats (``{}`` if none was active)."""
    session = _active
    return session.stop() if session is not None else {}


def active_session() -> Session | None:
    """The running session, or None."""
    return _active


def swap_session(session: Session | None) -> None:
    """Make ``session`` (or none) the active one again, as ``capture()`` does on exit."""
    global _active
    _active = session
    if session is None or session.buffer is None:
        _core.set_enabled(False)
        _core.register_buffer(None)
        _redact.configure(True)  # the default again, as before any session
        return
    _core.set_limits(_limits_of(session.config))
    _core.set_value_policy(session.config.values, session.config.deep_modules)
    _redact_as(session.config)
    _core.set_node(session.config.node)
    _core.register_buffer(session.buffer)
    _core.set_enabled(True)


def stats() -> dict[str, Any]:
    """Stats of the active session, or of the core alone when none is active."""
    session = _active
    if session is not None:
        return session.stats()
    errors, last = _core.internal_errors()
    return {"internal_errors": errors, "last_internal_error": last, "core": _core.CORE_NAME}


def core_info() -> dict[str, str]:
    """Which core runs (``"c"`` or ``"python"``) and why."""
    return {"core": _core.CORE_NAME, "reason": _core.CORE_REASON}


def _after_fork_in_child() -> None:
    # the core has already swapped in a fresh buffer; the session follows it
    global _lock
    _lock = threading.RLock()
    if _active is not None:
        _active._buffer = _core.get_buffer()


os.register_at_fork(after_in_child=_after_fork_in_child)
