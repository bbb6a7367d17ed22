"""Perfetto's protobuf trace (opens in ui.perfetto.dev and trace_processor), written as a stream.

The output is a ``Trace``: length-delimited ``TracePacket``s (field 1), encoded here by
hand (varints and length-prefixed fields), so exporting needs no dependency and no
protobuf object per event. Each process is one packet sequence with its own interned
strings (event names, annotation names and ``ast_node_id``\\s); it has a process track,
one track per thread (a ``ThreadDescriptor``) and one per asyncio task (a child of its
thread's track); see below for their names. Timestamps are the events' monotonic
``timestamp`` in ns, on Perfetto's default clock.

Calls are slices: ``TYPE_SLICE_BEGIN`` at entry with the arguments, ``call_id`` and
``ast_node_id`` as debug annotations, ``TYPE_SLICE_END`` at exit with the return value
(when not None), the exception and an exit reason other than ``normal``. Slices always
nest on their track, whatever the interleaving of generators, async generators and
coroutines: the trace records no yield, so a call's slice is taken to run while the events
of its track are its own or its descendants'. An event whose call (an entry's parent, an
exit's or an instant's own call) is open below the top of its track's stack ends the
slices above it, ``suspended`` (a generator that yielded, or a call whose exit was lost);
an entry with no parent (a root call: nothing runs in its context) ends them all. A
suspended call that shows itself again (a call of its, an instant, its exit) is *resumed*:
a new slice of the same name and ``call_id``, marked ``resumed``, above its caller's if
that is open on the track (the slices above it end: they are suspended), else on top;
its slices are joined by a flow (the first one's END, each resumption's BEGIN). So an
async generator's slice ends where its caller goes on, and two generators whose lives
cross each get a slice per stretch they run. An exit whose entry was not recorded becomes
a ``function_exit`` instant. An exit on another thread or task than its entry ends the
slice on the entry's track. Slices still open at the end (the process died, or was still
running) end at their track's last time with ``exit_reason: "not recorded"``. Every other
event is an instant on its thread or task track with its data as debug annotations; sends
and receives that belong together are linked by a flow: a message's ``message_id``, a
remote call's ``(trace_id, span_id)``, a task's ``spawn_id`` from its creation to its
start.

Tracks are named from the trace's thread and task notes (``docs/trace-format.md``): a
thread by its ``threading`` name with its OS thread id as ``tid``, a task by its asyncio
name; a thread whose ident the OS gave to an ended thread gets a track of its own.

Debug annotation values are bounded: :data:`MAX_DEPTH` levels, :data:`MAX_ITEMS` items per
container, :data:`MAX_STRING` characters per string; a cut says how much was left out.
Memory is that of the open calls, the tracks and the interned strings, never the trace's
length: packets are written as they are made, a megabyte at a time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Final

from tidescope.export._output import append, create_file
from tidescope.export._perfetto_wire import (
    _BEGIN,
    _CLEARED,
    _END,
    _INSTANT,
    _INT64,
    _MASK64,
    _NEEDS,
    _SMALL,
    _V14,
    MAX_DEPTH,
    MAX_ITEMS,
    MAX_STRING,
    _field,
    _fixed64,
    _flow,
    _str,
    _value,
    _varint,
)
from tidescope.export._tracks import Tracks
from tidescope.export.reader import read_trace, trace_files

__all__ = [
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MAX_STRING",
    "default_output",
    "headers",
    "write_file",
    "write_perfetto",
    "write_records",
]

_FLUSH_AT: Final = 1 << 20
_MAX_SUSPENDED: Final = 1 << 16

_NAMES: Final = ("args", "call_id", "ast_node_id", "return_value", "exception", "exit_reason")
# the name_iid fields (1) they get, interned first on every sequence
_A_ARGS: Final = b"\x08\x01"
_A_CALL_ID: Final = b"\x08\x02"
_A_RETURN_VALUE: Final = b"\x08\x04"
_FLOWS: Final = {
    "message_send": "m",
    "message_receive": "m",
    "remote_call_send": "r",
    "remote_call_receive": "r",
    "process_spawn": "s",
}


class _Track:
    """A thread's or task's track: its slice stack (call ids) and the last time written."""

    __slots__ = ("begin", "end", "last", "stack", "uuid")

    def __init__(self, uuid: bytes) -> None:
        self.uuid = uuid  # ``track_uuid`` (11), tag and varint, ready to write
        self.begin = _BEGIN + uuid
        self.end = _END + uuid
        self.stack: list[Any] = []
        self.last = 0


# An open slice: its track, its name_iid field and its caller's call id. A plain tuple: one
# is made per call, and a class's __init__ costs twice as much.
_Call = tuple[_Track, bytes, Any]


class _Process:
    """One process: its packet sequence, its interned strings, tracks and open calls."""

    __slots__ = (
        "annotation_names", "calls", "flows", "head", "names", "pid", "seq", "sites",
        "strings", "suspended", "tasks", "threads", "uuid",
    )  # fmt: skip

    def __init__(self, pid: Any, seq: int, uuid: int) -> None:
        self.pid = pid
        self.seq = b"\x50" + _varint(seq)  # trusted_packet_sequence_id (10)
        self.head = self.seq + b"\x68" + _SMALL[_NEEDS]  # sequence_flags (13)
        self.uuid = uuid
        self.names: dict[Any, bytes] = {}  # event name key -> name_iid field
        self.sites: dict[Any, tuple[bytes, bytes]] = {}  # -> name_iid, ast_node_id annotation
        self.annotation_names: dict[str, bytes] = {}  # -> name_iid field
        self.strings: dict[str, bytes] = {}  # -> string_value_iid field
        self.threads: dict[Any, _Track] = {}
        self.tasks: dict[Any, _Track] = {}
        self.calls: dict[Any, _Call] = {}
        self.suspended: dict[Any, _Call] = {}  # call id -> call: its slice ended, not it
        self.flows: dict[Any, bytes] = {}  # call id -> flow_ids field, once suspended


class _Writer:
    """The encoder's state: the output buffer, the processes, the next track uuid."""

    def __init__(self, sink: Callable[[bytearray], object]) -> None:
        self.sink = sink
        self.out = bytearray()
        self.uuids = 0
        self.processes: dict[Any, _Process] = {}
        self.headers: dict[Any, dict[str, Any]] = {}
        self.interned = bytearray()  # InternedData fields for the packet being made
        self.names = Tracks()

    # -- packets ------------------------------------------------------------------------

    def packet(self, proc: _Process, body: bytes, head: bytes | None = None) -> None:
        """Write one ``TracePacket`` of ``proc``'s sequence; ``body`` holds its data fields."""
        if self.interned:
            body += _field(b"\x62", self.interned)  # interned_data (12)
            self.interned = bytearray()
        if head is None:
            head = proc.head
        out = self.out
        out += b"\x0a"  # Trace.packet (1)
        out += _varint(len(head) + len(body))
        out += head
        out += body
        if len(out) >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if self.out:
            self.sink(self.out)
            self.out.clear()  # the same buffer: the hot path holds it

    def describe(self, proc: _Process, descriptor: bytes) -> None:
        self.packet(proc, _field(b"\xe2\x03", descriptor))  # track_descriptor (60)

    def new_uuid(self) -> int:
        self.uuids += 1
        return self.uuids

    def process(self, pid: Any) -> _Process:
        proc = self.processes.get(pid)
        if proc is None:
            proc = _Process(pid, len(self.processes) + 1, self.new_uuid())
            self.processes[pid] = proc
            header = self.headers.get(pid) or {}
            argv = header.get("argv")
            desc = b"\x08" + _varint(_int32(pid))  # ProcessDescriptor.pid (1)
            if type(argv) is list and argv:
                for arg in argv[:MAX_ITEMS]:
                    desc += _field(b"\x12", _str(str(arg)))  # cmdline (2)
                desc += _field(b"\x32", _str(os.path.basename(str(argv[0]))))  # process_name
            else:
                desc += _field(b"\x32", b"pid %d" % _int32(pid))
            for name in _NAMES:  # interned in the first packet, as the hot path expects
                self.annotation_name(proc, name)
            track = _field(b"\xe2\x03", b"\x08" + _varint(proc.uuid) + _field(b"\x1a", desc))
            self.packet(proc, track, proc.seq + b"\x68" + _SMALL[_CLEARED])
        return proc

    def thread(self, proc: _Process, thread_id: Any, ts: Any) -> _Track:
        """The track of ``thread_id``'s thread at ``ts`` (a new one for a new thread)."""
        t = self.names.thread(proc.pid, thread_id, ts)
        key = (thread_id, t.gen)
        track = proc.threads.get(key)
        if track is None:
            uuid = self.new_uuid()
            track = proc.threads[key] = _Track(b"\x58" + _varint(uuid))
            if t.native_id is not None:
                tid = t.native_id
            else:
                tid = thread_id if type(thread_id) is int else hash(thread_id)
            name = t.name if t.name is not None else f"thread {thread_id}"
            desc = b"\x08" + _varint(_int32(proc.pid)) + b"\x10" + _varint(tid)  # pid, tid
            desc += _field(b"\x2a", _str(name))  # thread_name (5)
            self.describe(
                proc,
                b"\x08" + _varint(uuid) + b"\x28" + _varint(proc.uuid) + _field(b"\x22", desc),
            )
        proc.threads[thread_id] = track  # the ident's current thread
        return track

    def task(self, proc: _Process, task_id: Any, thread_id: Any, ts: Any) -> _Track:
        track = proc.tasks.get(task_id)
        if track is None:
            parent = self.thread(proc, thread_id, ts).uuid[1:]  # its varint
            uuid = self.new_uuid()
            track = proc.tasks[task_id] = _Track(b"\x58" + _varint(uuid))
            label = self.names.task(proc.pid, task_id) or f"task {task_id}"
            name = _field(b"\x12", _str(label))  # name (2)
            self.describe(proc, b"\x08" + _varint(uuid) + b"\x28" + parent + name)
        return track

    # -- interning -----------------------------------------------------------------------

    def site(
        self, proc: _Process, key: Any, site: Any, data: dict[str, Any]
    ) -> tuple[bytes, bytes]:
        """A function's ``name_iid`` field and its ``ast_node_id`` annotation, interned."""
        name = self.event_name(proc, ("site", key), f"{data.get('module')}.{data.get('function')}")
        note = b"" if site is None else self.string(proc, "ast_node_id", str(site))
        named = proc.sites[key] = (name, note)
        return named

    def event_name(self, proc: _Process, key: Any, name: str) -> bytes:
        """The ``name_iid`` field (10) for ``name``, interned on first use."""
        iid = len(proc.names) + 1
        field = proc.names[key] = b"\x50" + _varint(iid)
        entry = b"\x08" + _varint(iid) + _field(b"\x12", _str(name))
        self.interned += _field(b"\x12", entry)  # InternedData.event_names (2)
        return field

    def annotation_name(self, proc: _Process, name: str) -> bytes:
        """The ``name_iid`` field (1) of a debug annotation named ``name``, interned."""
        field = proc.annotation_names.get(name)
        if field is None:
            iid = len(proc.annotation_names) + 1
            field = proc.annotation_names[name] = b"\x08" + _varint(iid)
            entry = b"\x08" + _varint(iid) + _field(b"\x12", _str(name))
            self.interned += _field(b"\x1a", entry)  # debug_annotation_names (3)
        return field

    def annotation(self, proc: _Process, name: str, value: Any) -> bytes:
        """A ``debug_annotations`` field (4): interned ``name`` and ``value``."""
        return _field(b"\x22", self.annotation_name(proc, name) + _value(value))

    def string(self, proc: _Process, name: str, value: str) -> bytes:
        """A ``debug_annotations`` field with an interned string value (``ast_node_id``)."""
        field = proc.strings.get(value)
        if field is None:
            iid = len(proc.strings) + 1
            field = proc.strings[value] = b"\x88\x01" + _varint(iid)  # string_value_iid (17)
            entry = b"\x08" + _varint(iid) + _field(b"\x12", _str(value))
            self.interned += _field(b"\xea\x01", entry)  # debug_annotation_string_values
        return _field(b"\x22", self.annotation_name(proc, name) + field)

    # -- slices --------------------------------------------------------------------------

    def end(self, proc: _Process, track: _Track, ts: int, extra: bytes = b"") -> None:
        te = _END + track.uuid + extra
        self.packet(proc, b"\x40" + _varint(ts) + _field(b"\x5a", te))

    def begin(self, proc: _Process, track: _Track, ts: int, call: _Call, extra: bytes) -> None:
        te = _BEGIN + track.uuid + call[1] + extra
        self.packet(proc, b"\x40" + _varint(ts) + _field(b"\x5a", te))

    def settle(self, proc: _Process, track: _Track, owner: Any, ts: int, root: bool) -> None:
        """Make ``owner`` the running call of ``track`` at ``ts`` (see above): end the
        slices above it, or resume it; with ``root`` (an entry with no parent), end all."""
        stack = track.stack
        if owner in proc.calls and proc.calls[owner][0] is track:
            while stack and stack[-1] != owner:
                self.suspend(proc, track, stack.pop(), ts)
        elif owner in proc.suspended and proc.suspended[owner][0] is track:
            call = proc.suspended.pop(owner)
            caller = proc.calls.get(call[2])
            if caller is not None and caller[0] is track:  # resumed by its caller, most likely
                while stack[-1] != call[2]:
                    self.suspend(proc, track, stack.pop(), ts)
            proc.calls[owner] = call
            stack.append(owner)
            extra = self.annotation(proc, "resumed", True) + proc.flows.get(owner, b"")
            extra += self.annotation(proc, "call_id", owner)
            self.begin(proc, track, ts, call, extra)
        elif root:
            while stack:
                self.suspend(proc, track, stack.pop(), ts)

    def suspend(self, proc: _Process, track: _Track, call_id: Any, ts: int) -> None:
        """End ``call_id``'s slice (popped from ``track``) while the call goes on."""
        call = proc.calls.pop(call_id)
        if len(proc.suspended) >= _MAX_SUSPENDED:  # lost exits: forget the oldest
            old = next(iter(proc.suspended))
            del proc.suspended[old]
            proc.flows.pop(old, None)
        proc.suspended[call_id] = call
        extra = self.annotation(proc, "suspended", True)
        if call_id not in proc.flows:  # the first END starts the flow to its resumptions
            try:
                fid = hash(("call", call_id)) & _MASK64 or 1
            except TypeError:
                fid = 1
            flow = proc.flows[call_id] = b"\xf9\x02" + _fixed64(fid)
            extra += flow
        self.end(proc, track, ts, extra)

    def finish(self) -> None:
        """End every slice still open, at the last time written on its track."""
        for proc in self.processes.values():
            note = self.annotation(proc, "exit_reason", "not recorded")
            for track in (*proc.threads.values(), *proc.tasks.values()):
                for _ in track.stack:
                    self.end(proc, track, track.last, note)
                track.stack.clear()
            proc.calls.clear()
        self.flush()


def _int32(value: Any) -> int:
    return value if type(value) is int and -(1 << 31) <= value < 1 << 31 else 0


def write_records(records: Iterable[dict[str, Any]], sink: Callable[[bytearray], object]) -> int:
    """Write trace records (as :func:`read_trace` yields them) as one Perfetto trace, handing
    each block of about a megabyte to ``sink``; returns the number of events exported.

    The block is a buffer used again for the next one: ``sink`` writes or copies it.

    ``$header`` records name their process (``argv``); a header must come before its
    process's first event to be used. ``$note`` records name threads and tasks (a note
    must come before the events it names). Other records that are not events are skipped.
    """
    w = _Writer(sink)
    out = w.out
    names = w.names
    head = b""
    n = 0
    proc: _Process | None = None
    pid: Any = object()
    for rec in records:
        etype = rec.get("event_type")
        if etype is None:
            header = rec.get("$header")
            if type(header) is dict:
                w.headers[header.get("pid")] = header
            elif "$note" in rec:
                names.note(rec["$note"])
            continue
        n += 1
        if rec["pid"] != pid or proc is None:
            pid = rec["pid"]
            proc = w.process(pid)
            head = proc.head
        ts = rec["timestamp"]
        data = rec["data"]
        name = None
        if type(data) is not dict:
            data = {"data": data}
        call_id = rec["call_id"]
        # calls, written here rather than through helpers: they are nearly every event
        if etype == "function_exit":
            ended = proc.calls.get(call_id)
            if ended is None and call_id in proc.suspended:  # it shows itself: resumed
                track = proc.suspended[call_id][0]
                ts = track.last if ts < track.last else ts
                w.settle(proc, track, call_id, ts, False)
                ended = proc.calls.get(call_id)
            if ended is not None:
                del proc.calls[call_id]
                if proc.flows:
                    proc.flows.pop(call_id, None)
                te = b""
                value = data.get("return_value")
                if value is not None:
                    if type(value) is int and 0 <= value < 0x4000:
                        value = b"\x20" + _V14[value]
                    else:
                        value = _value(value)
                    te += b"\x22" + _varint(len(value) + 2) + _A_RETURN_VALUE + value
                if data.get("exception") is not None:
                    te += w.annotation(proc, "exception", data["exception"])
                reason = data.get("exit_reason")
                if reason != "normal":
                    te += w.annotation(proc, "exit_reason", reason)
                track = ended[0]
                stack = track.stack
                ts = track.last if ts < track.last else ts
                track.last = ts
                if stack[-1] != call_id:  # calls above it: suspended (or their exits lost)
                    proc.calls[call_id] = ended
                    w.settle(proc, track, call_id, ts, False)  # its packets carry its names
                    del proc.calls[call_id]
                stack.pop()  # no interning: its names are the fixed ones
                te = track.end + te
                tsb = _varint(ts)
                size = _varint(len(te))
                out += b"".join(
                    (b"\x0a", _varint(len(head) + len(tsb) + len(size) + len(te) + 2), head,
                     b"\x40", tsb, b"\x5a", size, te)
                )  # fmt: skip
                if len(out) >= _FLUSH_AT:
                    w.flush()
                continue
            data = {**data, "call_id": call_id, "entry": "not recorded"}
        # the track: an exit's is its entry's
        task = rec["task_id"]
        thread = rec["thread_id"]
        if task is None:
            track = (None if names.waiting else proc.threads.get(thread)) or w.thread(
                proc, thread, ts
            )
        else:
            track = proc.tasks.get(task) or w.task(proc, task, thread, ts)
        stack = track.stack
        ts = track.last if ts < track.last else ts
        if etype == "function_entry" and call_id not in proc.calls:
            parent = rec["parent_id"]
            if (stack[-1] if stack else None) != parent:
                w.settle(proc, track, parent, ts, parent is None)
            site = rec["ast_node_id"]
            key = (data.get("module"), data.get("function")) if site is None else site
            named = proc.sites.get(key)
            if named is None:
                named = w.site(proc, key, site, data)
            proc.calls[call_id] = (track, named[0], parent)
            track.last = ts
            stack.append(call_id)
            args = _value(data.get("args"))
            if type(call_id) is int and 0 <= call_id < _INT64:
                cid = _varint(call_id)
                cid = b"\x22" + _V14[len(cid) + 3] + _A_CALL_ID + b"\x20" + cid
            else:
                cid = w.annotation(proc, "call_id", call_id)
            te = b"".join(
                (track.begin, named[0], b"\x22", _varint(len(args) + 2), _A_ARGS, args, cid,
                 named[1])
            )  # fmt: skip
            if w.interned:  # a new site's names
                w.packet(proc, b"\x40" + _varint(ts) + _field(b"\x5a", te))
                continue
            # the packet's fields, in any order protobuf allows: the sequence first
            tsb = _varint(ts)
            size = _varint(len(te))
            out += b"".join(
                (b"\x0a", _varint(len(head) + len(tsb) + len(size) + len(te) + 2), head,
                 b"\x40", tsb, b"\x5a", size, te)
            )  # fmt: skip
            if len(out) >= _FLUSH_AT:
                w.flush()
            continue
        # an instant: a domain event, or a call event that cannot be a slice
        if call_id is not None and etype != "function_exit" and (not stack or stack[-1] != call_id):
            w.settle(proc, track, call_id, ts, False)
        track.last = ts
        if name is None:
            name = proc.names.get(etype) or w.event_name(proc, etype, str(etype))
        inst = bytearray(_INSTANT + track.uuid + name)
        for key, value in data.items():
            inst += w.annotation(proc, str(key), value)
        if rec["ast_node_id"] is not None:
            inst += w.string(proc, "ast_node_id", str(rec["ast_node_id"]))
        kind = _FLOWS.get(etype)
        if kind is not None:
            inst += _flow(kind, data)
        w.packet(proc, b"\x40" + _varint(ts) + _field(b"\x5a", inst))
    w.finish()
    return n


def headers(directory: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The ``$header`` record of each trace file of ``directory`` (their processes' names).

    Raises:
        TraceError: a file cannot be read, or is not a trace.
    """
    for path in trace_files(directory):
        for first in read_trace(path):  # the reader is closed as the loop leaves it
            if "$header" in first:
                yield first
            break


def write_file(
    records: Iterable[dict[str, Any]], target: str | os.PathLike[str]
) -> tuple[int, Path]:
    """Write trace records as a Perfetto trace to ``target``; returns the events and the path.

    The trace is written to a new private file next to ``target`` (never through a symlink)
    and renamed over ``target`` when complete, so a failed export leaves no partial file
    and an existing ``target`` (or a symlink planted there) is replaced, never written
    through.

    Raises:
        OSError: the file cannot be created or written.
        TraceError: a trace file cannot be read.
    """
    path = Path(target)
    fd, tmp = create_file(path.with_name(f".{path.name}.tmp"))
    try:
        try:
            n = write_records(records, lambda block: append(fd, block))
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return n, path


def write_perfetto(directory: str | os.PathLike[str], out: IO[bytes]) -> int:
    """Write every trace file of ``directory`` as one Perfetto trace to ``out``; returns events.

    Raises:
        TraceError: a file cannot be read, or is not a trace.
    """

    def records() -> Iterator[dict[str, Any]]:
        for path in trace_files(directory):
            yield from read_trace(path)

    return write_records(records(), out.write)


def default_output(directory: str | os.PathLike[str]) -> Path:
    """Where ``tidescope export --format perfetto`` writes by default."""
    return Path(directory) / "trace.perfetto-trace"
