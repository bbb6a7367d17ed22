"""asyncio integration: task create/start/done/cancel events, queue messages that join up,
and stateful servers' callbacks (the seed's GenServer shape).

Tasks. ``instrument_asyncio()`` (inside a running loop, or given a loop) installs a task
factory that chains any factory already set. Each task created while capture is on yields:

* ``process_spawn`` ``{kind: "task", phase: "create", spawn_id, parent_task_id, coroutine,
  name}`` in the creating context (its envelope ``task_id`` is the parent task, its
  ``call_id`` the call that created the task);
* ``process_spawn`` ``{phase: "start", spawn_id, task_id, parent_task_id}`` from inside the
  task at its first step (the envelope ``task_id`` is the new task);
* ``process_exit`` ``{phase: "done", exit_reason: "normal" | "exception", result or
  exception, lifetime_ns}`` or ``{phase: "cancel", exit_reason: "cancelled"}`` when the task
  ends, from inside the task (a task cancelled before its first step ends without a start).

``spawn_id`` joins the events of one task; task ids are tidescope's
(:func:`tidescope.capture.context.current_task_id`), never ``id(task)``. The task's
coroutine is wrapped in a proxy that forwards ``send``/``throw``/``close`` and every
attribute (``cr_frame``, ``__qualname__``...), so task reprs and stacks look as before;
``task.get_coro()`` returns the proxy. With capture off the factory only delegates.

On CPython 3.13.0, asyncio names every unnamed task made through any task factory
``"None"`` (``create_task`` calls ``task.set_name(None)``); this factory cannot undo that.

Queues. :class:`TracedQueue` (and its LIFO and priority twins) record ``message_send``
``{sender, to, message, message_id}`` on put and ``message_receive`` ``{receiver, sender,
queue, message, message_id, queue_time_ns}`` on get; ``message_id`` joins the two.
``sender`` and ``receiver`` are task ids, ``to``/``queue`` the queue's name.

Actors. :func:`actor` (a class decorator) and :class:`Actor` (a mixin) report a stateful
server's callbacks through :mod:`tidescope.capture.runtime.actor`.

Everything fails open: an error inside the integration is counted in
``tidescope.stats()["internal_errors"]`` and the application runs on unchanged.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import os
import time
import weakref
from collections.abc import Generator, Iterator
from typing import Any, Final, Generic, Protocol, TypeVar, cast

from tidescope.capture import _core, ingestor
from tidescope.capture.runtime.core import emit_in_context
from tidescope.events import EventType
from tidescope.integrations._async_actor import Actor, actor, actor_name

__all__ = [
    "Actor",
    "TracedLifoQueue",
    "TracedPriorityQueue",
    "TracedQueue",
    "actor",
    "actor_name",
    "instrument_asyncio",
    "instrumented",
    "new_event_loop",
    "uninstrument_asyncio",
]

T = TypeVar("T")


class _Ordered(Protocol):
    def __lt__(self, other: Any, /) -> Any: ...


OrderedT = TypeVar("OrderedT", bound=_Ordered)

_SPAWN: Final = EventType.PROCESS_SPAWN
_EXIT: Final = EventType.PROCESS_EXIT
_RECEIVE: Final = EventType.MESSAGE_RECEIVE
_CancelledError: Final = asyncio.CancelledError
_clock: Final = time.monotonic_ns


def _emit(event_type: EventType, data: dict[str, Any]) -> None:
    # ids first in ``data``: the payload's byte budget is spent in order, so a huge result
    # or message cannot cut the ids that join events up
    emit_in_context(ingestor.ingest_generic_event, event_type, data)


# ---------------------------------------------------------------------------------------
# tasks


def _name_of(coro: Any) -> Any:
    try:
        name = getattr(coro, "__qualname__", None)
        return name if type(name) is str else None
    except Exception:
        return None


class _TracedCoroutine(collections.abc.Coroutine[Any, Any, Any]):
    """A task's coroutine, forwarded step by step, reporting its start and its end."""

    __slots__ = ("_coro", "_created_ns", "_parent_task_id", "_spawn_id", "_started", "_task_id")

    def __init__(self, coro: Any, spawn_id: int, parent_task_id: Any) -> None:
        self._coro = coro
        self._spawn_id = spawn_id
        self._parent_task_id = parent_task_id
        self._created_ns = _clock()
        self._started = False
        self._task_id: Any = None

    def send(self, value: Any) -> Any:
        if not self._started:
            self._start()
        try:
            return self._coro.send(value)
        except StopIteration as stop:
            self._end(None, stop.value)
            raise
        except BaseException as exc:
            self._end(exc, None)
            raise

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        try:
            if val is None and tb is None:
                return self._coro.throw(typ)
            return self._coro.throw(typ, val, tb)
        except StopIteration as stop:
            self._end(None, stop.value)
            raise
        except BaseException as exc:
            self._end(exc, None)
            raise

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return cast("Generator[Any, None, Any]", self._coro.__await__())

    def __getattr__(self, name: str) -> Any:
        # only reached for names the proxy lacks: cr_frame, cr_await, __qualname__, ...
        if name in _TracedCoroutine.__slots__:
            raise AttributeError(name)
        return getattr(self._coro, name)

    def _start(self) -> None:
        self._started = True
        try:
            self._task_id = _core.current_task_id()
            if _core.active_buffer() is None:
                return
            _emit(
                _SPAWN,
                {
                    "spawn_id": self._spawn_id,
                    "kind": "task",
                    "phase": "start",
                    "task_id": self._task_id,
                    "parent_task_id": self._parent_task_id,
                },
            )
        except Exception as exc:
            _core.count_error(exc)

    def _end(self, exc: BaseException | None, result: Any) -> None:
        try:
            if _core.active_buffer() is None:
                return
            if exc is not None and issubclass(type(exc), GeneratorExit):
                return  # closed unfinished (a loop torn down): nothing ended
            data: dict[str, Any] = {
                "spawn_id": self._spawn_id,
                "kind": "task",
                "task_id": self._task_id if self._started else _core.current_task_id(),
                "parent_task_id": self._parent_task_id,
                "lifetime_ns": _clock() - self._created_ns,
            }
            if exc is None:
                data.update(phase="done", exit_reason="normal", result=result)
            elif issubclass(type(exc), _CancelledError):
                data.update(phase="cancel", exit_reason="cancelled")
            else:
                data.update(
                    phase="done",
                    exit_reason="exception",
                    exception=ingestor.snapshot_exception(exc),
                )
            _emit(_EXIT, data)
        except Exception as err:
            _core.count_error(err)


class _TaskFactory:
    """The loop's task factory while instrumented: reports creation, wraps the coroutine,
    then builds the task as the factory it replaced would have."""

    __slots__ = ("__weakref__", "active", "prior")

    def __init__(self, prior: Any) -> None:
        self.prior = prior
        self.active = True

    def __call__(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        if self.active and _core.active_buffer() is not None:
            coro = _wrap(coro, kwargs.get("name"))
        if self.prior is not None:
            return self.prior(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)


def _wrap(coro: Any, name: Any) -> Any:
    """``coro`` wrapped and its creation reported; ``coro`` itself on any failure."""
    try:
        if not asyncio.iscoroutine(coro) or type(coro) is _TracedCoroutine:
            return coro  # not ours to wrap: the Task raises its own TypeError
        spawn_id = _core.next_id()
        parent = _core.current_task_id()
        traced = _TracedCoroutine(coro, spawn_id, parent)
        _emit(
            _SPAWN,
            {
                "spawn_id": spawn_id,
                "kind": "task",
                "phase": "create",
                "parent_task_id": parent,
                "parent_pid": os.getpid(),
                "coroutine": _name_of(coro),
                "name": name,
            },
        )
        return traced
    except Exception as exc:
        _core.count_error(exc)
        return coro


_factories: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _TaskFactory] = (
    weakref.WeakKeyDictionary()
)


def _loop_or_running(loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    return loop if loop is not None else asyncio.get_running_loop()


def instrument_asyncio(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Report the tasks ``loop`` creates from now on (default: the running loop).

    Chains the task factory already set, if any. Calling it twice changes nothing.

    Raises:
        RuntimeError: no ``loop`` given and no loop is running here.
    """
    loop = _loop_or_running(loop)
    factory = _factories.get(loop)
    if factory is not None:
        factory.active = True
        return
    factory = _TaskFactory(loop.get_task_factory())
    loop.set_task_factory(factory)
    _factories[loop] = factory


def uninstrument_asyncio(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Stop reporting ``loop``'s new tasks (default: the running loop); tasks already made
    keep reporting their end.

    The previous task factory is put back unless another was chained over ours since, in
    which case ours stays in the chain, passing tasks through.

    Raises:
        RuntimeError: no ``loop`` given and no loop is running here.
    """
    loop = _loop_or_running(loop)
    factory = _factories.pop(loop, None)
    if factory is None:
        return
    factory.active = False
    prior = factory.prior
    if loop.get_task_factory() is factory:
        loop.set_task_factory(prior)


@contextlib.contextmanager
def instrumented(loop: asyncio.AbstractEventLoop | None = None) -> Iterator[None]:
    """:func:`instrument_asyncio` for the block, then :func:`uninstrument_asyncio`."""
    loop = _loop_or_running(loop)
    instrument_asyncio(loop)
    try:
        yield
    finally:
        uninstrument_asyncio(loop)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop, already instrumented: the ``loop_factory`` of ``asyncio.Runner``
    (and of ``asyncio.run`` from Python 3.12), so the main task is reported too."""
    loop = asyncio.new_event_loop()
    instrument_asyncio(loop)
    return loop


# ---------------------------------------------------------------------------------------
# queues


class _Envelope:
    """A queued item with its message id; compares as the item (for priority queues)."""

    __slots__ = ("item", "message_id", "sender", "sent_ns")

    def __init__(self, item: Any, message_id: Any, sender: Any, sent_ns: int) -> None:
        self.item = item
        self.message_id = message_id
        self.sender = sender
        self.sent_ns = sent_ns

    def __lt__(self, other: Any) -> Any:
        return self.item < (other.item if type(other) is _Envelope else other)

    def __gt__(self, other: Any) -> Any:
        return (other.item if type(other) is _Envelope else other) < self.item


class TracedQueue(asyncio.Queue[T], Generic[T]):
    """An ``asyncio.Queue`` whose puts and gets are ``message_send`` / ``message_receive``
    events sharing a ``message_id``.

    Args:
        maxsize: as for ``asyncio.Queue``.
        name: the queue's name in events (default ``"<class>#<id>"``, unique in the process).
    """

    _always_wrap: bool = False

    def __init__(self, maxsize: int = 0, *, name: str | None = None) -> None:
        super().__init__(maxsize)
        self.name = name if name is not None else f"{type(self).__name__}#{_core.next_id()}"

    def _put(self, item: T) -> None:
        if _core.active_buffer() is not None:
            stored: Any = self._send(item)
        elif self._always_wrap:
            stored = _Envelope(item, None, None, 0)
        else:
            stored = item
        super()._put(stored)

    def _get(self) -> T:
        stored: Any = super()._get()
        if type(stored) is not _Envelope:
            return cast("T", stored)
        if stored.message_id is not None and _core.active_buffer() is not None:
            self._receive(stored)
        return cast("T", stored.item)

    def _send(self, item: Any) -> Any:
        try:
            mid = _core.next_id()
            sender = _core.current_task_id()
            env = _Envelope(item, mid, sender, _clock())
            emit_in_context(
                ingestor.ingest_message_send, self.name, item, sender=sender, message_id=mid
            )
            return env
        except Exception as exc:
            _core.count_error(exc)
            return _Envelope(item, None, None, 0) if self._always_wrap else item

    def _receive(self, env: _Envelope) -> None:
        try:
            _emit(
                _RECEIVE,
                {
                    "message_id": env.message_id,
                    "receiver": _core.current_task_id(),
                    "sender": env.sender,
                    "queue": self.name,
                    "queue_time_ns": _clock() - env.sent_ns,
                    "message": env.item,
                },
            )
        except Exception as exc:
            _core.count_error(exc)


class TracedLifoQueue(TracedQueue[T], asyncio.LifoQueue[T]):
    """:class:`TracedQueue` taking the last item put first."""


class TracedPriorityQueue(TracedQueue[OrderedT], asyncio.PriorityQueue[OrderedT]):
    """:class:`TracedQueue` taking the lowest item first. Items are compared as they are;
    every item is wrapped, capture on or off, so wrapped and bare ones never meet."""

    _always_wrap = True
