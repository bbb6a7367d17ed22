"""The pure-Python core: its state, the snapshots of the report path and the report path.

With ``_callstack`` (the call stack), ``_tasks`` (task ids, thread and task notes), ``_ring``,
``_snapshot`` and ``_clock``, this is the specification that the C accelerator mirrors name
for name: this module is the twin of ``_speedups.c`` (state, ``attach``/``sync``),
``_snap.c`` (the fast snapshots and the value policy) and ``_report.c`` (the report path).
Everything here runs inside instrumented code, so the rules of DESIGN.md invariant 1 apply
to every line: no exception escapes a ``report_*`` call, nothing blocks except a ``block``
write. Tests and ``_core`` import every public name from here.
"""

from __future__ import annotations

import fnmatch
import os
import threading
from asyncio.events import _get_running_loop
from typing import Any, Final

from tidescope.capture import _callstack, _clock, _notes, _redact, _snapshot, _tasks
from tidescope.capture._callstack import (
    _OFF,
    _stack,
    _unwind,
    bind_correlation,
    call_stack,
    clear_context,
    current_call_id,
    current_correlation_id,
    disable_here,
    frame_ids,
    initialize_context,
    pop_call_stack,
    push_call_stack,
    restore_context,
    save_context,
)
from tidescope.capture._raise import raised_at
from tidescope.capture._ring import RingBuffer
from tidescope.capture._sites import table as _site_table
from tidescope.capture._snapshot import (
    _LOG2_10,
    KEEP_TYPES,
    Limits,
    Snapper,
    exception_snapshot,
    type_name,
)
from tidescope.capture._tasks import (
    _loop_task_id,
    _note_thread,
    _noted,
    _task_id,
    current_task_id,
    note_thread_once,
    take_notes,
)
from tidescope.events import Event, EventType, ObjectRef, Redacted, Truncated

# the context and task functions live in _callstack and _tasks; _core imports them from here
__all__ = [
    "bind_correlation",
    "call_stack",
    "clear_context",
    "current_call_id",
    "current_correlation_id",
    "current_task_id",
    "disable_here",
    "frame_ids",
    "initialize_context",
    "note_thread_once",
    "pop_call_stack",
    "push_call_stack",
    "restore_context",
    "save_context",
    "take_notes",
]

CORE_NAME: Final = "python"

_monotonic_ns = _clock.monotonic_ns
_new_ids: Any = _clock.new_ids
_ids = _new_ids()
_INT64: Final = 1 << 63  # ints kept without the full snapshot's size check


def next_id() -> int:
    """A new id, unique in this process and across its forks (see ``_clock``)."""
    return int(next(_ids))


# ---------------------------------------------------------------------------------------
# bounded snapshots with the configured limits

_limits = Limits()


def set_limits(limits: Limits) -> None:
    """Set the limits every report uses (``start()`` does this from its Config)."""
    global _limits, _f_items, _f_str, _f_top_str, _f_int, _f_budget, _f_depth
    _limits = limits
    _f_items, _f_str, _f_top_str, _f_int, _f_budget, _f_depth = _fast_limits(limits)
    _site_keys.clear()
    _sync()


def get_limits() -> Limits:
    """The limits every report uses."""
    return _limits


def _snap(value: Any, lim: Limits) -> Any:
    """The full snapshot of one value of an event (the C core calls this off its fast
    paths). A value the snapshot cannot handle becomes an ``"error"`` marker naming the
    failure, counted; the event is kept."""
    try:
        return Snapper(lim).snap(value)
    except Exception as exc:
        return _error_marker(value, exc)


def _exc_snap(value: Any, lim: Limits) -> Any:
    """An exception's snapshot for an exit event (the C core calls this); as ``_snap``."""
    try:
        snap = exception_snapshot(Snapper(lim), value)
        if type(snap) is dict:  # exception exits are rare: where it was raised is cheap here
            snap["where"] = raised_at(value)
        return snap
    except Exception as exc:
        return _error_marker(value, exc)


def _error_marker(value: Any, exc: Exception) -> Truncated:
    count_error(exc)
    return Truncated(type_name(type(value)), 0, "error", type_name(type(exc)))


def snapshot(value: Any, limits: Limits | None = None) -> Any:
    """A bounded, independent copy of ``value``, taken now.

    Immutable scalars are kept as they are; containers are copied; strings, bytes, ints and
    containers past the limits become :class:`Truncated` markers that carry the original
    size; other objects become :class:`ObjectSnapshot` without their code being run (no
    ``__repr__``, ``__len__``, ``__iter__``, ``__eq__`` or ``__getattr__``). Never raises.
    """
    try:
        return Snapper(limits or _limits).snap(value)
    except Exception as exc:  # a bug in the snapshot must not reach the caller
        count_error(exc)
        return Truncated(type_name(type(value)), 0, "error")


def snapshot_many(*values: Any, limits: Limits | None = None) -> tuple[Any, ...]:
    """Snapshots of several values of one event, sharing that event's byte budget."""
    try:
        s = Snapper(limits or _limits)
        return tuple(s.snap(v) for v in values)
    except Exception as exc:
        count_error(exc)
        return tuple(Truncated(type_name(type(v)), 0, "error") for v in values)


# The fast paths below keep a value as it is, or copy a container of such values in one
# step, only where the full snapshot would give an equal result (see _snapshot.flat_cost):
# every scalar one it keeps whole, containers within max_items and max_depth, and the
# bytes it would charge within the event's budget.
_SMALL: Final = 8  # what Snapper charges for a number, a reference or a container
_f_items = 20  # max_items
_f_str = 256  # longest str kept whole inside a container
_f_top_str = 256  # longest str kept whole as a value of its own
_f_int = _INT64  # ints kept are strictly within +-_f_int
_f_budget = 4096  # max_event_bytes
_f_depth = 3  # max_depth: container levels the snapshot opens


def _fast_limits(lim: Limits) -> tuple[int, int, int, int, int, int]:
    """The fast paths' bounds for ``lim`` (the C core gets the same tuple)."""
    int_limit = min(_INT64, 1 << int(lim.max_string * _LOG2_10))  # Snapper's int rule
    top = min(lim.max_string, lim.max_event_bytes - _SMALL)
    return (lim.max_items, lim.max_string, top, int_limit, lim.max_event_bytes, lim.max_depth)


def _flat(v: Any, t: type) -> Any:
    """``v`` (a tuple, list or dict) copied in one step, or None if the snapshot of it would
    cut anything."""
    cost = _snapshot._flat_cost(v, t, _f_str, _f_int, _f_items, _f_depth)
    if cost < 0 or cost > _f_budget:
        return None
    return _snapshot._flat_copy(v, _f_depth)


def _snap_value(v: Any, lim: Limits) -> Any:
    """A snapshot of one value of an event: kept as it is when it is an immutable scalar the
    snapshot keeps, copied in one step when it is a container of them, else the full
    snapshot."""
    t = type(v)
    if (
        (t is int and -_f_int < v < _f_int)
        or t in KEEP_TYPES
        or (t is str and len(v) <= _f_top_str)
    ):
        return v
    if t is tuple or t is list or t is dict:
        flat = _flat(v, t)
        if flat is not None:
            return flat
    return _snap(v, lim)


def flat_event(request_id: Any, data: dict[str, Any]) -> dict[str, Any] | None:
    """A domain event's data kept whole in one step, or None when the snapshot might cut
    something (then the caller takes the full snapshot).

    ``request_id`` is snapshotted first by the full path and charged to the same budget;
    here it must be None or a scalar kept as it is.
    """
    budget = _f_budget
    if request_id is not None:
        t = type(request_id)
        if t is str and len(request_id) <= _f_top_str:
            budget -= len(request_id) + _SMALL
        elif (t is int and -_f_int < request_id < _f_int) or t in KEEP_TYPES:
            budget -= _SMALL
        else:
            return None
    got = _snapshot._flat_payload(data, _f_str, _f_int, _f_items, budget, _f_depth)
    return None if got is None else got[0]


def _snap_args(args: Any, lim: Limits) -> tuple[Any, int | None]:
    """Snapshot a call's arguments; returns ``(snapshot, arity)``.

    The common case, a tuple of a few small scalars, is kept as it is (immutable all the
    way down); other tuples, lists and dicts (the import hook passes arguments bound to
    their names) of kept values are copied in one step; anything else takes the full
    snapshot.
    """
    t = type(args)
    if t is tuple or t is list or t is dict:
        flat = _flat(args, t)
        return (_snap(args, lim) if flat is None else flat), len(args)
    if args is None:
        return None, 0
    return _snap(args, lim), None


# ---------------------------------------------------------------------------------------
# the value policy of call reports: "deep" (the bounded snapshot above) or "ref" (scalars by
# value, every other object as an ObjectRef: no attribute walk, no item copy, no user code)

VALUE_POLICIES: Final = ("auto", "ref", "deep")
_values = "auto"  # the setting (Config.values)
_level: str | None = None  # the import hook's level, which decides "auto"
_deep_patterns: tuple[str, ...] = ()  # Config.deep_modules
_by_ref = False  # the policy of every call report, unless _policy is set
# module name or ast_node_id -> True (by reference) / False (deep); None when no module
# pattern can change the policy: then no report looks anything up
_policy: dict[str, bool] | None = None
_POLICY_CACHE_MAX: Final = 65536


def set_value_policy(values: str = "auto", deep_modules: tuple[str, ...] = ()) -> None:
    """Set how call reports record arguments and return values (``start()`` does this).

    ``"ref"`` keeps scalars by value and records every other object as an ObjectRef;
    ``"deep"`` takes the bounded snapshot; ``"auto"`` is ``"ref"`` when the import hook
    rewrites at level ``calls`` and ``"deep"`` otherwise. ``deep_modules`` are fnmatch
    patterns of module names (``"pkg.*"`` also matches ``pkg``) whose calls are deep
    whatever the policy.
    """
    global _values, _deep_patterns
    if values not in VALUE_POLICIES:
        raise ValueError(f"values must be one of {VALUE_POLICIES}, got {values!r}")
    _values = values
    _deep_patterns = tuple(deep_modules)
    _apply_policy()


def set_level(level: str | None) -> None:
    """Tell the core the import hook's level (it decides the ``"auto"`` value policy)."""
    global _level
    _level = level
    _apply_policy()


def value_policy() -> str:
    """The value policy in force: ``"ref"`` or ``"deep"`` (before any module pattern)."""
    return "ref" if _by_ref else "deep"


def _apply_policy() -> None:
    global _by_ref, _policy
    _by_ref = _values == "ref" or (_values == "auto" and _level == "calls")
    _policy = {} if _by_ref and _deep_patterns else None
    if _accel is not None:
        _accel.set_policy(_by_ref, _policy, _decide)


def _decide(key: Any) -> bool:
    """The policy of a call report made from module ``key`` (its name, or an ast_node_id,
    ``module:qualname:...``): True by reference. Remembered in ``_policy``."""
    if type(key) is not str or _policy is None:
        return _by_ref
    module = key.partition(":")[0]
    deep = any(
        fnmatch.fnmatchcase(module, p) or (p.endswith(".*") and module == p[:-2])
        for p in _deep_patterns
    )
    if len(_policy) < _POLICY_CACHE_MAX:
        _policy[key] = not deep
    return not deep


def _ref_for(key: Any) -> bool:
    """True when a call report made from ``key`` records by reference."""
    if _policy is None:
        return _by_ref
    got = _policy.get(key) if type(key) is str else None
    return _decide(key) if got is None else got


def _snap_ref(value: Any, lim: Limits, depth: int) -> Any:
    """``value`` under the "ref" policy (the C core calls this off its fast paths): at
    depth 0 a call's arguments container, opened; at depth 1 a value of its own."""
    try:
        return Snapper(lim, refs=True).snap(value, depth)
    except Exception as exc:
        return _error_marker(value, exc)


def _ref_args(args: Any, lim: Limits) -> tuple[Any, int | None]:
    """``_snap_args`` under the "ref" policy: the arguments container is opened and each
    argument kept by value (a scalar) or by reference."""
    t = type(args)
    if t is tuple or t is list or t is dict:
        flat = None
        cost = _snapshot._flat_cost(args, t, _f_str, _f_int, _f_items, 1)
        if 0 <= cost <= _f_budget:  # scalars only: kept or copied in one step
            flat = _snapshot._flat_copy(args, 1)
        return (_snap_ref(args, lim, 0) if flat is None else flat), len(args)
    if args is None:
        return None, 0
    return _snap_ref(args, lim, 1), None


def _ref_value(v: Any, lim: Limits) -> Any:
    """``_snap_value`` under the "ref" policy."""
    t = type(v)
    if (
        (t is int and -_f_int < v < _f_int)
        or t in KEEP_TYPES
        or (t is str and len(v) <= _f_top_str)
    ):
        return v
    return _snap_ref(v, lim, 1)


# The stack's reader and writer, read by the report path (see _callstack.use).
_get: Any = _callstack._get
_set: Any = _callstack._set

_enabled = False
_buffer: RingBuffer | None = None
_ring_class: type[Any] = RingBuffer  # the C core's RingBuffer when it is in use
_accel: Any = None  # the C accelerator module when it is in use (see use_accelerator)


def _sync() -> None:
    """Tell the C core the state its report path reads (a no-op on the pure core)."""
    if _accel is not None:
        _accel.sync(_enabled, _buffer, _limits, _fast_limits(_limits))


def use_accelerator(module: Any, ring_class: type[Any]) -> None:
    """Route the hot path through the C accelerator (called once, by ``_core``).

    The C report functions read the same ContextVar stack, call the same snapshot code
    off their fast paths, and share this module's id counter and state, so everything
    here (context functions, ``write_event``, fork handling) works with either core.
    """
    global _accel, _ring_class, _ids, _new_ids, _get, _set
    module.attach(
        {
            "stack": _stack,
            "off": _OFF,
            "count_error": count_error,
            "snap": _snap,
            "exc_snap": _exc_snap,
            "loop_task_id": _loop_task_id,
            "note_thread": _note_thread,
            "get_running_loop": _get_running_loop,
            "entry_type": _FUNCTION_ENTRY,
            "exit_type": _FUNCTION_EXIT,
            "keep_types": tuple(KEEP_TYPES),
            "event_class": Event,
            "clock": _clock,
            "secret_names": _redact.secret_names,
            "redacted_type": Redacted,
            "snap_ref": _snap_ref,
            "ref_kinds": _snapshot._REF_KINDS,
            "ref_class": ObjectRef,
            "sites": _site_table,
        }
    )
    _redact.on_configure(module.forget_names)
    _accel = module
    _ring_class = ring_class
    _get = module.stack_get
    _set = module.stack_set
    _callstack.use(_get, _set)
    _new_ids = lambda: module.reset_ids(_clock.pid())  # noqa: E731
    _ids = _new_ids()
    _sync()
    _apply_policy()


_internal_errors = 0
_last_error: str | None = None
_error_lock = threading.Lock()


def count_error(exc: BaseException) -> None:
    """Count a failure inside capture (never raised to the instrumented code)."""
    global _internal_errors, _last_error
    try:
        # exceptions are ours or the user's: str() of a user's may raise too
        text = f"{type_name(type(exc))}: {BaseException.__str__(exc)}"[:500]
    except Exception:
        text = type_name(type(exc))
    with _error_lock:
        _internal_errors += 1
        _last_error = text


def internal_errors() -> tuple[int, str | None]:
    """Failures inside capture so far (each counted, none raised) and the last one's text."""
    return _internal_errors, _last_error


def register_buffer(buffer: RingBuffer | None) -> None:
    """Make ``buffer`` the one the report path writes to (None unregisters)."""
    global _buffer
    if buffer is not None and not isinstance(buffer, _ring_class):
        raise TypeError(f"expected a RingBuffer, got {type(buffer).__name__}")
    _buffer = buffer
    _sync()


def get_buffer() -> RingBuffer | None:
    """The registered buffer, or None."""
    return _buffer


_enabled_listeners: list[Any] = []


def on_enabled_change(listener: Any) -> None:
    """Call ``listener(flag)`` now and whenever capture is switched on or off globally
    (rewritten code reads such a flag to skip its reports while capture is off)."""
    _enabled_listeners.append(listener)
    listener(_enabled)


def set_enabled(flag: bool) -> None:
    """Switch capture on or off for every thread and task at once."""
    global _enabled
    _enabled = bool(flag)
    _sync()
    for listener in _enabled_listeners:
        listener(_enabled)


def is_started() -> bool:
    """True while capture is switched on globally (whatever this context says)."""
    return _enabled


def enabled() -> bool:
    """True if a report made here now would be recorded."""
    return _enabled and _buffer is not None and _get() is not _OFF


# ---------------------------------------------------------------------------------------
# the report path

_get_ident = threading.get_ident
_FUNCTION_ENTRY: Final = EventType.FUNCTION_ENTRY  # enum attribute lookup costs ~90 ns on 3.11
_FUNCTION_EXIT: Final = EventType.FUNCTION_EXIT


def report_function_entry(
    module: Any, function: Any, args: Any, *, ast_node_id: Any = None, call_id: Any = None
) -> Any:
    """Record a call's entry; returns its call id (pass it to the exit), or None if off.

    The id (a new one unless ``call_id`` is given) is pushed on this context's call stack,
    so calls made inside carry it as their ``parent_id``. Never raises.
    """
    if not _enabled:
        return None
    try:
        buf = _buffer
        f = _get()
        if buf is None or f is _OFF:
            return None
        lim = _limits
        if _by_ref if _policy is None else _ref_for(module):
            snap, arity = _ref_args(args, lim)
        else:
            snap, arity = _snap_args(args, lim)
        return _enter(buf, f, module, function, arity, snap, ast_node_id, call_id)
    except Exception as exc:
        count_error(exc)
        return None


def _enter(
    buf: Any, f: Any, module: Any, function: Any, arity: Any, snap: Any, ast: Any, call_id: Any
) -> Any:
    """The rest of an entry once its arguments are snapshotted (both report functions):
    stamp it, push its frame, write its slot; returns the call id. Raises on a fault."""
    cid = next(_ids) if call_id is None else call_id
    ts = _monotonic_ns()
    if f is None:
        parent = None
        corr = cid
        try:
            _noted.seen  # noqa: B018 - a root call: is this thread's start recorded?
        except AttributeError:
            _note_thread(ts)
    else:
        parent = f[0]
        corr = f[2] if f[2] is not None else cid
    if ast is not None and type(ast) is not str:
        ast = _snap(ast, _limits)
    loop = _get_running_loop()
    task = None if loop is None else _loop_task_id(loop)
    thread = _get_ident()
    eid = cid if call_id is None else next(_ids)
    _set((cid, f, corr, ts))
    # Everything that can fail is done: claim, then build the slot in one tuple.
    if buf._fast:
        pos = next(buf._claim)
        slots = buf._slots
        i = pos & buf._mask
        old = slots[i]
        if old is None or old[0] < pos:  # lapped while we worked: newer data stays
            slots[i] = (
                pos, eid, ts, thread, task, corr, parent, cid, ast, _FUNCTION_ENTRY,
                (module, function, arity, snap),
            )  # fmt: skip
        if pos == buf._wake_pos:
            buf._high_water()
    else:
        buf._put_slow((
            eid, ts, thread, task, corr, parent, cid, ast, _FUNCTION_ENTRY,
            (module, function, arity, snap),
        ))  # fmt: skip
    return cid


# site id -> what its parameters' names charge a "ref" snapshot of its arguments, or -1
# when one is secret or past the limits (then the report takes the general path); forgotten
# when the limits or the redaction pattern change
_site_keys: dict[int, int] = {}
_redact.on_configure(_site_keys.clear)


def _key_cost(site: int, names: tuple[str, ...]) -> int:
    cost = _SMALL  # as _snapshot.flat_cost charges a dict's keys
    if len(names) > _f_items:
        cost = -1
    for k in names:
        if cost < 0 or type(k) is not str or len(k) > _f_str or _redact.secret_name(k):
            cost = -1
            break
        cost += len(k) + _SMALL
    _site_keys[site] = cost
    return cost


def report_site_entry(site: int, *values: Any) -> Any:
    """:func:`report_function_entry` for a registered site (:mod:`._sites`): the module,
    function, ``ast_node_id`` and parameter names from the table, ``values`` in order.

    The same event, by a shorter path (the C core's ``report_site_entry`` takes it too):
    no keyword call, and under the "ref" policy the arguments' dict, made here and held by
    nothing else, is its own snapshot when every value is a scalar kept as it is."""
    if not _enabled:
        return None
    try:
        s = _site_table[site] if type(site) is int and site >= 0 else _no_site(site)
        names = s[3]
        if len(names) != len(values):
            raise TypeError(f"site {site!r} takes {len(names)} values, got {len(values)}")
        buf = _buffer
        f = _get()
        if buf is None or f is _OFF:
            return None
        # a display for the common single value: dict(zip()) costs four times as much
        one = len(values) == 1
        args = {names[0]: values[0]} if one else dict(zip(names, values))  # noqa: B905
        if _by_ref if _policy is None else _ref_for(s[0]):
            cost = _site_keys.get(site)
            if cost is None:
                cost = _key_cost(site, names)
            if cost >= 0:  # _ref_args's flat test, the names' share known
                for v in values:
                    t = type(v)
                    if (t is int and -_f_int < v < _f_int) or t in KEEP_TYPES:
                        cost += _SMALL
                    elif t is str and len(v) <= _f_str:
                        cost += len(v) + _SMALL
                    else:
                        cost = -1
                        break
            snap = args if 0 <= cost <= _f_budget else _ref_args(args, _limits)[0]
        else:
            snap = _snap_args(args, _limits)[0]
        return _enter(buf, f, s[0], s[1], len(args), snap, s[2], None)
    except Exception as exc:
        count_error(exc)
        return None


def _no_site(site: Any) -> Any:
    raise IndexError(f"no site {site!r}")


def report_site_exit(call_id: Any, return_value: Any, site: int) -> bool:
    """:func:`report_function_exit` of a registered site's normal exit."""
    if call_id is None:
        return False
    try:
        ast_node_id = (_site_table[site] if type(site) is int and site >= 0 else _no_site(site))[2]
    except Exception as err:
        count_error(err)  # the call is still popped
        ast_node_id = None
    return _leave(call_id, return_value, None, "normal", ast_node_id)


def report_function_exit(
    call_id: Any,
    return_value: Any,
    duration_ns: int | None = None,
    *,
    exit_reason: str = "normal",
    ast_node_id: Any = None,
) -> bool:
    """Record a call's exit and pop it from the call stack; False if nothing was recorded.

    Args:
        call_id: what ``report_function_entry`` returned (None: nothing to do).
        return_value: the value returned, or the exception when ``exit_reason`` is
            ``"exception"`` (it is captured as a snapshot, never kept).
        duration_ns: the call's duration; None computes it from the entry's timestamp.
        exit_reason: ``"normal"``, ``"exception"`` or ``"cancelled"`` (any value is kept).
    """
    if call_id is None:
        return False
    return _leave(call_id, return_value, duration_ns, exit_reason, ast_node_id)


def _leave(call_id: Any, return_value: Any, duration_ns: Any, exit_reason: Any, ast: Any) -> bool:
    """:func:`report_function_exit`'s work, its arguments positional (both exits)."""
    try:
        f = _get()
        frame = f if f is not None and f is not _OFF and f[0] == call_id else _unwind(f, call_id)
        if frame is not None:
            _set(frame[1])  # pops, even while capture is off: the stack stays balanced
        buf = _buffer
        if not _enabled or buf is None or f is _OFF:
            return False
        ts = _monotonic_ns()
        exc = None
        if exit_reason != "normal":
            result = None
            exc = _exc_snap(return_value, _limits)
        elif _by_ref if _policy is None else _ref_for(ast):
            # _ref_value, its test inline
            t = type(return_value)
            if (
                (t is int and -_f_int < return_value < _f_int)
                or t in KEEP_TYPES
                or (t is str and len(return_value) <= _f_top_str)
            ):
                result = return_value
            else:
                result = _snap_ref(return_value, _limits, 1)
        else:
            result = _snap_value(return_value, _limits)
        if frame is not None:
            p = frame[1]
            parent = p[0] if p is not None else None
            corr = frame[2]
            if duration_ns is None:
                duration_ns = ts - frame[3]
        else:
            parent = None
            corr = current_correlation_id()
        if ast is not None and type(ast) is not str:
            ast = _snap(ast, _limits)
        loop = _get_running_loop()
        task = None if loop is None else _loop_task_id(loop)
        thread = _get_ident()
        eid = next(_ids)
        if buf._fast:
            pos = next(buf._claim)
            slots = buf._slots
            i = pos & buf._mask
            old = slots[i]
            if old is None or old[0] < pos:  # lapped while we worked: newer data stays
                slots[i] = (
                    pos, eid, ts, thread, task, corr, parent, call_id, ast,
                    _FUNCTION_EXIT, (result, exc, duration_ns, exit_reason),
                )  # fmt: skip
            if pos == buf._wake_pos:
                buf._high_water()
            return True
        return buf._put_slow((
            eid, ts, thread, task, corr, parent, call_id, ast, _FUNCTION_EXIT,
            (result, exc, duration_ns, exit_reason),
        ))  # fmt: skip
    except Exception as exc_:
        count_error(exc_)
        return False


def write_event(
    buffer: RingBuffer,
    event_type: EventType | str,
    data: dict[str, Any],
    *,
    call_id: Any = None,
    parent_id: Any = None,
    correlation_id: Any = None,
    ast_node_id: str | None = None,
) -> bool:
    """Stamp one event now (id, clocks, thread, task) and write it; False if dropped.

    ``data`` must already be snapshotted; this is the ingestor's single way into a buffer.
    """
    rec = (
        next(_ids), _monotonic_ns(), _get_ident(), _task_id(), correlation_id, parent_id,
        call_id, ast_node_id, event_type, data,
    )  # fmt: skip
    return buffer._put(rec)


def active_buffer() -> RingBuffer | None:
    """The buffer a report made here now would write to, or None when capture is off here."""
    if not _enabled:
        return None
    buf = _buffer
    if buf is None or _get() is _OFF:
        return None
    return buf


# ---------------------------------------------------------------------------------------
# fork: the child starts with fresh ids, clocks and buffers, and holds no inherited lock


def _after_fork_in_child() -> None:
    global _ids, _buffer, _error_lock
    _clock.after_fork_in_child()
    _ids = _new_ids()
    _tasks.after_fork_in_child()
    _notes.clear()
    _error_lock = threading.Lock()
    old = _buffer
    if old is not None:
        _buffer = type(old)(old.size, old.overflow_strategy, old.block_timeout)
    _sync()


os.register_at_fork(after_in_child=_after_fork_in_child)


def report_site_return(call_id: Any, return_value: Any, site: int) -> Any:
    """:func:`report_site_exit`, returning ``return_value``: rewritten code reports a
    normal exit on the return path itself (``return report_site_return(call, value, site)``)."""
    if call_id is not None:
        report_site_exit(call_id, return_value, site)
    return return_value
