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

from tidescope.capture import _redact
from tidescope.capture._redact import guarded, plain_names, redacted, secret_name
from tidescope.events import ObjectRef, ObjectSnapshot, Redacted, Truncated, jsonable

__all__ = [
    "KEEP_TYPES",
    "Limits",
    "Snapper",
    "exception_snapshot",
    "flat_copy",
    "flat_cost",
    "flat_payload",
    "type_name",
]


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
        datetime.timezone, uuid.UUID, Redacted,
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


def flat_cost(v: Any, t: type, strlen: int, int_limit: int, items: int, depth: int) -> int:
    """What copying ``v`` (a tuple, list or dict of type ``t``) charges, or -1 if the
    snapshot would cut or change anything in it: more than ``items`` items, a non-str dict
    key, a key or str longer than ``strlen``, a secret key (see ``_redact``) whose value is
    not already redacted, an int outside ``+-int_limit``, an item that is neither a kept
    scalar nor such a container, or containers nested ``depth`` deep.

    ``depth`` is how many container levels the snapshot still opens here (``max_depth``
    minus the level of ``v``; at least 1). 8 bytes for each container, 8 a value, a str's
    length, a key like a value: exactly what :meth:`Snapper._container` charges item by
    item when nothing is cut.
    """
    if len(v) > items or depth < 1:
        return -1
    cost = _SMALL
    if t is dict:
        for k in v:
            if type(k) is not str or len(k) > strlen:
                return -1
            if k not in plain_names and secret_name(k) and type(v[k]) is not Redacted:
                return -1
            cost += len(k) + _SMALL
        v = v.values()
    for a in v:
        ta = type(a)
        if ta is str:
            if len(a) > strlen:
                return -1
            cost += len(a) + _SMALL
        elif ta is int:
            if not -int_limit < a < int_limit:
                return -1
            cost += _SMALL
        elif ta in KEEP_TYPES:
            cost += _SMALL
        elif (ta is tuple or ta is list or ta is dict) and depth > 1:
            c = _flat_cost(a, ta, strlen, int_limit, items, depth - 1)
            if c < 0:
                return -1
            cost += c
        else:
            return -1
    return cost


def flat_copy(v: Any, depth: int) -> Any:
    """A container that :func:`flat_cost` accepted, copied as the snapshot copies it: lists
    and dicts always, a tuple only if something inside it is.

    ``depth`` is what :func:`flat_cost` was given. None when ``v`` no longer fits it: nested
    deeper (another thread made it contain itself since it was measured, say) or a list
    that shrank while read; the caller then takes the full snapshot, which marks cycles.
    The copy never follows a value further than ``depth``.
    """
    if depth < 1:
        return None
    t = type(v)
    d = depth - 1
    if t is dict:
        out: dict[Any, Any] = {}
        for k, a in dict.items(v):
            c = flat_copy(a, d) if type(a) in _NESTED else a
            if c is None and a is not None:
                return None
            out[k] = c
        return out
    if t is tuple and not any(type(a) in _NESTED for a in v):
        return v
    items: list[Any] = []
    for a in v:
        c = flat_copy(a, d) if type(a) in _NESTED else a
        if c is None and a is not None:
            return None
        items.append(c)
    return items if t is list else tuple(items)


_NESTED: Final = frozenset({tuple, list, dict})


def flat_payload(
    data: dict[Any, Any], strlen: int, int_limit: int, items: int, budget: int, depth: int
) -> tuple[dict[str, Any], int] | None:
    """An event's data kept whole in one step: ``(copy, bytes charged)``, or None.

    For a dict with str keys whose values are kept scalars or containers that
    :func:`flat_cost` accepts (opened to ``depth``, the snapshot's ``max_depth``), all
    within ``items`` and the ``budget``: then :meth:`Snapper.payload` would cut nothing,
    and this is its result. Its keys are the event's own fields: never redacted.
    """
    if len(data) > items:
        return None
    cost = 0
    for k, v in data.items():
        if type(k) is not str:
            return None
        cost += len(k) + _SMALL
        t = type(v)
        if t is str:
            if len(v) > strlen:
                return None
            cost += len(v) + _SMALL
        elif t is int:
            if not -int_limit < v < int_limit:
                return None
            cost += _SMALL
        elif t in KEEP_TYPES:
            cost += _SMALL
        elif (t is tuple or t is list or t is dict) and depth >= 1:
            c = _flat_cost(v, t, strlen, int_limit, items, depth)
            if c < 0:
                return None
            cost += c
        else:
            return None
    if cost > budget:
        return None
    out = _flat_copy(data, depth + 1)  # the top level is not a nesting level
    return None if out is None else (out, cost)


# The C core replaces these with its twins (same results, tested).
_flat_cost = flat_cost
_flat_payload = flat_payload
_flat_copy = flat_copy
_snap_deep: Any = None  # _deep.c's snap_deep(snapper, v, depth), given deep_namespace()
_payload_deep: Any = None  # _deep.c's payload_deep(snapper, data)

_INT_LIMITS: dict[int, int] = {}


def _int_limit(max_string: int) -> int:
    """``1 << int(max_string * log2(10))``, remembered (a Snapper is made per event)."""
    limit = _INT_LIMITS.get(max_string)
    if limit is None:
        limit = 1 << int(max_string * _LOG2_10)
        if len(_INT_LIMITS) < 64:
            _INT_LIMITS[max_string] = limit
    return limit


class Snapper:
    """One event's snapshot state: limits, the remaining byte budget, the containers on the path."""

    __slots__ = (
        "budget", "depth_limit", "int_limit", "items", "path", "refs", "repr_objects", "strlen",
    )  # fmt: skip

    def __init__(self, limits: Limits, refs: bool = False) -> None:
        # refs: the "ref" value policy: past the top level (a call's arguments container),
        # only scalars are kept by value; everything else becomes an ObjectRef
        self.refs = refs
        self.depth_limit = 1 if refs else limits.max_depth
        self.items = limits.max_items
        self.strlen = limits.max_string
        self.budget = limits.max_event_bytes
        self.repr_objects = limits.repr_objects
        # an int is kept if its decimal form fits the string limit
        self.int_limit = _int_limit(limits.max_string)
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
        if self.refs and depth > 0 and t is not bytes:
            return self._ref(v, t)
        if _snap_deep is not None and not self.refs:
            return _snap_deep(self, v, depth)  # the C core's walk: the same, step for step
        if t is list or t is tuple or t is dict or t is set or t is frozenset or t is deque:
            return self._container(v, t, depth)
        if t in _BYTES_LIKE:
            n = len(v)
            self.budget -= min(n, self.strlen) + _SMALL
            if n <= self.strlen:
                return bytes(v) if t is bytes else bytearray(v)
            return Truncated(t.__name__, n, "length", bytes(v[: self.strlen]))
        return self._other(v, t, depth)

    def payload(self, data: Any) -> dict[str, Any]:
        """An event's top-level ``data``: a dict with str keys, its values snapshotted.

        The top level is not a nesting level (each value gets the full depth), but it is
        bounded like any container: past ``max_items`` keys, or once the budget is spent,
        the rest is summarised under the key ``"$truncated"``. Non-str keys are rendered
        from their snapshot, without running their ``__str__``. The keys are the event's
        own fields: never redacted (dicts inside the values are).
        """
        if type(data) is not dict:
            if issubclass(type(data), dict):
                data = dict(dict.items(data))  # a plain copy; keys are our own str below
            else:
                return {"value": self.snap(data)}
        got = _flat_payload(
            data, self.strlen, self.int_limit, self.items, self.budget, self.depth_limit
        )
        if got is not None:
            self.budget -= got[1]
            return got[0]
        if _payload_deep is not None and not self.refs:
            got = _payload_deep(self, data)  # None unless every key is a str
            if got is not None:
                return got  # type: ignore[no-any-return]
        out: dict[str, Any] = {}
        n = len(data)
        for done, (k, v) in enumerate(data.items()):
            if done >= self.items or self.budget < 0:
                reason = "length" if done >= self.items else "budget"
                out["$truncated"] = Truncated("dict", n, reason)
                break
            name = k if type(k) is str else str(jsonable(self.snap(k, 1)))
            self.budget -= len(name) + _SMALL
            out[name] = self.snap(v)
        return out

    def _ref(self, v: Any, t: type) -> Any:
        """``v`` by reference: its type, ``id()`` and builtin length; an enum member (an
        immutable singleton) as it is. Runs no code of ``v``."""
        kind = _REF_KINDS.get(t)
        if kind is None:
            kind = _ref_kind(t)
        name, length = kind
        if name is None:
            self.budget -= _SMALL
            return v
        self.budget -= len(name) + _SMALL
        return ObjectRef(name, id(v), None if length is None else length(v))

    def _over_budget(self, v: Any, t: type) -> Truncated:
        length = _LENGTH.get(t)
        size = length(v) if length is not None else 0
        return Truncated(t.__name__ if length is not None else type_name(t), size, "budget")

    def _container(self, v: Any, t: type, depth: int, base: type | None = None) -> Any:
        """Copy a list/tuple/dict/set/frozenset/deque, or a subclass read as its ``base``.

        Subclasses are read only through the base type's own C methods, so an overridden
        ``__iter__``, ``__len__``, ``items`` or ``__hash__`` of the keys never runs.
        """
        if base is None:
            base = t
            if (t is tuple or t is list or t is dict) and depth < self.depth_limit:
                flat = self._flat(v, t, depth)
                if flat is not None:
                    return flat
        name = t.__name__ if base is t else type_name(t)
        n = _LENGTH[base](v)
        if depth >= self.depth_limit:
            self.budget -= _SMALL
            return Truncated(name, n, "depth")
        key = id(v)
        if key in self.path:
            return Truncated(name, n, "cycle")
        self.path.add(key)
        self.budget -= _SMALL
        limit = self.items
        d = depth + 1
        reason: str | None = None
        done = 0
        out_d: dict[Any, Any] = {}
        out_l: list[Any] = []
        try:
            if base is dict:
                for k, item in dict.items(v):
                    if done >= limit or self.budget < 0:
                        reason = "length" if done >= limit else "budget"
                        break
                    sk = self.snap(k, d)
                    try:
                        if sk in out_d:  # two keys equal once cut (a shared long prefix)
                            sk = Truncated(_kind(sk), 0, "duplicate", (sk, done))
                    except Exception:
                        # no dict key once copied (a list subclass with __hash__, as
                        # boltons' _HashedKey), or a key kept as it is whose __hash__ or
                        # __eq__ raises: a marker unique to its position
                        sk = Truncated(type_name(type(k)), done, "unhashable", sk)
                    if type(sk) is str and secret_name(sk):
                        out_d[sk] = self.snap(guarded(sk, item), d)
                    else:
                        out_d[sk] = self.snap(item, d)
                    done += 1
            else:
                hide = (base is tuple or base is list) and n == 2 and _secret_header(v, base)
                for item in _ITER[base](v):
                    if done >= limit or self.budget < 0:
                        reason = "length" if done >= limit else "budget"
                        break
                    out_l.append(self.snap(redacted(item) if hide and done else item, d))
                    done += 1
        except RuntimeError:  # another thread resized it while we read
            reason = "error"
        finally:
            self.path.discard(key)
        kept: Any
        if base is dict:
            kept = out_d
        elif base is list or base is deque:
            kept = out_l
        elif base is tuple:
            kept = tuple(out_l)
        else:
            kept = _unique_set(out_l, base)
        if reason is None and done < n:
            reason = "error"  # it shrank while we read
        if reason is not None:
            return Truncated(name, n, reason, kept)
        return kept

    def _flat(self, v: Any, t: type, depth: int) -> Any:
        """A tuple, list or dict of scalars (or of such containers, within the depth
        limit) kept whole, copied in one step; else None.

        Gives what the item-by-item copy below gives when nothing in it is cut (see
        :func:`flat_cost`), charging the same bytes.
        """
        d = self.depth_limit - depth
        cost = _flat_cost(v, t, self.strlen, self.int_limit, self.items, d)
        if cost < 0 or cost > self.budget:
            return None
        copy = _flat_copy(v, d)  # None if it changed since it was measured
        if copy is not None:
            self.budget -= cost
        return copy

    def _other(self, v: Any, t: type, depth: int) -> Any:
        """Everything that is not a builtin scalar or container, without running its code.

        Types are tested with ``issubclass(type(v), ...)``: ``isinstance`` would read
        ``v.__class__`` through the object's own ``__getattribute__`` (and a mock can lie).
        """
        if issubclass(t, enum.Enum):
            self.budget -= _SMALL
            return v  # members are immutable singletons
        if t is decimal.Decimal or t is fractions.Fraction or issubclass(t, pathlib.PurePath):
            # immutable, but unbounded in size: keep if its text fits
            text = str(v)
            if len(text) <= self.strlen:
                self.budget -= len(text) + _SMALL
                return v
            return Truncated(type_name(t), len(text), "length", text[: self.strlen])
        if issubclass(t, str):  # str subclass: copy as a plain str, no user __str__
            return self.snap(str.__getitem__(v, slice(None)), depth)
        if issubclass(t, int):  # int subclasses (IntFlag handled above as enum)
            return self.snap(int.__index__(v), depth)
        if issubclass(t, float):
            return float.__float__(v)
        if issubclass(t, tuple) and _class_attr(t, "_fields") is not None:
            return self._namedtuple(v, t, depth)
        for base in (dict, list, tuple, set, frozenset):
            if issubclass(t, base):
                return self._container(v, t, depth, base)
        if issubclass(t, BaseException):
            return self._object(v, t, depth, {"args": _EXC_ARGS.__get__(v)})
        return self._object(v, t, depth, None)

    def _namedtuple(self, v: tuple[Any, ...], t: type, depth: int) -> Any:
        fields = _class_attr(t, "_fields")
        if type(fields) is tuple and all(type(f) is str for f in fields):
            values = tuple.__iter__(v)
            return self._object(v, t, depth, dict(zip(fields, values, strict=False)))
        return self._container(v, t, depth, tuple)

    def _object(self, v: Any, t: type, depth: int, extra: dict[str, Any] | None) -> Any:
        name = type_name(t)
        self.budget -= len(name) + _SMALL
        text: str | Truncated | None = None
        callable_kind = issubclass(t, _CALLABLE_KINDS)
        if callable_kind:
            text = _callable_label(v)
        elif self.repr_objects:
            text = self._repr(v)
        attrs: Any = None
        if depth >= self.depth_limit:
            attrs = Truncated("attrs", 0, "depth")
        elif not callable_kind:
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
        from tidescope.capture._pure import disable_here, restore_context  # noqa: PLC0415

        token = disable_here()  # user code may call report_*: never capture ourselves
        try:
            text = repr(v)
            if type(text) is not str:
                return Truncated("repr", 0, "error")
        except Exception as exc:
            return Truncated("repr", 0, "error", type_name(type(exc)))
        finally:
            restore_context(token)
        if len(text) > self.strlen:
            return Truncated("str", len(text), "length", text[: self.strlen])
        return text


_LENGTH: Final[dict[type, Any]] = {
    list: list.__len__, tuple: tuple.__len__, dict: dict.__len__, set: set.__len__,
    frozenset: frozenset.__len__, deque: deque.__len__, bytes: bytes.__len__,
    bytearray: bytearray.__len__, str: str.__len__,
}  # fmt: skip
_ITER: Final[dict[type, Any]] = {
    list: list.__iter__, tuple: tuple.__iter__, set: set.__iter__,
    frozenset: frozenset.__iter__, deque: deque.__iter__,
}  # fmt: skip
_EXC_ARGS: Final = BaseException.__dict__["args"]


_REF_KINDS: dict[type, tuple[str | None, Any]] = {}


def _ref_kind(t: type) -> tuple[str | None, Any]:
    """How the "ref" policy records an object of type ``t``: ``(type name, length
    function or None)``, or ``(None, None)`` for an enum member (kept as it is). A builtin
    container's bare name (as :class:`Truncated` names it), else ``module.qualname``; a
    subclass of a builtin container is measured by its base's own ``__len__``."""
    kind: tuple[str | None, Any]
    if issubclass(t, enum.Enum):
        kind = (None, None)
    elif t in _LENGTH:
        kind = (t.__name__, _LENGTH[t])
    else:
        base = next((b for b in _LENGTH if issubclass(t, b)), None)
        kind = (type_name(t), None if base is None else _LENGTH[base])
    if len(_REF_KINDS) < 4096:
        _REF_KINDS[t] = kind
    return kind


def _secret_header(pair: Any, base: Any) -> bool:
    """A ``(b"authorization", value)`` pair (ASGI headers, raw HTTP): its value is hidden.

    Only bytes names: a pair of str is copied by the flat paths, which look at dict keys
    only."""
    try:
        name = base.__getitem__(pair, 0)
    except IndexError:  # a list emptied by another thread
        return False
    return type(name) is bytes and len(name) <= 256 and secret_name(name.decode("latin-1"))


def _kind(v: Any) -> str:
    t = type(v)
    return v.type_name if t is Truncated else t.__name__


def _unique_set(items: list[Any], base: type) -> Any:
    out: set[Any] = set()
    for i, item in enumerate(items):
        out.add(Truncated(_kind(item), 0, "duplicate", (item, i)) if item in out else item)
    return out if base is set else frozenset(out)


def _class_attr(t: type, name: str) -> Any:
    """``name`` from the class dicts along ``t``'s MRO (no metaclass ``__getattr__``)."""
    for klass in _MRO.__get__(t):
        d = _TYPE_DICT.__get__(klass)
        if name in d:
            return d[name]
    return None


def type_name(t: type) -> str:
    try:
        mod = type.__dict__["__module__"].__get__(t)
        qual = type.__dict__["__qualname__"].__get__(t)
        return f"{mod}.{qual}" if type(mod) is str and type(qual) is str else str(t.__name__)
    except Exception:
        return "<unknown type>"


def _callable_label(v: Any) -> str:
    t = type(v)
    try:
        if issubclass(t, types.ModuleType):
            name = v.__dict__.get("__name__", "?")
            return f"<module {name}>"
        if issubclass(t, type):
            return f"<class {type_name(v)}>"
        if issubclass(t, types.MethodType):
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


_EXC_DICT: Final = BaseException.__dict__["__dict__"]
_PLAIN_EXCEPTIONS: dict[type, bool] = {}


def _plain_exception_type(t: type) -> bool:
    """True for an exception class built only from exception classes, with no
    ``__slots__``: its snapshot's attributes are its ``__dict__`` and ``args``."""
    plain = _PLAIN_EXCEPTIONS.get(t)
    if plain is None:
        mro = _MRO.__get__(t)
        plain = all(k is object or issubclass(k, BaseException) for k in mro) and not (
            _slot_names(mro)
        )
        if len(_PLAIN_EXCEPTIONS) < 4096:
            _PLAIN_EXCEPTIONS[t] = plain
    return plain


def _flat_exception(s: Snapper, exc: Any, t: type, args: tuple[Any, ...]) -> Any:
    """What :func:`exception_snapshot` gives for an exception with an empty ``__dict__``
    and flat ``args``, when nothing would be cut, in one step; else None.

    The full path snapshots the exception as an object (its name, then ``{"args": args}``
    as its attributes) and then ``args`` again; this charges the same bytes.
    """
    try:
        d = _EXC_DICT.__get__(exc)
    except Exception:
        return None
    if type(d) is not dict or d:
        return None
    depth = s.depth_limit
    c_attrs = _flat_cost({"args": args}, dict, s.strlen, s.int_limit, s.items, depth)
    c_args = _flat_cost(args, tuple, s.strlen, s.int_limit, s.items, depth)
    name = type_name(t)
    total = len(name) + _SMALL + c_attrs + c_args
    if c_attrs < 0 or c_args < 0 or total > s.budget:
        return None
    copy = _flat_copy(args, depth)
    if copy is None:
        return None
    s.budget -= total
    return {"type": name, "args": copy, "attrs": None}


def exception_snapshot(s: Snapper, exc: Any) -> Any:
    """An exception as ``{type, args, attrs}``, read without calling its ``__str__``/``__repr__``.

    Any other value (an exit reported as an exception with no exception object) is
    snapshotted as it is.
    """
    t = type(exc)
    if not issubclass(t, BaseException):
        return s.snap(exc)
    try:
        args = _EXC_ARGS.__get__(exc)
    except Exception:
        args = ()
    if type(args) is tuple and not s.repr_objects and _plain_exception_type(t):
        flat = _flat_exception(s, exc, t, args)
        if flat is not None:
            return flat
    snap = s.snap(exc)
    attrs = snap.attrs if type(snap) is ObjectSnapshot else None
    if type(attrs) is dict:
        attrs = {k: v for k, v in attrs.items() if k != "args"} or None
    return {"type": type_name(type(exc)), "args": s.snap(args), "attrs": attrs}


def deep_namespace() -> dict[str, Any]:
    """What the C core's walk (``_deep.c``) compares with and calls: it hands every value
    it does not copy itself back to :class:`Snapper`, and shares its caches."""
    return {
        "Truncated": Truncated,
        "ObjectSnapshot": ObjectSnapshot,
        "Enum": enum.Enum,
        "Decimal": decimal.Decimal,
        "Fraction": fractions.Fraction,
        "PurePath": pathlib.PurePath,
        "deque": deque,
        "callable_kinds": _CALLABLE_KINDS,
        "keep_types": tuple(KEEP_TYPES),
        "type_name": type_name,
        "callable_label": _callable_label,
        "secret_names": _redact.secret_names,
        "secret_name": secret_name,
        "guarded": guarded,
        "slot_names": _SLOT_NAMES,
        "slot_names_fn": _slot_names,
    }
