"""The OTLP mapping: one process's events as OpenTelemetry ``Span`` messages (docs/otlp.md).

:class:`SpanBuilder` takes the decoder's envelope tuples in file order and gives the bytes
of a ``Span`` for each call that lasted at least the threshold, raised, carries a domain
event or has an exported call inside it, and one for each HTTP request and database query;
shorter calls are folded into counters on their nearest exported ancestor. Limits hold by
construction: attribute values cut to a size, at most ``max_events`` events per span (the
last one a summary of the rest), at most ``max_spans`` spans per trace id with places kept
for the open ancestors (the overflow folded, and counted on the trace's local root).
"""

from __future__ import annotations

import dataclasses
import os
import struct
import sys
import uuid
from collections.abc import Iterable
from typing import Any, Final

from tidescope.events import EventType
from tidescope.export import _otlp_wire as w
from tidescope.export._tsformat import FOLDED_CALLS
from tidescope.export.jsonl import encode_line
from tidescope.integrations._propagation import trace_id_for

__all__ = ["OtlpLimits", "SpanBuilder"]

MAX_FOLDED_FUNCTIONS: Final = 32
"""Functions listed by name in a span's folded counters (the most time first)."""
MAX_EVENT_ATTRIBUTES: Final = 64
"""Variables listed in one snapshot event."""
_DOMAIN: Final = frozenset({
    "remote_call_send", "remote_call_receive", "actor_callback_start",
    "actor_callback_success", "actor_callback_error", "actor_callback_complete",
    "channel_join_start", "channel_join_complete", "channel_message_start",
    "channel_message_complete", "live_mount_start", "live_handle_event_start",
    "live_callback", "message_send", "message_receive", "process_spawn",
})  # fmt: skip
_SNAPSHOTS: Final = frozenset({"local_variable_snapshot", "variable_assignment"})
_ENTRY: Final = EventType.FUNCTION_ENTRY
_EXIT: Final = EventType.FUNCTION_EXIT
_FOLDED: Final = FOLDED_CALLS
_DB_SYSTEMS: Final = {  # a driver's name -> db.system.name (semantic conventions)
    "sqlite3": "sqlite", "psycopg": "postgresql", "psycopg2": "postgresql",
    "asyncpg": "postgresql", "pymysql": "mysql", "MySQLdb": "mysql", "aiosqlite": "sqlite",
}  # fmt: skip
_KEYS: Final = (str, int)  # correlations a request is looked up by
_EVENT_ID: Final = w.int_key("tidescope.event_id")
_FOLDED_CALLS: Final = w.int_key("tidescope.folded.calls")
_FOLDED_COUNT: Final = w.int_key("tidescope.folded.count")
_FOLDED_TOTAL: Final = w.int_key("tidescope.folded.total_ns")
_FOLDED_SELF: Final = w.int_key("tidescope.folded.self_ns")
_TRACE_HEAD: Final = w.SPAN_TRACE_ID + b"\x10"  # the ids' tags and lengths
_SPAN_HEAD: Final = w.SPAN_SPAN_ID + b"\x08"
_PARENT_HEAD: Final = w.SPAN_PARENT + b"\x08"
_times: Final = struct.Struct("<BqBq").pack  # start and end (fixed64): tags 7 and 8


@dataclasses.dataclass(frozen=True)
class OtlpLimits:
    """What a span may hold (docs/otlp.md, "Limits"); the defaults fit Tempo's and the SDK's."""

    threshold_ns: int = 1_000_000
    """A call at least this long gets a span of its own."""
    max_attribute_length: int = 2048
    """Bytes an attribute's string value keeps (UTF-8, cut at a character)."""
    max_events: int = 128
    """Events per span, the summary of dropped ones included."""
    max_spans: int = 10_000
    """Spans per trace id from this process; more are dropped and counted."""


class _Frame:
    """A call (or HTTP request, or DB query) still open: what its span will need. The
    class attributes are the defaults (one assignment less per call than ``__slots__``)."""

    parent: _Frame | None = None
    depth = 0  # exported ancestors in this trace: places the budget keeps for them
    parent_span = b""
    trace = b""
    corr: Any = None
    keep = False
    error = False
    kind = w.KIND_INTERNAL
    child_ns = 0
    folded: dict[str, list[int]] | None = None
    events: list[bytes] | None = None
    dropped = 0
    attrs: list[bytes] | None = None
    request: _Frame | None = None
    site = b""
    name = ""
    link = b""

    def __init__(self, span_id: bytes, wall: int, start: int, event_id: int) -> None:
        self.span_id = span_id
        self.wall = wall
        self.start = start
        self.event_id = event_id


def _span_id(n: Any) -> bytes:
    if type(n) is int and 0 < n < 1 << 64:
        return n.to_bytes(8, "big")
    return os.urandom(8)


class SpanBuilder:
    """Builds the spans of one process's records; :meth:`feed` them in order, then
    :meth:`finish`. Finished spans (bytes of ``Span`` messages) gather in :attr:`spans`.

    Args:
        limits: what a span may hold.
        trace_file: the local trace file's name, put on every span.
        files: module name -> source file, for ``code.file.path``.
    """

    def __init__(
        self, limits: OtlpLimits, trace_file: str = "", files: dict[str, str] | None = None
    ) -> None:
        self.limits = limits
        self.spans: list[bytes] = []
        self.over_budget = 0
        self.bad_events = 0
        self._frames: dict[Any, _Frame] = {}
        self._requests: dict[Any, list[_Frame]] = {}  # correlation -> open requests
        self._queries: dict[Any, _Frame] = {}
        self._per_trace: dict[bytes, int] = {}
        self._over: dict[bytes, int] = {}
        self._sites: dict[Any, tuple[bytes, str]] = {}
        self._functions: dict[tuple[str, ...], bytes] = {}  # names -> their attribute
        self._files = files
        self._file_attr = w.attribute(w.SPAN_ATTRIBUTE, "tidescope.trace.file", trace_file)
        self._last_wall = 0
        self._threshold = limits.threshold_ns

    # -- records in ------------------------------------------------------------------

    def feed(self, records: Iterable[tuple[Any, ...]]) -> None:
        """Take events in file order, as the decoder's 13-field envelope tuples (the
        fields of :data:`tidescope.events.ENVELOPE_FIELDS`, values as captured)."""
        pending: tuple[Any, ...] | None = None  # an entry whose exit may come next
        # the last leaf folded: (caller's call id, site, correlation, caller, counters); the
        # next calls of that site from that caller need none of _fold_leaf's look-ups, and
        # are only summed here (run_*) until something else comes (a third of the time of
        # a folded call, measured)
        last: tuple[Any, Any, Any, _Frame, list[int]] | None = None
        run_n = run_ns = run_wall = 0
        threshold = self._threshold
        for rec in records:
            try:
                etype = rec[11]
                if pending is not None:
                    entry, pending = pending, None
                    if etype is _EXIT and rec[9] == entry[9]:
                        data = rec[12]
                        dur = data.get("duration_ns")
                        if (
                            last is not None
                            and entry[8] == last[0]
                            and entry[10] == last[1]
                            and type(dur) is int
                            and dur < threshold
                            and entry[7] == last[2]
                            and data.get("exit_reason") != "exception"
                        ):
                            run_n += 1
                            run_ns += dur
                            run_wall = rec[2]
                            continue
                        if run_n:
                            run_n = run_ns = self._add_run(last, run_n, run_ns, run_wall)
                        last = self._fold_leaf(entry, rec)
                        if last is not None:
                            continue
                    elif run_n:
                        run_n = run_ns = self._add_run(last, run_n, run_ns, run_wall)
                    last = None
                    self._enter(entry)
                if etype is _ENTRY:
                    pending = rec
                else:
                    if run_n:
                        run_n = run_ns = self._add_run(last, run_n, run_ns, run_wall)
                    last = None
                    if etype is _EXIT:
                        self._exit(rec)
                    elif etype is _FOLDED:
                        self._fold_calls(rec)
                    else:
                        self._other(etype, rec)
            except Exception:  # a record of a shape no reporter writes: skipped, counted
                self.bad_events += 1
        if run_n:
            self._add_run(last, run_n, run_ns, run_wall)
        if pending is not None:
            try:
                self._enter(pending)
            except Exception:
                self.bad_events += 1

    def _add_run(
        self, last: tuple[Any, Any, Any, _Frame, list[int]] | None, n: int, ns: int, wall: int
    ) -> int:
        """Count ``n`` short calls of ``ns`` in all, the last ending at ``wall``, where
        ``last`` says; 0 (the run is counted)."""
        if last is not None:
            last[3].child_ns += ns
            c = last[4]
            c[0] += n
            c[1] += ns
            c[2] += ns
            self._last_wall = wall
        return 0

    def _fold_leaf(
        self, entry: tuple[Any, ...], rec: tuple[Any, ...]
    ) -> tuple[Any, Any, Any, _Frame, list[int]] | None:
        """Fold a short call that made no call and reported nothing (its exit follows its
        entry) straight into its caller, without a frame: most calls. None if it needs
        the full path (it is long or raised; its caller is not a plain open call of its
        correlation; its site is new); else where the next such call goes (for feed),
        its caller's id None if its site is known by name only."""
        data = rec[12]
        dur = data.get("duration_ns")
        if type(dur) is not int or dur >= self._threshold or data.get("exit_reason") == "exception":
            return None
        parent = self._frames.get(entry[8])
        if parent is None or parent.corr != entry[7]:
            return None
        requests = self._requests
        if requests:
            reqs = requests.get(entry[7]) if type(entry[7]) in _KEYS else None
            if reqs and parent.request is not reqs[-1]:
                return None  # the first call of a request: a child of the request's span
        site = self._sites.get(entry[10] or (entry[12].get("module"), entry[12].get("function")))
        if site is None:
            return None
        self._last_wall = rec[2]
        parent.child_ns += dur
        folded = parent.folded
        if folded is None:
            folded = parent.folded = {}
        c = folded.get(site[1])
        if c is None:
            c = folded[site[1]] = [1, dur, dur]
        else:
            c[0] += 1
            c[1] += dur
            c[2] += dur
        return (entry[8] if entry[10] else None, entry[10], entry[7], parent, c)

    def _fold_calls(self, rec: tuple[Any, ...]) -> None:
        """A run of short calls the decoder folded (``_tsformat.FOLDED_CALLS``): what their
        entries and exits would do through :meth:`_enter` and :meth:`_exit`, at once."""
        module, function, n, ns = rec[12]
        key = rec[10] or (module, function)
        site = self._sites.get(key)
        if site is None:
            site = self._sites[key] = self._site({"module": module, "function": function}, rec[10])
        self._last_wall = rec[2]
        corr = rec[7]
        parent = self._frames.get(rec[8])
        requests = self._requests
        reqs = requests.get(corr) if requests and type(corr) in _KEYS else None
        request = reqs[-1] if reqs else None
        if request is not None and (parent is None or parent.request is not request):
            parent = request  # the request's first calls: children of the request's span
        if parent is None or (parent is not request and parent.corr != corr):
            return  # no caller, or another correlation: not exported, as _exit does
        parent.child_ns += ns
        folded = parent.folded
        if folded is None:
            folded = parent.folded = {}
        c = folded.get(site[1])
        if c is None:
            folded[site[1]] = [n, ns, ns]
        else:
            c[0] += n
            c[1] += ns
            c[2] += ns

    def _exit(self, rec: tuple[Any, ...]) -> None:
        frame = self._frames.pop(rec[9], None)
        if frame is None:
            return  # its entry was lost (dropped, or before a damaged chunk)
        self._last_wall = wall = rec[2]
        data = rec[12]
        dur = data.get("duration_ns")
        if type(dur) is not int:
            dur = max(0, rec[1] - frame.start)
        parent = frame.parent
        if parent is not None:
            parent.child_ns += dur
        if data.get("exit_reason") == "exception":
            self._exception(frame, wall, data.get("exception"))
        if frame.keep or dur >= self._threshold:
            if parent is not None:
                parent.keep = True
            self._emit(frame, wall)
        elif parent is not None:
            self._fold(frame, parent, dur)

    def _enter(self, rec: tuple[Any, ...]) -> None:
        call_id = rec[9]
        frame = _Frame(_span_id(call_id), rec[2], rec[1], rec[0])
        corr = frame.corr = rec[7]
        parent = self._frames.get(rec[8])
        requests = self._requests
        open_requests = requests.get(corr) if requests and type(corr) in _KEYS else None
        request = open_requests[-1] if open_requests else None
        if request is not None and (parent is None or parent.request is not request):
            parent = request  # the request's first call: a child of the request's span
        if parent is not None:
            frame.parent = parent
            frame.parent_span = parent.span_id
            frame.request = parent if parent is request else parent.request
            if parent.corr == corr or parent is request:
                frame.trace = parent.trace
                frame.depth = parent.depth + 1
            else:  # another correlation: a trace of its own, linked to where it began
                frame.trace = _trace(corr)
                frame.parent_span = b""
                frame.parent = None
                frame.link = w.span_link(parent.trace, parent.span_id, ())
        else:
            frame.trace = _trace(corr)
        data = rec[12]
        key = rec[10] or (data.get("module"), data.get("function"))
        site = self._sites.get(key)
        if site is None:
            site = self._sites[key] = self._site(data, rec[10])
        frame.site, frame.name = site
        self._frames[call_id] = frame

    def _site(self, data: dict[str, Any], ast_id: Any) -> tuple[bytes, str]:
        """A call site's constant span fields (name, kind, code attributes), encoded once."""
        module, function = str(data.get("module")), str(data.get("function"))
        name = self._cut(f"{module}.{function}")
        out = w.field_bytes(w.SPAN_NAME, name.encode()) + w.SPAN_KIND + w.varint(w.KIND_INTERNAL)
        out += w.attribute(w.SPAN_ATTRIBUTE, "code.function.name", name)
        path = self._file_of(module)
        if path:
            out += w.attribute(w.SPAN_ATTRIBUTE, "code.file.path", self._cut(path))
        if type(ast_id) is str:
            parts = ast_id.rsplit(":", 3)
            if len(parts) == 4 and parts[1].isdigit():
                out += w.attribute(w.SPAN_ATTRIBUTE, "code.line.number", int(parts[1]))
        return out + self._file_attr, name

    def _file_of(self, module: str) -> str | None:
        if self._files is not None:
            return self._files.get(module)
        # live export: this process's node table (its __main__ is the program's), then
        # the module itself for code that is not rewritten
        from tidescope.instrument import _nodes  # noqa: PLC0415

        rows = _nodes._table.get(module)
        if rows:
            return rows[0].file
        mod = sys.modules.get(module) if module != "__main__" else None
        path = getattr(mod, "__file__", None)
        return path if type(path) is str else None

    def _fold(self, frame: _Frame, parent: _Frame, dur: int) -> None:
        """Fold a short call (and what it folded) into its parent's counters."""
        folded = parent.folded
        if folded is None:
            folded = parent.folded = {}
        c = folded.get(frame.name)
        if c is None:
            folded[frame.name] = [1, dur, dur - frame.child_ns]
        else:
            c[0] += 1
            c[1] += dur
            c[2] += dur - frame.child_ns
        if frame.folded:
            for name, (n, total, own) in frame.folded.items():
                c = folded.get(name)
                if c is None:
                    folded[name] = [n, total, own]
                else:
                    c[0] += n
                    c[1] += total
                    c[2] += own

    def _other(self, etype: str, rec: tuple[Any, ...]) -> None:
        frame = self._frames.get(rec[9])
        if etype in _SNAPSHOTS:
            if frame is not None:
                variables = rec[12].get("variables")
                if type(variables) is not dict:
                    variables = {"value": rec[12].get("value")}
                self._event(frame, rec[2], "tidescope.variables", variables, json=True)
        elif etype == "http_request_start":
            self._request_start(rec)
        elif etype == "http_request_complete":
            self._request_end(rec)
        elif etype == "db_query_start":
            self._query_start(rec, frame)
        elif etype == "db_query_complete":
            self._query_end(rec)
        elif etype == "error":
            if frame is not None:
                data = rec[12]
                exc = {"type": data.get("error_type"), "args": data.get("message")}
                self._exception(frame, rec[2], exc, data.get("stacktrace"))
        elif etype in _DOMAIN:
            if etype == "remote_call_receive" and self._remote_parent(rec):
                return
            if frame is not None:
                frame.keep = True
                if etype == "remote_call_send":
                    frame.kind = w.KIND_CLIENT
                data = rec[12]
                small = {k: v for k, v in data.items() if type(v) in (str, int, float, bool)}
                self._event(frame, rec[2], etype, small, json=False)

    # -- domain spans ------------------------------------------------------------------

    def _request_start(self, rec: tuple[Any, ...]) -> None:
        corr = rec[7]
        if type(corr) not in _KEYS:
            return  # (a correlation no server binds: its calls are spans of their own)
        data = rec[12]
        req = _Frame(_span_id(rec[0]), rec[2], rec[1], rec[0])
        req.corr, req.trace, req.kind, req.keep = corr, _trace(corr), w.KIND_SERVER, True
        method, path = data.get("method"), data.get("path")
        req.name = self._cut(str(method or "HTTP"))
        req.attrs = [
            w.attribute(w.SPAN_ATTRIBUTE, "http.request.method", self._cut(str(method))),
            w.attribute(w.SPAN_ATTRIBUTE, "url.path", self._cut(str(path))),
        ]
        req.site = w.field_bytes(w.SPAN_NAME, req.name.encode()) + self._file_attr
        self._requests.setdefault(corr, []).append(req)

    def _remote_parent(self, rec: tuple[Any, ...]) -> bool:
        """A request's ``remote_call_receive``: its caller's span becomes its parent."""
        if type(rec[7]) not in _KEYS:
            return False
        reqs = self._requests.get(rec[7])
        data = rec[12]
        trace, span = data.get("trace_id"), data.get("span_id")
        if not reqs or reqs[-1].parent_span or type(trace) is not str or type(span) is not str:
            return False
        try:
            reqs[-1].trace, reqs[-1].parent_span = bytes.fromhex(trace), bytes.fromhex(span)
        except ValueError:
            return False
        return True

    def _request_end(self, rec: tuple[Any, ...]) -> None:
        if type(rec[7]) not in _KEYS:
            return
        reqs = self._requests.get(rec[7])
        if not reqs:
            return
        req = reqs.pop()
        if not reqs:
            del self._requests[rec[7]]
        status = rec[12].get("status_code")
        if type(status) is int:
            assert req.attrs is not None
            req.attrs.append(w.attribute(w.SPAN_ATTRIBUTE, "http.response.status_code", status))
            req.error = req.error or status >= 500
        self._emit(req, rec[2])

    def _query_start(self, rec: tuple[Any, ...], frame: _Frame | None) -> None:
        data = rec[12]
        q = _Frame(_span_id(rec[0]), rec[2], rec[1], rec[0])
        q.corr, q.kind, q.keep = rec[7], w.KIND_CLIENT, True
        reqs = self._requests.get(q.corr) if type(q.corr) in _KEYS else None
        parent = frame if frame is not None else (reqs[-1] if reqs else None)
        if parent is not None:
            parent.keep = True
            q.parent, q.parent_span, q.trace = parent, parent.span_id, parent.trace
            q.depth = parent.depth + 1
        else:
            q.trace = _trace(q.corr)
        repo = str(data.get("repo") or "")
        system = repo.split(":", 1)[0]
        system = _DB_SYSTEMS.get(system, system) or "other_sql"
        text = self._cut(str(data.get("query")))
        q.name = self._cut(text.split(None, 1)[0].upper() if text.strip() else "query")
        q.site = w.field_bytes(w.SPAN_NAME, q.name.encode()) + w.SPAN_KIND + w.varint(w.KIND_CLIENT)
        q.site += w.attribute(w.SPAN_ATTRIBUTE, "db.query.text", text)
        q.site += w.attribute(w.SPAN_ATTRIBUTE, "db.system.name", self._cut(system))
        q.site += self._file_attr
        self._queries[self._query_key(rec, data.get("metadata"))] = q

    def _query_key(self, rec: tuple[Any, ...], meta: Any) -> Any:
        qid = meta.get("query_id") if type(meta) is dict else None
        return qid if qid is not None else (rec[5], rec[6])

    def _query_end(self, rec: tuple[Any, ...]) -> None:
        q = self._queries.pop(self._query_key(rec, rec[12].get("result")), None)
        if q is None:
            return
        result = rec[12].get("result")
        if type(result) is dict and result.get("error") is not None:
            self._exception(q, rec[2], result.get("error"))
        self._emit(q, rec[2])

    # -- span content ------------------------------------------------------------------

    def _cut(self, text: str) -> str:
        limit = self.limits.max_attribute_length
        if len(text) * 4 <= limit:
            return text
        raw = text.encode("utf-8", "replace")
        if len(raw) <= limit:
            return text
        return raw[:limit].decode("utf-8", "ignore")

    def _event(
        self, frame: _Frame, wall: int, name: str, values: dict[str, Any], *, json: bool
    ) -> None:
        events = frame.events
        if events is None:
            events = frame.events = []
        if len(events) >= self.limits.max_events - 1:  # the last place: the summary
            frame.dropped += 1
            return
        attrs: list[tuple[str, Any]] = []
        for k, v in values.items():
            if len(attrs) >= MAX_EVENT_ATTRIBUTES:
                attrs.append(("tidescope.more_variables", len(values) - MAX_EVENT_ATTRIBUTES))
                break
            text = encode_line(v).decode() if json else v
            attrs.append((f"tidescope.variable.{k}" if json else str(k), self._value(text)))
        events.append(w.span_event(wall, name, attrs))

    def _value(self, v: Any) -> Any:
        return self._cut(v) if type(v) is str else v

    def _exception(self, frame: _Frame, wall: int, exc: Any, stack: Any = None) -> None:
        frame.keep = frame.error = True
        if type(exc) is dict:
            kind = str(exc.get("type") or exc.get("$object") or "Exception")
            args: Any = exc.get("args")
            if type(args) in (list, tuple):
                message = " ".join(str(a) for a in args)
            else:
                message = str(args or "")
        else:
            kind, message = (str(exc), "") if exc is not None else ("Exception", "")
        values = {"exception.type": kind, "exception.message": message}
        if type(stack) is list:  # [{file, line, function}, ...] innermost last
            values["exception.stacktrace"] = "".join(
                f'  File "{f.get("file")}", line {f.get("line")}, in {f.get("function")}\n'
                for f in stack
                if type(f) is dict
            )
        self._event(frame, wall, "exception", values, json=False)

    def _emit(self, frame: _Frame, end_wall: int, *, unfinished: bool = False) -> None:
        trace = frame.trace
        n = self._per_trace.get(trace, 0) + 1
        local_root = frame.parent is None
        # each open ancestor will be exported: the budget keeps a place for it, so a trace
        # over budget loses leaves, never the spans that join the rest up
        if n + frame.depth > self.limits.max_spans and not local_root:
            self.over_budget += 1
            self._over[trace] = self._over.get(trace, 0) + 1
            if frame.parent is not None:  # its counts live on in its parent's
                self._fold(frame, frame.parent, max(0, end_wall - frame.wall))
            return
        self._per_trace[trace] = n
        parts = [
            _TRACE_HEAD, trace, _SPAN_HEAD, frame.span_id,
            _PARENT_HEAD if frame.parent_span else b"", frame.parent_span,
            frame.site, _times(0x39, frame.wall, 0x41, end_wall),
            w.int_attribute(_EVENT_ID, frame.event_id),
        ]  # fmt: skip
        if frame.kind != w.KIND_INTERNAL:  # the last one wins in protobuf
            parts.append(w.SPAN_KIND + w.varint(frame.kind))
        if frame.attrs:
            parts += frame.attrs
        if frame.folded:
            parts.append(self._folded(frame.folded))
        if unfinished:
            parts.append(w.attribute(w.SPAN_ATTRIBUTE, "tidescope.unfinished", True))
        if local_root:
            over = self._over.pop(trace, 0)
            self._per_trace.pop(trace, None)
            if over:
                parts.append(w.attribute(w.SPAN_ATTRIBUTE, "tidescope.spans_over_budget", over))
        if frame.events:
            parts += frame.events
        if frame.dropped:
            parts.append(
                w.span_event(
                    end_wall,
                    "tidescope.events_dropped",
                    [("tidescope.dropped_events", frame.dropped)],
                )
            )
            parts.append(w.SPAN_DROPPED_EVENTS + w.varint(frame.dropped))
        if frame.link:
            parts.append(frame.link)
        if frame.error:
            parts.append(w.STATUS_ERROR)
        self.spans.append(b"".join(parts))

    def _folded(self, folded: dict[str, list[int]]) -> bytes:
        if len(folded) == 1:  # most spans: one function folded
            top = list(folded.items())
        else:
            top = sorted(folded.items(), key=lambda kv: -kv[1][1])[:MAX_FOLDED_FUNCTIONS]
        names = tuple([k for k, _ in top])
        functions = self._functions.get(names)
        if functions is None:  # a span's list of names is most often the last one's
            if len(self._functions) >= 1024:
                self._functions.clear()
            functions = self._functions[names] = w.attribute(
                w.SPAN_ATTRIBUTE, "tidescope.folded.functions", [self._cut(k) for k in names]
            )
        counts = [c for _, c in top]
        return (
            self._calls(sum([c[0] for c in folded.values()]))
            + functions
            + w.int_array_attribute(_FOLDED_COUNT, [c[0] for c in counts])
            + w.int_array_attribute(_FOLDED_TOTAL, [c[1] for c in counts])
            + w.int_array_attribute(_FOLDED_SELF, [c[2] for c in counts])
        )

    def _calls(self, n: int) -> bytes:
        if 0 <= n < 1 << 63:
            return w.int_attribute(_FOLDED_CALLS, n)
        return w.attribute(w.SPAN_ATTRIBUTE, "tidescope.folded.calls", n)

    def finish(self) -> None:
        """End the calls, requests and queries still open (the process was killed, or still
        runs) at the last time seen, marked ``tidescope.unfinished``; innermost first."""
        end = self._last_wall
        opened = [*self._queries.values(), *self._frames.values()]
        opened += [r for reqs in self._requests.values() for r in reqs]
        for frame in sorted(opened, key=lambda f: -f.start):
            self._emit(frame, max(end, frame.wall), unfinished=True)
        self._frames.clear()
        self._requests.clear()
        self._queries.clear()

    def take(self) -> list[bytes]:
        """The spans finished so far (and forget them)."""
        spans, self.spans = self.spans, []
        return spans


_TRACE_CACHE: dict[Any, bytes] = {}


def _trace(corr: Any) -> bytes:
    """The trace id (16 bytes) of a correlation, as the propagation gives it."""
    if type(corr) in (int, str) and corr is not None:
        t = _TRACE_CACHE.get(corr)
        if t is None:
            if len(_TRACE_CACHE) > 4096:
                _TRACE_CACHE.clear()
            t = _TRACE_CACHE[corr] = bytes.fromhex(trace_id_for(corr))
        return t
    try:  # a UUID, or a value as the trace holds it (a marker, a tuple): by its text
        key = corr if corr is None or type(corr) is uuid.UUID else str(corr)
    except Exception:
        key = None
    return bytes.fromhex(trace_id_for(key))
