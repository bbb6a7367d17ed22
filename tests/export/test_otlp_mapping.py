"""The OTLP mapping in-process: captured events fed to SpanBuilder, each span decoded with
OpenTelemetry's own ``Span`` message."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span

import tidescope
from otlp_receiver import attrs
from tidescope.capture import _core, runtime
from tidescope.events import ENVELOPE_FIELDS
from tidescope.export import _otlp_wire as w
from tidescope.export.otlp import OtlpLimits, SpanBuilder

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def spans_of(cap: tidescope.Capture, **limits: Any) -> list[Any]:
    builder = SpanBuilder(OtlpLimits(**limits), "events-1.tstrace", {})
    builder.feed(tuple(getattr(e, f) for f in ENVELOPE_FIELDS) for e in cap.events())
    builder.finish()
    return [Span.FromString(b) for b in builder.take()]


def test_a_remote_call_is_a_client_span_with_its_event_and_the_header_s_span_id() -> None:
    with tidescope.capture() as cap:
        cid = runtime.report_function_entry("shop", "fetch", [])
        runtime.report_remote_call_send(None, "http://prices/x", TRACEPARENT, {"m": "GET"})
        runtime.report_function_exit(cid, None)
    (span,) = spans_of(cap)  # shorter than 1 ms, but it talked to another service
    assert span.kind == Span.SPAN_KIND_CLIENT
    assert span.span_id == cid.to_bytes(8, "big")  # what an outgoing traceparent carries
    (event,) = span.events
    assert event.name == "remote_call_send"
    assert attrs(event)["target"] == "http://prices/x"


def test_calls_still_open_at_the_end_are_unfinished_spans_innermost_first() -> None:
    with tidescope.capture() as cap:
        outer = runtime.report_function_entry("job", "run", [])
        inner = runtime.report_function_entry("job", "step", [])
        runtime.report_error(RuntimeError("stuck"))
    inner_span, outer_span = spans_of(cap)
    assert (inner_span.name, outer_span.name) == ("job.step", "job.run")
    assert inner_span.parent_span_id == outer_span.span_id == outer.to_bytes(8, "big")
    assert attrs(inner_span)["tidescope.unfinished"] is True
    (exc,) = inner_span.events
    assert attrs(exc)["exception.type"] == "builtins.RuntimeError"
    assert "stacktrace" not in attrs(exc) or attrs(exc)["exception.stacktrace"] is not None
    assert inner == int.from_bytes(inner_span.span_id, "big")


def test_a_call_under_another_correlation_starts_a_trace_linked_to_its_caller() -> None:
    with tidescope.capture() as cap:
        outer = runtime.report_function_entry("svc", "dispatch", [])
        token = _core.bind_correlation("0af7651916cd43dd8448eb211c80319c")
        inner = runtime.report_function_entry("svc", "handle", [])
        runtime.report_function_exit(inner, None)
        _core.restore_context(token)
        runtime.report_function_exit(outer, None)
    inner_span, outer_span = spans_of(cap, threshold_ns=0)
    assert inner_span.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert inner_span.trace_id != outer_span.trace_id
    assert inner_span.parent_span_id == b""
    (link,) = inner_span.links
    assert (link.trace_id, link.span_id) == (outer_span.trace_id, outer_span.span_id)


def test_the_budget_keeps_the_ancestors_and_counts_the_rest_on_the_root() -> None:
    with tidescope.capture(buffer_size=4096) as cap:
        root = runtime.report_function_entry("app", "main", [])
        for _ in range(3):
            mid = runtime.report_function_entry("app", "batch", [])
            for _ in range(5):
                leaf = runtime.report_function_entry("app", "item", [])
                runtime.report_function_exit(leaf, None)
            runtime.report_function_exit(mid, None)
        runtime.report_function_exit(root, None)
    spans = spans_of(cap, threshold_ns=0, max_spans=6)
    ids = {s.span_id for s in spans}
    # the first batch's items fill the budget but for the places of their two ancestors
    assert [s.name for s in spans] == ["app.item"] * 4 + ["app.batch", "app.main"]
    assert all(not s.parent_span_id or s.parent_span_id in ids for s in spans)  # no orphans
    main = spans[-1]
    over = attrs(main)["tidescope.spans_over_budget"]
    assert over == 1 + 3 + 15 - 6
    # and every call over budget is counted on its parent instead
    assert sum(attrs(s).get("tidescope.folded.calls", 0) for s in spans) == over
    assert dict(
        zip(
            attrs(main)["tidescope.folded.functions"],
            attrs(main)["tidescope.folded.count"],
            strict=True,
        )
    ) == {"app.batch": 2, "app.item": 10}


def test_runs_of_short_calls_fold_into_the_caller_that_made_them() -> None:
    """Short calls of one function in a row (feed's fast path), broken by another function,
    a call that raised, and a caller of their own: each counted on its own caller."""
    with tidescope.capture() as cap:
        root = runtime.report_function_entry("app", "main", [])
        for name in ["a", "a", "b", "a", "boom", "a", "mid", "a"]:
            cid = runtime.report_function_entry("app", name, [])
            if name == "mid":
                for _ in range(3):
                    inner = runtime.report_function_entry("app", "a", [])
                    runtime.report_function_exit(inner, None)
            if name == "boom":
                runtime.report_function_exit(cid, ValueError("x"), exit_reason="exception")
            else:
                runtime.report_function_exit(cid, None)
        runtime.report_function_exit(root, None)
    boom, main = spans_of(cap)
    assert (boom.name, main.name) == ("app.boom", "app.main")
    a = attrs(main)
    folded = dict(zip(a["tidescope.folded.functions"], a["tidescope.folded.count"], strict=True))
    assert folded == {"app.a": 5 + 3, "app.b": 1, "app.mid": 1}
    assert a["tidescope.folded.calls"] == 10
    exits = {
        e.call_id: e.data["duration_ns"]
        for e in cap.events()
        if e.event_type == "function_exit" and e.parent_id == root
    }
    entries = {
        e.call_id: e.data["function"]
        for e in cap.events()
        if e.event_type == "function_entry" and e.call_id in exits
    }
    total = dict(zip(a["tidescope.folded.functions"], a["tidescope.folded.total_ns"], strict=True))
    own_a = sum(d for c, d in exits.items() if entries[c] == "a")
    assert total["app.b"] == sum(d for c, d in exits.items() if entries[c] == "b")
    assert total["app.a"] > own_a  # and the three inside mid


ints = st.sampled_from([0, 1, 127, 128, 2**40, 2**63 - 1, 2**63, -5, -(2**63), -(2**63) - 1])


@given(
    st.dictionaries(
        st.text(max_size=12), st.lists(ints | st.integers(), min_size=3, max_size=3), max_size=40
    ).filter(bool)
)
@settings(max_examples=300)
def test_the_folded_counters_are_encoded_as_attribute_encodes_them(
    folded: dict[str, list[int]],
) -> None:
    """_folded's shortcuts (cached names, int arrays by hand) write attribute()'s bytes."""
    builder = SpanBuilder(OtlpLimits(max_attribute_length=8), "events-1.tstrace", {})
    top = sorted(folded.items(), key=lambda kv: -kv[1][1])[:32]
    a, t = w.attribute, w.SPAN_ATTRIBUTE
    want = (
        a(t, "tidescope.folded.calls", sum(c[0] for c in folded.values()))
        + a(t, "tidescope.folded.functions", [builder._cut(k) for k, _ in top])
        + a(t, "tidescope.folded.count", [c[0] for _, c in top])
        + a(t, "tidescope.folded.total_ns", [c[1] for _, c in top])
        + a(t, "tidescope.folded.self_ns", [c[2] for _, c in top])
    )
    assert builder._folded(folded) == want
    assert builder._folded(folded) == want  # the names' attribute from the cache
