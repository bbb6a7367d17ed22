"""Stateful servers (the seed's GenServer shape): callbacks reported with real state snapshots.

An actor is an object holding state, driven by messages through callbacks such as
``handle_call``, ``handle_cast`` and ``handle_info`` (sync or ``async``). Decorate its class
with :func:`actor`, or inherit :class:`Actor`; each callback run while capture is on is
reported through :mod:`tidescope.capture.runtime.actor`: ``actor_callback_start`` with the
state before, then ``actor_callback_success`` (result, new state, diff) or
``actor_callback_error`` (the exception's ``module.qualname`` and the exception), then
``actor_callback_complete`` (state after, diff). Exceptions propagate unchanged.

The state is the attribute named by ``state`` (``"state"``, ``"count"``...), or by default
(``state=None``) the object itself, snapshotted attribute by attribute without running its
code. A state that cannot be read (a property that raises) is recorded as None and counted.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar, overload

from tidescope.capture import _core
from tidescope.capture.runtime.actor import (
    report_actor_callback_complete,
    report_actor_callback_error,
    report_actor_callback_start,
    report_actor_callback_success,
)

__all__ = ["DEFAULT_CALLBACKS", "Actor", "actor", "actor_name"]

C = TypeVar("C", bound=type)

DEFAULT_CALLBACKS: Final = ("init", "handle_call", "handle_cast", "handle_info", "terminate")
"""Methods reported when a class names none: the GenServer callbacks, Python-spelled."""

_MARK: Final = "__tidescope_actor_callback__"
_INHERIT: Final = object()


def _qualname(t: type) -> str:
    try:
        return str(type.__dict__["__qualname__"].__get__(t))  # no metaclass property runs
    except Exception:
        return "?"


def _kind(exc: BaseException) -> str:
    t = type(exc)
    try:
        module = type.__dict__["__module__"].__get__(t)
    except Exception:
        module = "?"
    return f"{module}.{_qualname(t)}"


def actor_name(server: Any) -> str:
    """The name an actor has in events: ``"<class qualname>@<hex id>"``, unique while it lives."""
    return f"{_qualname(type(server))}@{id(server):x}"


def _state_of(server: Any, attr: str | None) -> Any:
    if attr is None:
        return server
    try:
        return getattr(server, attr)
    except Exception as exc:
        _core.count_error(exc)
        return None


def _wrap_callback(fn: Callable[..., Any], callback: str, attr: str | None) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_callback(self: Any, *args: Any, **kwargs: Any) -> Any:
            if _core.active_buffer() is None:
                return await fn(self, *args, **kwargs)
            name = actor_name(self)
            report_actor_callback_start(callback, name, _state_of(self, attr))
            try:
                result = await fn(self, *args, **kwargs)
            except BaseException as exc:
                _after_error(callback, name, self, attr, exc)
                raise
            _after_success(callback, name, self, attr, result)
            return result

        setattr(async_callback, _MARK, True)
        return async_callback

    @functools.wraps(fn)
    def sync_callback(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _core.active_buffer() is None:
            return fn(self, *args, **kwargs)
        name = actor_name(self)
        report_actor_callback_start(callback, name, _state_of(self, attr))
        try:
            result = fn(self, *args, **kwargs)
        except BaseException as exc:
            _after_error(callback, name, self, attr, exc)
            raise
        _after_success(callback, name, self, attr, result)
        return result

    setattr(sync_callback, _MARK, True)
    return sync_callback


def _after_error(
    callback: str, name: str, server: Any, attr: str | None, exc: BaseException
) -> None:
    report_actor_callback_error(callback, name, _kind(exc), exc)
    report_actor_callback_complete(callback, name, _state_of(server, attr))


def _after_success(callback: str, name: str, server: Any, attr: str | None, result: Any) -> None:
    state = _state_of(server, attr)
    report_actor_callback_success(callback, name, result, state)
    report_actor_callback_complete(callback, name, state)


def _instrument(cls: C, state: str | None, callbacks: Iterable[str]) -> C:
    for callback in callbacks:
        fn = getattr(cls, callback, None)
        if fn is None or not callable(fn) or getattr(fn, _MARK, False):
            continue
        if isinstance(inspect.getattr_static(cls, callback, None), (staticmethod, classmethod)):
            continue  # no instance, no state
        setattr(cls, callback, _wrap_callback(fn, callback, state))
    return cls


@overload
def actor(cls: C, /) -> C: ...
@overload
def actor(*, state: str | None = ..., callbacks: Iterable[str] = ...) -> Callable[[C], C]: ...
def actor(
    cls: C | None = None,
    /,
    *,
    state: str | None = None,
    callbacks: Iterable[str] = DEFAULT_CALLBACKS,
) -> C | Callable[[C], C]:
    """Class decorator: report the class's callbacks (``@actor`` or ``@actor(state="n")``).

    Args:
        state: the attribute holding the state; None for the whole object.
        callbacks: the methods to report; those the class lacks are skipped. Callbacks
            inherited from a decorated base are not wrapped twice.

    Returns:
        The class itself, its callbacks replaced by reporting wrappers.
    """
    names = tuple(callbacks)
    if cls is not None:
        return _instrument(cls, state, names)

    def decorate(c: C) -> C:
        return _instrument(c, state, names)

    return decorate


class Actor:
    """Mixin form of :func:`actor`: ``class Counter(Actor, state="count"): ...``.

    Class keywords ``state`` and ``callbacks`` are those of :func:`actor`; a subclass that
    gives none keeps its base's. Each subclass's own callbacks are wrapped when the class is
    created.
    """

    __tidescope_actor__: tuple[str | None, tuple[str, ...]] = (None, DEFAULT_CALLBACKS)

    def __init_subclass__(
        cls,
        /,
        *,
        state: Any = _INHERIT,
        callbacks: Any = _INHERIT,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        base_state, base_callbacks = cls.__tidescope_actor__
        chosen = (
            base_state if state is _INHERIT else state,
            base_callbacks if callbacks is _INHERIT else tuple(callbacks),
        )
        cls.__tidescope_actor__ = chosen
        _instrument(cls, *chosen)
