"""The Perfetto export, decoded with Perfetto's own published protobuf definitions."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import tidescope
from tidescope.capture import runtime
from tidescope.export import perfetto
from tidescope.export._runs import run_directory
from tidescope.export.drain import Drain

pb = pytest.importorskip("perfetto.protos.perfetto.trace.perfetto_trace_pb2")

BEGIN, END, INSTANT = 1, 2, 3
CLEARED, NEEDS = 1, 2


@dataclass
class Slice:
    name: str
    track: int
    ts: int
    args: dict[str, Any]
    end: int | None = None
    end_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decoded:
    """What a Perfetto trace says, checked as trace_processor would need it to be."""

    tracks: dict[int, Any] = field(default_factory=dict)  # uuid -> TrackDescriptor
    slices: list[Slice] = field(default_factory=list)
    instants: list[Slice] = field(default_factory=list)
    flows: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))

    def track_name(self, uuid: int) -> str:
        desc = self.tracks[uuid]
        return str(desc.thread.thread_name if desc.HasField("thread") else desc.name)

    def named(self, name: str) -> list[Slice]:
        return [s for s in self.slices if s.name == name]


def annotation_value(a: Any, strings: dict[int, str]) -> Any:
    kind = a.WhichOneof("value")
    if kind == "string_value_iid":
        return strings[a.string_value_iid]
    if kind is not None:
        return getattr(a, kind)
    if a.dict_entries:
        return {e.name: annotation_value(e, strings) for e in a.dict_entries}
    return [annotation_value(e, strings) for e in a.array_values]


def decode(data: bytes) -> Decoded:
    """Decode ``data`` and check it: tracks described before use, once; interned ids known
    on their sequence; slices nested per track (an END always has its BEGIN)."""
    trace = pb.Trace()
    trace.ParseFromString(data)
    out = Decoded()
    seen_sequences: set[int] = set()
    interned: dict[int, dict[str, dict[int, str]]] = {}
    stacks: dict[int, list[Slice]] = defaultdict(list)
    last_ts: dict[int, int] = defaultdict(int)
    for packet in trace.packet:
        seq = packet.trusted_packet_sequence_id
        assert seq, "every packet is on a sequence"
        if seq not in seen_sequences:
            assert packet.sequence_flags & CLEARED, "a sequence starts by clearing its state"
            seen_sequences.add(seq)
            interned[seq] = {"names": {}, "annotations": {}, "strings": {}}
        state = interned[seq]
        if packet.HasField("interned_data"):
            for e in packet.interned_data.event_names:
                assert e.iid not in state["names"]
                state["names"][e.iid] = e.name
            for e in packet.interned_data.debug_annotation_names:
                assert e.iid not in state["annotations"]
                state["annotations"][e.iid] = e.name
            for e in packet.interned_data.debug_annotation_string_values:
                state["strings"][e.iid] = e.str.decode()
        if packet.HasField("track_descriptor"):
            desc = packet.track_descriptor
            assert desc.uuid not in out.tracks, "each track described once"
            if desc.HasField("parent_uuid"):
                assert desc.parent_uuid in out.tracks, "a parent is described first"
            out.tracks[desc.uuid] = desc
            continue
        if not packet.HasField("track_event"):
            continue
        assert packet.sequence_flags & NEEDS
        te = packet.track_event
        track = te.track_uuid
        assert track in out.tracks, "every track used is described"
        assert packet.timestamp >= last_ts[track], "times never go back on a track"
        last_ts[track] = packet.timestamp
        args = {}
        for a in te.debug_annotations:
            args[state["annotations"][a.name_iid]] = annotation_value(a, state["strings"])
        if te.type == BEGIN:
            s = Slice(state["names"][te.name_iid], track, packet.timestamp, args)
            stacks[track].append(s)
            out.slices.append(s)
            for fid in te.flow_ids:
                out.flows[fid].append(s.name)
        elif te.type == END:
            assert stacks[track], "an END always has its BEGIN on its track"
            s = stacks[track].pop()
            s.end, s.end_args = packet.timestamp, args
            for fid in te.flow_ids:  # trace_processor joins the slice the END ends
                out.flows[fid].append(s.name)
        else:
            assert te.type == INSTANT
            s = Slice(state["names"][te.name_iid], track, packet.timestamp, args)
            out.instants.append(s)
            for fid in te.flow_ids:
                out.flows[fid].append(s.name)
    assert not any(stacks.values()), "every slice ends"
    return out


def export(records: list[dict[str, Any]]) -> Decoded:
    blocks: list[bytes] = []
    perfetto.write_records(records, lambda b: blocks.append(bytes(b)))
    return decode(b"".join(blocks))


PROGRAM = """
import asyncio, threading

def gen(n):
    for i in range(n):
        yield i * 2

def boom(x):
    raise ValueError(f"bad {x}")

def work(k):
    total = sum(gen(k))
    try:
        boom(total)
    except ValueError:
        pass
    return {"k": k, "total": total}

async def job(n):
    await asyncio.sleep(0)
    return work(n)

async def amain():
    return await asyncio.gather(job(2), job(3))

def main():
    t = threading.Thread(target=work, args=(4,))
    t.start()
    t.join()
    a, b = gen(2), gen(3)
    print(list(zip(a, b)))   # a ends while b is open above it: slices interleave
    print(asyncio.run(amain()))

main()
"""


def test_a_recorded_program_exports_tracks_slices_and_annotations(tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(textwrap.dedent(PROGRAM))
    subprocess.run(
        [sys.executable, "-m", "tidescope", "run", "-o", "tr", "prog.py"],
        cwd=tmp_path, capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "tidescope", "export", "tr", "--format", "perfetto"],
        cwd=tmp_path, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    out = run_directory(tmp_path / "tr") / "trace.perfetto-trace"  # in the run's directory
    assert "records ->" in done.stderr and str(out.relative_to(tmp_path)) in done.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    trace = decode(out.read_bytes())

    procs = [d for d in trace.tracks.values() if d.HasField("process")]
    assert len(procs) == 1 and procs[0].process.process_name == "prog.py"
    threads = {u: d for u, d in trace.tracks.items() if d.HasField("thread")}
    assert len(threads) == 2 and all(d.parent_uuid == procs[0].uuid for d in threads.values())
    names = sorted(d.thread.thread_name for d in threads.values())
    assert names[0] == "MainThread" and names[1].startswith("Thread-1")  # "Thread-1 (work)"
    tasks = {u: d for u, d in trace.tracks.items() if d.name.startswith("Task-")}
    assert len(tasks) == 3  # asyncio.run's main task and the two jobs
    assert all(d.parent_uuid in threads for d in tasks.values())

    works = trace.named("__main__.work")
    assert sorted(s.args["args"]["k"] for s in works) == [2, 3, 4]
    # at level calls a returned dict is recorded by reference (the "ref" value policy)
    refs = [s.end_args["return_value"] for s in works]
    assert {(r["$ref"], r["len"]) for r in refs} == {("dict", 2)}
    assert all(type(r["id"]) is int for r in refs)
    assert {trace.track_name(s.track).split("-")[0] for s in works} == {"Thread", "Task"}
    assert all(s.args["ast_node_id"].startswith("__main__:work:") for s in works)
    booms = trace.named("__main__.boom")
    assert len(booms) == 3
    assert all(s.end_args["exception"]["type"] == "builtins.ValueError" for s in booms)
    assert all(s.end_args["exit_reason"] == "exception" for s in booms)
    assert {s.end_args["exception"]["args"][0] for s in booms} == {"bad 12", "bad 2", "bad 6"}
    # the zip: each generator's stretches are slices of their own, one call id each
    main = trace.named("__main__.main")[0]
    gens = [s for s in trace.named("__main__.gen") if s.track == main.track]
    (first,) = [s for s in gens if s.args.get("args") == {"n": 3}]
    zipped = [s for s in gens if s.args["call_id"] == first.args["call_id"]]
    assert zipped[0].end_args == {"suspended": True} and all(s.args["resumed"] for s in zipped[1:])
    assert len({s.args["call_id"] for s in zipped}) == 1
    last = zipped[-1]  # it outlives main: closed when a, b are collected
    assert last.end_args["exit_reason"] == "cancelled"
    assert last.ts >= main.end
    assert [s.name for s in trace.slices if s.track in tasks][:1] == ["__main__.amain"]


def test_slices_nest_when_entries_are_dropped_and_calls_interleave() -> None:
    def ev(etype: str, call: int, parent: int | None, ts: int, **kw: Any) -> dict[str, Any]:
        data = kw.pop("data", None) or (
            {"module": "m", "function": f"f{call}", "args": {}}
            if etype == "function_entry"
            else {"return_value": call, "exception": None, "exit_reason": "normal"}
        )
        rec = {"pid": 7, "thread_id": 1, "task_id": None, "call_id": call, "parent_id": parent}
        return {**rec, "timestamp": ts, "ast_node_id": None, "event_type": etype, "data": data,
                **kw}  # fmt: skip

    records = [
        {"$header": {"pid": 7, "argv": ["app.py", "x"]}},
        ev("function_exit", 99, None, 5),  # its entry was dropped
        ev("function_entry", 1, None, 10),
        ev("function_entry", 2, 1, 20),  # a generator started by 1
        ev("function_entry", 3, 1, 30),  # another, above it
        ev("function_entry", 4, 3, 40),  # a call of 3 (a generator, as it turns out)
        ev("function_exit", 2, 1, 50),  # 2 ends under 3 and 4
        ev("function_exit", 3, 1, 60),  # 3 goes on after 2, then ends
        ev("function_exit", 4, 3, 65),  # after 3's, where its slice ended: an instant
        ev("function_entry", 5, 1, 70),
        ev("function_exit", 5, 1, 60, thread_id=2),  # ends on another thread, earlier clock
        ev("function_entry", 6, 1, 80),  # never exits
        ev("function_exit", 1, None, 90),
        ev("function_entry", 7, None, 95, task_id=3),  # never exits
        ev("function_entry", 8, 7, 96, task_id=3),  # nor this
    ]
    trace = export(records)
    lost = {"exit_reason": "not recorded"}
    cut = {"suspended": True}
    got = [(s.name, s.ts, s.end, s.end_args, bool(s.args.get("resumed"))) for s in trace.slices]
    assert sorted(got, key=lambda g: (g[0], g[1])) == [
        ("m.f1", 10, 90, {"return_value": 1}, False),
        ("m.f2", 20, 30, cut, False),  # 3 starts under 1: 2 had yielded
        ("m.f2", 50, 50, {"return_value": 2}, True),  # back to end, under its caller 1
        ("m.f3", 30, 50, cut, False),
        ("m.f3", 60, 60, {"return_value": 3}, True),
        ("m.f4", 40, 50, cut, False),
        ("m.f4", 65, 65, {"return_value": 4}, True),  # its caller 3 has ended: on top
        ("m.f5", 70, 70, {"return_value": 5}, False),  # on its own track, never before its start
        ("m.f6", 80, 90, cut, False),  # 1 ends: whatever is above it has stopped running
        ("m.f7", 95, 96, lost, False),  # the trace ended
        ("m.f8", 96, 96, lost, False),
    ]
    by_name = {s.name: s for s in trace.slices}
    assert trace.track_name(by_name["m.f7"].track) == "task 3"
    (orphan,) = trace.instants
    assert (orphan.name, orphan.ts, orphan.args["call_id"]) == ("function_exit", 5, 99)
    assert orphan.args["entry"] == "not recorded" and orphan.args["return_value"] == 99
    (proc,) = [d for d in trace.tracks.values() if d.HasField("process")]
    assert list(proc.process.cmdline) == ["app.py", "x"] and proc.process.pid == 7


def test_domain_events_are_instants_with_their_data_and_flows_join_pairs(tmp_path: Path) -> None:
    session = tidescope.start(buffer_size=4096)
    drain = Drain(tmp_path, interval=60)
    outer = runtime.report_function_entry("app", "outer", ("x",))
    runtime.report_message_send("queue", {"job": 1})
    runtime.report_error(KeyError("k"))
    header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    runtime.report_remote_call_send(None, "http://b", header, None)

    def server() -> None:
        runtime.report_remote_call_receive(None, "a", header, None)

    worker = threading.Thread(target=server)
    worker.start()
    worker.join()
    runtime.report_function_exit(outer, "ok")
    drain.stop(session.stop())
    buf = io.BytesIO()
    n = perfetto.write_perfetto(tmp_path, buf)
    assert n == 6
    trace = decode(buf.getvalue())
    kinds = [s.name for s in trace.instants]
    assert kinds == ["message_send", "error", "remote_call_send", "remote_call_receive"]
    send, error, call, received = trace.instants
    assert send.args["message"] == {"job": 1} and send.args["to"] == "queue"
    assert "KeyError" in str(error.args)
    assert call.track != received.track
    assert sorted(trace.flows.values()) == [
        ["message_send"],
        ["remote_call_send", "remote_call_receive"],
    ]
    (outer_slice,) = trace.slices
    assert outer_slice.args["args"] == ["x"] and outer_slice.end_args["return_value"] == "ok"
    assert all(outer_slice.ts <= s.ts <= (outer_slice.end or 0) for s in trace.instants[:3])


def test_annotations_are_bounded_and_odd_values_encode() -> None:
    deep: Any = "bottom"
    for _ in range(20):
        deep = [deep]
    value = {
        "long": "x" * 5000, "many": list(range(500)), "deep": deep, "big": 10**30,
        "neg": -5, "empty": {}, "none": [], "surrogate": "\ud800", 7: "int key",
    }  # fmt: skip
    rec = {
        "pid": 1, "thread_id": 1, "task_id": None, "call_id": 1, "parent_id": None,
        "timestamp": 1, "ast_node_id": None, "event_type": "generic", "data": value,
    }  # fmt: skip
    (inst,) = export([rec]).instants
    args = inst.args
    assert len(args["long"]) < 1100 and args["long"].endswith("(5000 chars)")
    assert len(args["many"]) == perfetto.MAX_ITEMS + 1 and args["many"][-1] == "... 436 more"
    depth = 0
    node = args["deep"]
    while isinstance(node, list):
        node, depth = node[0], depth + 1
    assert depth == perfetto.MAX_DEPTH and node == "[... 1 items]"
    assert args["big"] == str(10**30) and args["neg"] == -5
    assert args["empty"] == "{}" and args["none"] == "[]"
    assert args["surrogate"] == "\\ud800" and args["7"] == "int key"


def test_output_replaces_a_planted_symlink_and_never_writes_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "out.perfetto-trace").symlink_to(victim)
    rec = {
        "pid": 1, "thread_id": 1, "task_id": None, "call_id": 1, "parent_id": None,
        "timestamp": 1, "ast_node_id": None, "event_type": "generic", "data": {},
    }  # fmt: skip
    n, path = perfetto.write_file([rec], tmp_path / "out.perfetto-trace")
    assert n == 1 and not path.is_symlink() and victim.read_text() == "keep"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(decode(path.read_bytes()).instants) == 1
    assert sorted(os.listdir(tmp_path)) == ["out.perfetto-trace", "victim"]


def test_a_recording_that_dropped_events_still_exports_a_valid_trace(tmp_path: Path) -> None:
    # a full drop_newest ring rejects the innermost entries; their exits come after a pass
    session = tidescope.start(buffer_size=16, overflow_strategy="drop_newest")
    drain = Drain(tmp_path / "tr", interval=60)  # not started: pump() writes
    calls = [runtime.report_function_entry("app", f"f{i}", (i,)) for i in range(24)]
    assert session.buffer.stats()["dropped_events"] == 8
    drain.pump()
    for i, cid in reversed(list(enumerate(calls))):
        runtime.report_function_exit(cid, i)
    drain.stop(session.stop())
    buf = io.BytesIO()
    n = perfetto.write_perfetto(tmp_path / "tr", buf)
    trace = decode(buf.getvalue())  # whatever was lost, every END has its BEGIN
    assert n > 0 and trace.slices
    # exits of calls whose entries the full ring rejected
    assert sum(s.args.get("entry") == "not recorded" for s in trace.instants) == 8


def test_a_failed_export_leaves_the_old_output_and_no_temporary_file(tmp_path: Path) -> None:
    from tidescope.export.reader import TraceError

    (tmp_path / "out.perfetto-trace").write_bytes(b"old")

    def records() -> Any:
        yield {
            "pid": 1, "thread_id": 1, "task_id": None, "call_id": 1, "parent_id": None,
            "timestamp": 1, "ast_node_id": None, "event_type": "generic", "data": {},
        }  # fmt: skip
        raise TraceError("events-1.jsonl: cannot read")

    with pytest.raises(TraceError):
        perfetto.write_file(records(), tmp_path / "out.perfetto-trace")
    assert os.listdir(tmp_path) == ["out.perfetto-trace"]
    assert (tmp_path / "out.perfetto-trace").read_bytes() == b"old"
