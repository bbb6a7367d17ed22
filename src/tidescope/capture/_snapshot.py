"""Bounded value snapshots (DESIGN.md invariant 5): copies taken at the event, cut and marked."""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import pathlib
import types
import uuid
from collections import deque
from typing import Any, Final, NamedTuple

from tidescope.events import ObjectSnapshot, Truncated

__all__ = ["KEEP_TYPES", "Limits", "Snapper", "exception_snapshot", "type_name"]


class Limits(NamedTuple):
    """Snapshot limits; see :class:`tidescope.config.Config` for their meaning."""

    max_depth: int = 3
    max_items: int = 20
    max_string: int = 256
    max_event_bytes: int = 4096
    repr_objects: bool = False


_SMALL: Final = 8  # bytes charged to the budget for a number, a reference, a marker
_LOG2_10: Final = 3.3219280948873626

# Immutable types kept by reference: nothing reachable from them can change later.
KEEP_TYPES: Final[frozenset[type]] = frozenset(
    {
        type(None), bool, float, complex, range, type(Ellipsis), type(NotImplemented),
        datetime.datetime, datetime.date, datetime.time, datetime.timedelta,
        datetime.timezone, uuid.UUID,
    }
)  # fmt: skip
_BYTES_LIKE: Final = (bytes, bytearray)
_CALLABLE_KINDS: Final = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    type,
)


class Snapper:
    """One event's snapshot state: limits, the remaining byte budget, the containers on the path."""

    __slots__ = ("budget", "depth_limit", "int_limit", "items", "path", "repr_objects", "strlen")

    def __init__(self, limits: Limits) -> None:
        self.depth_limit = limits.max_depth
        self.items = limits.max_items
        self.strlen = limits.max_string
        self.budget = limits.max_event_bytes
        self.repr_objects = limits.repr_objects
        # an int is kept if its decimal form fits the string limit
        self.int_limit = 1 << int(limits.max_string * _LOG2_10)
        self.path: set[int] = set()

    def snap(self, v: Any, depth: int = 0) -> Any:
        t = type(v)
        if t is int:
            if -self.int_limit < v < self.int_limit:
                self.budget -= _SMALL
                return v
            return Truncated("int", v.bit_length(), "length")
        if t is str:
            n = len(v)
            if n <= self.strlen:
                self.budget -= n + _SMALL
                if self.budget < 0:
                    return Truncated("str", n, "budget")
                return v
            self.budget -= self.strlen + _SMALL
            return Truncated("str", n, "length", v[: self.strlen])
        if t in KEEP_TYPES:
            self.budget -= _SMALL
            return v
        if self.budget < 0:
            return self._over_budget(v, t)
        if t is list or t is tuple or t is dict or t is set or t is frozenset or t is deque:
            return self._container(v, t, depth)
        if t in _BYTES_LIKE:
            n = len(v)
            self.budget -= min(n, self.strlen) + _SMALL
            if n <= self.strlen:
                return bytes(v) if t is bytes else bytearray(v)
            return Truncated(t.__name__, n, "length", bytes(v[: self.strlen]))
        return self._other(v, t, depth)

    def _over_budget(self, v: Any, t: type) -> Truncated:
        try:
            size = len(v) if t in (list, tuple, dict, set, frozenset, deque, bytes) else 0
        except Exception:
            size = 0
        return Truncated(type_name(t), size, "budget")

    def _container(self, v: Any, t: type, depth: int) -> Any:
        n = len(v)
        if depth >= self.depth_limit:
            self.budget -= _SMALL
            return Truncated(t.__name__, n, "depth")
        key = id(v)
        if key in self.path:
            return Truncated(t.__name__, n, "cycle")
        self.path.add(key)
        try:
            self.budget -= _SMALL
            limit = self.items
            d = depth + 1
            reason = "length"
            out_d: dict[Any, Any] = {}
            out_l: list[Any] = []
            try:
                if t is dict:
                    for i, (k, item) in enumerate(v.items()):
                        if i >= limit or self.budget < 0:
                            break
                        out_d[self.snap(k, d)] = self.snap(item, d)
                else:
                    for i, item in enumerate(v):
                        if i >= limit or self.budget < 0:
                            break
                        out_l.append(self.snap(item, d))
            except RuntimeError:  # another thread resized it while we read
                reason = "error"
            kept: Any = (
                out_d if t is dict else out_l if t is list or t is deque else _rebuild(t, out_l)
            )
        finally:
            self.path.discard(key)
        if len(kept) < n or reason == "error":
            if reason != "error" and len(kept) < limit:
                reason = "budget"
            return Truncated(t.__name__, n, reason, kept)
        return kept

    def _other(self, v: Any, t: type, depth: int) -> Any:
        """Everything that is not a builtin scalar or container, without running its code."""
        if isinstance(v, enum.Enum):
            self.budget -= _SMALL
            return v  # members are immutable singletons
        if t is decimal.Decimal or t is fractions.Fraction or isinstance(v, pathlib.PurePath):
            # immutable, but unbounded in size: keep if its text fits
            text = str(v)
            if len(text) <= self.strlen:
                self.budget -= len(text) + _SMALL
                return v
            return Truncated(type_name(t), len(text), "length", text[: self.strlen])
        if isinstance(v, str):  # str subclass: copy as a plain str, no user __str__
            return self.snap(str.__getitem__(v, slice(None)), depth)
        if isinstance(v, int):  # int subclasses (IntFlag handled above as enum)
            return self.snap(int.__index__(v), depth)
        if isinstance(v, float):
            return float.__float__(v)
        if isinstance(v, tuple) and hasattr(t, "_fields"):
            return self._namedtuple(v, t, depth)
        for base in (dict, list, tuple, set, frozenset):
            if isinstance(v, base):
                # subclasses are read through the base type's own methods, so overridden
                # __iter__/__len__/items never run
                return self._container(_base_copy(v, base), base, depth)
        if isinstance(v, BaseException):
            return self._object(v, t, depth, {"args": BaseException.__dict__["args"].__get__(v)})
        return self._object(v, t, depth, None)

    def _namedtuple(self, v: tuple[Any, ...], t: type, depth: int) -> Any:
        try:
            fields = tuple(t._fields)  # type: ignore[attr-defined]
            values = tuple.__iter__(v)
            return self._object(v, t, depth, dict(zip(fields, values, strict=False)))
        except Exception:
            return self._container(tuple(tuple.__iter__(v)), tuple, depth)

    def _object(self, v: Any, t: type, depth: int, extra: dict[str, Any] | None) -> Any:
        name = type_name(t)
        self.budget -= len(name) + _SMALL
        text: str | Truncated | None = None
        if isinstance(v, _CALLABLE_KINDS):
            text = _callable_label(v)
        elif self.repr_objects:
            text = self._repr(v)
        attrs: Any = None
        if depth >= self.depth_limit:
            attrs = Truncated("attrs", 0, "depth")
        elif not isinstance(v, _CALLABLE_KINDS):
            raw = _read_attrs(v, t)
            if extra:
                raw = {**extra, **(raw or {})} if not isinstance(raw, Truncated) else extra
            if isinstance(raw, dict):
                key = id(v)
                if key in self.path:
                    attrs = Truncated("attrs", len(raw), "cycle")
                else:
                    self.path.add(key)
                    try:
                        attrs = self._container(raw, dict, depth)
                    finally:
                        self.path.discard(key)
            else:
                attrs = raw
        return ObjectSnapshot(name, id(v), attrs, text)

    def _repr(self, v: Any) -> str | Truncated:
        from tidescope.capture._pure import _OFF, _stack  # noqa: PLC0415 - cycle; rare path

        token = _stack.set(_OFF)  # user code may call report_*: never capture ourselves
        try:
            text = repr(v)
            if type(text) is not str:
                return Truncated("repr", 0, "error")
        except Exception as exc:
            return Truncated("repr", 0, "error", type_name(type(exc)))
        finally:
            _stack.reset(token)
        if len(text) > self.strlen:
            return Truncated("str", len(text), "length", text[: self.strlen])
        return text


def _rebuild(t: type, items: list[Any]) -> Any:
    if t is tuple:
        return tuple(items)
    if t is set:
        return set(items)
    return frozenset(items)


def _base_copy(v: Any, base: type) -> Any:
    if base is dict:
        return dict(dict.items(v))
    if base is list:
        return list(list.__iter__(v))
    if base is tuple:
        return tuple(tuple.__iter__(v))
    if base is set:
        return set(set.__iter__(v))
    return frozenset(frozenset.__iter__(v))


def type_name(t: type) -> str:
    try:
        mod = type.__dict__["__module__"].__get__(t)
        qual = type.__dict__["__qualname__"].__get__(t)
        return f"{mod}.{qual}" if type(mod) is str and type(qual) is str else str(t.__name__)
    except Exception:
        return "<unknown type>"


def _callable_label(v: Any) -> str:
    try:
        if isinstance(v, types.ModuleType):
            name = v.__dict__.get("__name__", "?")
            return f"<module {name}>"
        if isinstance(v, type):
            return f"<class {type_name(v)}>"
        if isinstance(v, types.MethodType):
            f = v.__func__
            return f"<bound method {getattr(f, '__qualname__', '?')}>"
        return f"<function {getattr(v, '__module__', '?')}.{getattr(v, '__qualname__', '?')}>"
    except Exception:
        return "<callable>"


_SLOT_NAMES: dict[type, tuple[str, ...]] = {}


def _read_attrs(v: Any, t: type) -> dict[str, Any] | Truncated | None:
    """An object's ``__dict__`` and ``__slots__`` values, read without running its code."""
    try:
        attrs: dict[str, Any] = {}
        mro = _MRO.__get__(t)
        d = None
        for klass in mro:
            desc = _TYPE_DICT.__get__(klass).get("__dict__")
            if desc is not None:
                # only the interpreter's own __dict__ slot: a property could run user code
                if type(desc) is types.GetSetDescriptorType:
                    d = desc.__get__(v, t)
                break
        if type(d) is dict:
            attrs.update(dict.items(d))
        names = _SLOT_NAMES.get(t)
        if names is None:
            names = _slot_names(mro)
            if len(_SLOT_NAMES) < 4096:
                _SLOT_NAMES[t] = names
        for name in names:
            for klass in mro:
                desc = _TYPE_DICT.__get__(klass).get(name)
                if type(desc) is types.MemberDescriptorType:
                    try:
                        attrs[name] = desc.__get__(v, t)
                    except AttributeError:
                        pass  # unset slot
                    break
        if d is None and not names:
            return None
        return attrs
    except Exception:
        return Truncated("attrs", 0, "error")


_MRO: Final = type.__dict__["__mro__"]
_TYPE_DICT: Final = type.__dict__["__dict__"]


def _slot_names(mro: tuple[type, ...]) -> tuple[str, ...]:
    names: list[str] = []
    for klass in mro:
        slots = _TYPE_DICT.__get__(klass).get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        for s in slots:
            if s not in ("__dict__", "__weakref__") and s not in names:
                names.append(s)
    return tuple(names)


def exception_snapshot(s: Snapper, exc: Any) -> Any:
    """An exception as ``{type, args, attrs}``, read without calling its ``__str__``/``__repr__``.

    Any other value (an exit reported as an exception with no exception object) is
    snapshotted as it is.
    """
    if not isinstance(exc, BaseException):
        return s.snap(exc)
    try:
        args = BaseException.__dict__["args"].__get__(exc)
    except Exception:
        args = ()
    snap = s.snap(exc)
    attrs = snap.attrs if type(snap) is ObjectSnapshot else None
    if type(attrs) is dict:
        attrs = {k: v for k, v in attrs.items() if k != "args"} or None
    return {"type": type_name(type(exc)), "args": s.snap(args), "attrs": attrs}
