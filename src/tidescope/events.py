"""The Event envelope every captured event shares, the event types, and the value markers."""

from __future__ import annotations

import base64
import datetime
import decimal
import enum
import uuid
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "ENVELOPE_FIELDS",
    "Event",
    "EventType",
    "ObjectRef",
    "ObjectSnapshot",
    "Redacted",
    "Truncated",
    "Unsupported",
    "jsonable",
]


class EventType(enum.StrEnum):
    """Every event type of the seed (catalogue §1-§5), in Python spelling.

    The value is the string written to exports; it never changes once released.
    """

    # core (§1.2, §3.1, §5.2)
    FUNCTION_ENTRY = "function_entry"
    FUNCTION_EXIT = "function_exit"
    PROCESS_SPAWN = "process_spawn"
    PROCESS_EXIT = "process_exit"
    MESSAGE_SEND = "message_send"
    MESSAGE_RECEIVE = "message_receive"
    STATE_CHANGE = "state_change"
    STATE_SNAPSHOT = "state_snapshot"
    CALLBACK_REPLY = "callback_reply"
    VARIABLE_ASSIGNMENT = "variable_assignment"
    ERROR = "error"
    PERFORMANCE_METRIC = "performance_metric"
    GARBAGE_COLLECTION = "garbage_collection"
    CRASH_DUMP = "crash_dump"
    VM_EVENT = "vm_event"
    SCHEDULER_EVENT = "scheduler_event"
    TABLE_EVENT = "table_event"
    TRACE_CONTROL = "trace_control"
    GENERIC = "generic"
    # AST reporting (§1.3); the seed wrote these as fallback FunctionEntry structs
    LOCAL_VARIABLE_SNAPSHOT = "local_variable_snapshot"
    EXPRESSION_VALUE = "expression_value"
    LINE_EXECUTION = "line_execution"
    PATTERN_MATCH = "pattern_match"
    BRANCH_EXECUTION = "branch_execution"
    LOOP_ITERATION = "loop_iteration"
    AST_CORRELATION_PERFORMANCE = "ast_correlation_performance"
    # HTTP (Phoenix request / controller / action, §1.4)
    HTTP_REQUEST_START = "http_request_start"
    HTTP_REQUEST_COMPLETE = "http_request_complete"
    CONTROLLER_ENTRY = "controller_entry"
    CONTROLLER_EXIT = "controller_exit"
    ACTION_PARAMS = "action_params"
    ACTION_START = "action_start"
    ACTION_SUCCESS = "action_success"
    ACTION_ERROR = "action_error"
    ACTION_COMPLETE = "action_complete"
    # live sessions (LiveView, §1.5)
    LIVE_MOUNT_START = "live_mount_start"
    LIVE_MOUNT_COMPLETE = "live_mount_complete"
    LIVE_HANDLE_EVENT_START = "live_handle_event_start"
    LIVE_HANDLE_EVENT_COMPLETE = "live_handle_event_complete"
    LIVE_ASSIGNS_CHANGE = "live_assigns_change"
    LIVE_EVENT = "live_event"
    LIVE_CALLBACK = "live_callback"
    LIVE_CALLBACK_SUCCESS = "live_callback_success"
    LIVE_CALLBACK_ERROR = "live_callback_error"
    # websocket channels (Channel, §1.6)
    CHANNEL_JOIN_START = "channel_join_start"
    CHANNEL_JOIN_COMPLETE = "channel_join_complete"
    CHANNEL_MESSAGE_START = "channel_message_start"
    CHANNEL_MESSAGE_COMPLETE = "channel_message_complete"
    # database (Ecto, §1.7)
    DB_QUERY_START = "db_query_start"
    DB_QUERY_COMPLETE = "db_query_complete"
    # actors (GenServer, §1.7)
    ACTOR_CALLBACK_START = "actor_callback_start"
    ACTOR_CALLBACK_SUCCESS = "actor_callback_success"
    ACTOR_CALLBACK_ERROR = "actor_callback_error"
    ACTOR_CALLBACK_COMPLETE = "actor_callback_complete"
    # distributed (§1.8)
    NODE_EVENT = "node_event"
    PARTITION_DETECTED = "partition_detected"
    REMOTE_CALL_SEND = "remote_call_send"
    REMOTE_CALL_RECEIVE = "remote_call_receive"


ENVELOPE_FIELDS: Final = (
    "event_id",
    "timestamp",
    "wall_time",
    "node",
    "pid",
    "thread_id",
    "task_id",
    "correlation_id",
    "parent_id",
    "call_id",
    "ast_node_id",
    "event_type",
    "data",
)


class Event:
    """One captured event: the envelope of DESIGN.md invariant 2 and a type-specific ``data`` dict.

    ``timestamp`` is monotonic ns (``time.monotonic_ns``); ``wall_time`` is ns since the epoch.
    ``call_id`` is the call the event belongs to (for entry and exit: the call itself);
    ``parent_id`` is that call's caller; ``correlation_id`` groups every event of one logical
    operation (a bound request id, otherwise the outermost traced call).
    """

    __slots__ = ENVELOPE_FIELDS

    event_id: int
    timestamp: int
    wall_time: int
    node: str
    pid: int
    thread_id: int
    task_id: int | None
    correlation_id: Any
    parent_id: Any
    call_id: Any
    ast_node_id: str | None
    event_type: EventType | str
    data: dict[str, Any]

    def __init__(
        self,
        event_id: int,
        timestamp: int,
        wall_time: int,
        node: str,
        pid: int,
        thread_id: int,
        task_id: int | None,
        correlation_id: Any,
        parent_id: Any,
        call_id: Any,
        ast_node_id: str | None,
        event_type: EventType | str,
        data: dict[str, Any],
    ) -> None:
        self.event_id = event_id
        self.timestamp = timestamp
        self.wall_time = wall_time
        self.node = node
        self.pid = pid
        self.thread_id = thread_id
        self.task_id = task_id
        self.correlation_id = correlation_id
        self.parent_id = parent_id
        self.call_id = call_id
        self.ast_node_id = ast_node_id
        self.event_type = event_type
        self.data = data

    def __repr__(self) -> str:
        return (
            f"Event({self.event_type!s}, id={self.event_id}, call_id={self.call_id}, "
            f"parent_id={self.parent_id}, data={self.data!r})"
        )

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in ENVELOPE_FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass with eq

    def to_dict(self) -> dict[str, Any]:
        """The envelope as a JSON-ready dict (markers become tagged dicts, see :func:`jsonable`)."""
        out: dict[str, Any] = {f: getattr(self, f) for f in ENVELOPE_FIELDS}
        out["event_type"] = str(self.event_type)
        out["correlation_id"] = jsonable(self.correlation_id)
        out["parent_id"] = jsonable(self.parent_id)
        out["call_id"] = jsonable(self.call_id)
        out["data"] = jsonable(self.data)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        """Rebuild an event from :meth:`to_dict` output (data stays in its JSON form)."""
        etype: EventType | str
        try:
            etype = EventType(d["event_type"])
        except ValueError:
            etype = d["event_type"]
        return cls(
            d["event_id"], d["timestamp"], d["wall_time"], d["node"], d["pid"], d["thread_id"],
            d["task_id"], d["correlation_id"], d["parent_id"], d["call_id"], d["ast_node_id"],
            etype, d["data"],
        )  # fmt: skip


class Truncated:
    """Marks a value the bounded snapshot cut.

    ``type_name`` is the original type; ``size`` its original size: ``len()`` for strings,
    bytes and containers, ``bit_length()`` for ints. ``reason`` says which limit cut it:
    ``"length"`` (string/bytes/int too long, or a container past the item limit), ``"depth"``,
    ``"budget"`` (the per-event byte budget ran out), ``"cycle"`` (the container contains itself),
    ``"error"`` (reading it raised, or it changed size while read; ``kept`` may name the
    exception type), ``"duplicate"`` (a dict key or set item equal to an earlier one once
    both were cut: ``kept`` is then ``(snapshot, index)``, so no entry is lost) or
    ``"unhashable"`` (a dict key whose snapshot cannot be a key: ``size`` is then its
    position, ``kept`` its snapshot). Otherwise ``kept`` is what was kept: a prefix of a
    string, the first items of a container (already snapshotted), or ``None``.
    """

    __slots__ = ("kept", "reason", "size", "type_name")

    type_name: str
    size: int
    reason: str
    kept: Any

    def __init__(self, type_name: str, size: int, reason: str, kept: Any = None) -> None:
        object.__setattr__(self, "type_name", type_name)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "kept", kept)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Truncated is immutable")

    def __repr__(self) -> str:
        kept = "" if self.kept is None else f", kept={self.kept!r}"
        return f"Truncated({self.type_name!r}, size={self.size}, reason={self.reason!r}{kept})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not Truncated:
            return NotImplemented
        return (self.type_name, self.size, self.reason, self.kept) == (
            other.type_name,
            other.size,
            other.reason,
            other.kept,
        )

    def __hash__(self) -> int:
        return hash((Truncated, self.type_name, self.size, self.reason))


class ObjectSnapshot:
    """An arbitrary object, captured without calling its code.

    ``type_name`` is ``module.qualname`` of its class; ``object_id`` is ``id()`` at capture time
    (it tells two captures of one live object apart from two objects, nothing more);
    ``attrs`` holds a bounded snapshot of its ``__dict__`` and ``__slots__`` (or ``None`` if it
    has neither); ``repr`` holds ``repr()`` only when the configuration asks for it.
    """

    __slots__ = ("attrs", "object_id", "repr", "type_name")

    type_name: str
    object_id: int
    attrs: dict[str, Any] | Truncated | None
    repr: str | Truncated | None

    def __init__(
        self,
        type_name: str,
        object_id: int,
        attrs: dict[str, Any] | Truncated | None = None,
        repr: str | Truncated | None = None,
    ) -> None:
        object.__setattr__(self, "type_name", type_name)
        object.__setattr__(self, "object_id", object_id)
        object.__setattr__(self, "attrs", attrs)
        object.__setattr__(self, "repr", repr)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ObjectSnapshot is immutable")

    def __repr__(self) -> str:
        return f"<{self.type_name} object #{self.object_id:x} attrs={self.attrs!r}>"

    def __eq__(self, other: object) -> bool:
        if type(other) is not ObjectSnapshot:
            return NotImplemented
        return (self.type_name, self.object_id, self.attrs, self.repr) == (
            other.type_name,
            other.object_id,
            other.attrs,
            other.repr,
        )

    def __hash__(self) -> int:
        return hash((ObjectSnapshot, self.type_name, self.object_id))


class ObjectRef:
    """An object recorded by reference (the ``values = "ref"`` policy): its type, its
    ``id()`` and, for a builtin container, its length; nothing of its content, read without
    running its code.

    ``type_name`` is ``module.qualname`` of its class (a builtin's bare name); ``object_id``
    tells two references to one live object apart from two objects, as
    :attr:`ObjectSnapshot.object_id` does; ``length`` is ``None`` unless it is a list,
    tuple, dict, set, frozenset, deque, str, bytes or bytearray (or a subclass of one).
    """

    __slots__ = ("length", "object_id", "type_name")

    type_name: str
    object_id: int
    length: int | None

    def __init__(self, type_name: str, object_id: int, length: int | None = None) -> None:
        object.__setattr__(self, "type_name", type_name)
        object.__setattr__(self, "object_id", object_id)
        object.__setattr__(self, "length", length)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ObjectRef is immutable")

    def __repr__(self) -> str:
        length = "" if self.length is None else f" len={self.length}"
        return f"<ref {self.type_name} #{self.object_id:x}{length}>"

    def __eq__(self, other: object) -> bool:
        if type(other) is not ObjectRef:
            return NotImplemented
        return (self.type_name, self.object_id, self.length) == (
            other.type_name,
            other.object_id,
            other.length,
        )

    def __hash__(self) -> int:
        return hash((ObjectRef, self.type_name, self.object_id))


class Redacted:
    """Marks a value hidden because of its name (DESIGN.md invariant 8): an argument, a local
    or a dict key that the redaction pattern matches (``tidescope.config.Config.redact_pattern``).

    ``type_name`` is the hidden value's type (``"str"``, ``"NoneType"``, ``module.qualname``):
    enough to tell a missing secret from a present one, nothing of its content.
    """

    __slots__ = ("type_name",)

    type_name: str

    def __init__(self, type_name: str) -> None:
        object.__setattr__(self, "type_name", type_name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Redacted is immutable")

    def __repr__(self) -> str:
        return f"Redacted({self.type_name!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not Redacted:
            return NotImplemented
        return self.type_name == other.type_name

    def __hash__(self) -> int:
        return hash((Redacted, self.type_name))


_JSON_SCALARS: Final = (str, int, float, bool, type(None))


def jsonable(value: Any) -> Any:
    """Convert captured data to JSON-ready structures.

    Captured data is already bounded, so this never explodes. Tuples, lists, sets become lists;
    non-string dict keys become their ``repr``; bytes become ``{"$bytes": base64}``; markers
    become ``{"$truncated": ...}``, ``{"$object": ...}``, ``{"$ref": type_name, "id": ...,
    "len": ...}`` and ``{"$redacted": type_name}``;
    other values become ``{"$repr": ...}``.
    """
    t = type(value)
    if t in _JSON_SCALARS:
        return value
    if t is dict:
        return {(k if type(k) is str else _key_repr(k)): jsonable(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [jsonable(v) for v in value]
    if t is set or t is frozenset:
        return [jsonable(v) for v in value]
    if t is Truncated:
        out = {"$truncated": value.type_name, "size": value.size, "reason": value.reason}
        if value.kept is not None:
            out["kept"] = jsonable(value.kept)
        return out
    if t is ObjectSnapshot:
        out = {"$object": value.type_name, "id": value.object_id, "attrs": jsonable(value.attrs)}
        if value.repr is not None:
            out["repr"] = jsonable(value.repr)
        return out
    if t is ObjectRef:
        ref: dict[str, Any] = {"$ref": value.type_name, "id": value.object_id}
        if value.length is not None:
            ref["len"] = value.length
        return ref
    if t is Redacted:
        return {"$redacted": value.type_name}
    if t is bytes or t is bytearray:
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if t in (datetime.datetime, datetime.date, datetime.time):
        return value.isoformat()
    if t is datetime.timedelta:
        return {"$timedelta": value.total_seconds()}
    if t is uuid.UUID or t is decimal.Decimal or t is complex:
        return {"$" + t.__name__.lower(): str(value)}
    if isinstance(value, BaseException):
        return {"$exception": type(value).__qualname__}
    if t is Unsupported:
        out = {"$repr": f"<{value.type_name}>"}
        if value.text is not None:
            out["text"] = value.text
        return out
    return {"$repr": f"<{t.__module__}.{t.__qualname__}>"}


def _key_repr(key: Any) -> str:
    t = type(key)
    if t in _JSON_SCALARS or t is tuple or t is bytes:
        return repr(key)
    return str(jsonable(key))


class Unsupported:
    """A captured value the trace format has no form for, as read back from a trace file.

    ``type_name`` is ``module.qualname`` of its type; ``text`` is its text when the trace
    kept one (an enum member's name; a ``Decimal``, ``Fraction`` or path as ``str()``), or
    ``None``. See ``docs/trace-format.md``.
    """

    __slots__ = ("text", "type_name")

    type_name: str
    text: str | None

    def __init__(self, type_name: str, text: str | None = None) -> None:
        object.__setattr__(self, "type_name", type_name)
        object.__setattr__(self, "text", text)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Unsupported is immutable")

    def __repr__(self) -> str:
        text = "" if self.text is None else f", {self.text!r}"
        return f"Unsupported({self.type_name!r}{text})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not Unsupported:
            return NotImplemented
        return (self.type_name, self.text) == (other.type_name, other.text)

    def __hash__(self) -> int:
        return hash((Unsupported, self.type_name, self.text))
