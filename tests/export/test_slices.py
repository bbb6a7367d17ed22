"""Perfetto and Chrome exports of interleaved generators, coroutines, tasks and threads:
slices nest on every track, stretches of one call are linked, tracks are named."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from test_perfetto import Decoded, decode  # the protobuf decoder (Perfetto's own protos)

from tidescope.export._runs import run_directory

PROGRAM = """
import asyncio, threading

def leaf(x):
    return x

def gen(n):
    for i in range(n):
        leaf(i)
        yield i

def crossing():
    a, b = gen(3), gen(3)
    next(a)
    next(b)          # b starts while a is suspended
    next(a)
    rest_b = list(b)  # b ends while a lives on: their lifetimes cross
    return list(a), rest_b

async def agen(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield leaf(i)

async def consume():
    out = []
    async for v in agen(3):
        out.append(leaf(100 + v))  # the caller's calls between the generator's steps
    return out

async def coro(k):
    await asyncio.sleep(0)
    return leaf(k)

async def amain():
    t = asyncio.create_task(consume(), name="consumer")
    return await asyncio.gather(coro(1), coro(2), t)

def work(k):
    return leaf(k)

def main():
    print(list(zip(gen(2), gen(3))))
    crossing()
    asyncio.run(amain())
    idents = []
    for i in range(3):
        t = threading.Thread(target=work, args=(i,), name=f"worker-{i}")
        t.start()
        t.join()  # ended before the next starts: the OS may give the next its ident
        idents.append(t.ident)
    print("idents", len(set(idents)))

main()
"""

Interval = tuple[float, float, str]


def assert_nested(tracks: dict[Any, list[Interval]]) -> None:
    """Every slice on a track either nests within or is disjoint from every other."""
    for track, slices in tracks.items():
        ordered = sorted(slices, key=lambda s: (s[0], -s[1]))
        open_: list[Interval] = []
        for s in ordered:
            while open_ and open_[-1][1] <= s[0] and not (open_[-1][1] == s[0] == s[1]):
                open_.pop()
            if open_:
                assert s[1] <= open_[-1][1], f"{s} overlaps {open_[-1]} on track {track}"
            open_.append(s)


def within(inner: Interval, outer: Interval) -> bool:
    return outer[0] <= inner[0] and inner[1] <= outer[1] and inner[1] > outer[0]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("slices")
    (tmp / "prog.py").write_text(textwrap.dedent(PROGRAM))
    run = subprocess.run(
        [sys.executable, "-m", "tidescope", "run", "-o", "tr", "prog.py"],
        cwd=tmp, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert "idents" in run.stdout
    for fmt in ("perfetto", "chrome"):
        subprocess.run(
            [sys.executable, "-m", "tidescope", "export", "tr", "--format", fmt],
            cwd=tmp, capture_output=True, check=True, timeout=120,
        )  # fmt: skip
    return tmp


def perfetto_trace(recorded: Path) -> Decoded:
    return decode((run_directory(recorded / "tr") / "trace.perfetto-trace").read_bytes())


def chrome_trace(recorded: Path) -> list[dict[str, Any]]:
    data = json.loads((run_directory(recorded / "tr") / "trace.chrome.json").read_text())
    events: list[dict[str, Any]] = data["traceEvents"]
    return events


def by_track(items: Iterable[tuple[Any, Interval]]) -> dict[Any, list[Interval]]:
    out: dict[Any, list[Interval]] = defaultdict(list)
    for track, s in items:
        out[track].append(s)
    return out


def test_perfetto_slices_nest_and_each_stretch_of_a_generator_is_its_own_slice(
    recorded: Path,
) -> None:
    trace = perfetto_trace(recorded)  # BEGIN/END balanced per track, times never go back
    assert all(s.end is not None for s in trace.slices)
    tracks = by_track((s.track, (s.ts, s.end or 0, s.name)) for s in trace.slices)
    assert_nested(tracks)
    stretches: dict[Any, list[Any]] = defaultdict(list)
    for s in trace.slices:
        stretches[s.args["call_id"]].append(s)
    gens = [v for v in stretches.values() if v[0].name == "__main__.gen"]
    assert len(gens) == 4
    for parts in gens:
        assert len(parts) > 1  # zip and crossing() interleave every generator
        first, *rest = parts
        assert first.end_args.get("suspended") is True and not first.args.get("resumed")
        assert all(p.args.get("resumed") for p in rest)
        assert rest[-1].end_args.get("exit_reason") in (None, "cancelled")
        assert len({p.track for p in parts}) == 1
    # the stretches of one call are joined by one flow (first END, then each BEGIN)
    linked = [names for names in trace.flows.values() if "__main__.gen" in names]
    assert sorted(map(len, linked)) == sorted(map(len, gens))


def test_an_async_generator_does_not_swallow_its_callers_calls(recorded: Path) -> None:
    trace = perfetto_trace(recorded)
    (consumer,) = [u for u in trace.tracks if trace.track_name(u) == "consumer"]
    on_it = [s for s in trace.slices if s.track == consumer]
    agens = [(s.ts, s.end or 0, s.name) for s in on_it if s.name == "__main__.agen"]
    callers = [
        (s.ts, s.end or 0, s.name)
        for s in on_it
        if s.name == "__main__.leaf" and s.args["args"]["x"] >= 100
    ]
    assert len(callers) == 3 and len(agens) >= 3
    assert not any(within(c, a) for c in callers for a in agens)
    # and the generator's own calls are inside its stretches
    own = [(s.ts, s.end or 0, s.name) for s in on_it if s.name == "__main__.leaf"]
    own = [s for s in own if s not in callers]
    assert own and all(any(within(o, a) for a in agens) for o in own)


def test_perfetto_tracks_are_named_by_thread_and_task_names_one_per_thread(
    recorded: Path,
) -> None:
    trace = perfetto_trace(recorded)
    threads = [d for d in trace.tracks.values() if d.HasField("thread")]
    names = sorted(d.thread.thread_name for d in threads)
    assert names == ["MainThread", "worker-0", "worker-1", "worker-2"]
    assert len({d.thread.tid for d in threads}) == 4  # OS thread ids, even for a reused ident
    tasks = sorted(d.name for d in trace.tracks.values() if d.HasField("parent_uuid") and d.name)
    assert "consumer" in tasks and "Task-1" in tasks
    works = [s for s in trace.slices if s.name == "__main__.work"]
    assert sorted(trace.track_name(s.track) for s in works) == ["worker-0", "worker-1", "worker-2"]


def test_chrome_slices_nest_per_track_with_named_tracks(recorded: Path) -> None:
    events = chrome_trace(recorded)
    complete = [e for e in events if e["ph"] == "X"]
    assert not [e for e in events if e["ph"] in ("B", "E")]  # every call exited
    tracks = by_track(
        ((e["pid"], e["tid"]), (e["ts"], e["ts"] + e["dur"], e["name"])) for e in complete
    )
    assert_nested(tracks)
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M"}
    assert sorted(n for n in names.values() if n.startswith(("worker", "Main"))) == [
        "MainThread", "worker-0", "worker-1", "worker-2",
    ]  # fmt: skip
    gens: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for e in complete:
        if e["name"] == "__main__.gen":
            gens[e["args"]["call_id"]].append(e)
    assert len(gens) == 4 and all(len(v) > 1 for v in gens.values())  # one call id shared
    consumer = next(t for t, n in names.items() if n == "consumer")
    agens = [e for e in complete if e["tid"] == consumer and e["name"] == "__main__.agen"]
    callers = [
        e for e in complete
        if e["tid"] == consumer and e["name"] == "__main__.leaf" and e["args"]["args"]["x"] >= 100
    ]  # fmt: skip
    assert len(callers) == 3
    for c in callers:
        ci = (c["ts"], c["ts"] + c["dur"], "")
        assert not any(within(ci, (a["ts"], a["ts"] + a["dur"], "")) for a in agens)


def test_the_validator_catches_an_overlap() -> None:
    with pytest.raises(AssertionError, match="overlaps"):
        assert_nested({1: [(0, 10, "a"), (5, 15, "b")]})
    assert_nested({1: [(0, 10, "a"), (2, 4, "b"), (4, 10, "c"), (10, 12, "d")]})


def test_a_reused_ident_gets_a_track_per_thread_in_both_exports() -> None:
    from tidescope.export import chrome, perfetto

    def ev(call: int, ts: int, etype: str = "function_entry") -> dict[str, Any]:
        data = (
            {"module": "m", "function": f"f{call}", "args": {}}
            if etype == "function_entry"
            else {"return_value": None, "exception": None, "exit_reason": "normal"}
        )
        envelope = {"pid": 7, "thread_id": 5, "task_id": None, "call_id": call}
        return {**envelope, "parent_id": None, "timestamp": ts, "ast_node_id": None,
                "event_type": etype, "data": data}  # fmt: skip

    def note(name: str, native: int, ts: int) -> dict[str, Any]:
        return {"$note": {"kind": "thread", "pid": 7, "thread_id": 5, "native_id": native,
                          "name": name, "timestamp": ts}}  # fmt: skip

    # both notes come before both threads' events (one drain pass): times tell them apart
    records = [
        {"$header": {"pid": 7, "argv": ["app.py"]}},
        note("first", 101, 10), note("second", 102, 30),
        ev(1, 10), ev(1, 20, "function_exit"), ev(2, 30), ev(2, 40, "function_exit"),
    ]  # fmt: skip
    blocks: list[bytes] = []
    perfetto.write_records(records, lambda b: blocks.append(bytes(b)))
    trace = decode(b"".join(blocks))
    on = {s.name: trace.tracks[s.track].thread for s in trace.slices}
    assert (on["m.f1"].thread_name, on["m.f1"].tid) == ("first", 101)
    assert (on["m.f2"].thread_name, on["m.f2"].tid) == ("second", 102)
    events = list(chrome.chrome_events(records))
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M"}
    tids = {e["name"]: e["tid"] for e in events if e["ph"] == "X"}
    assert (names[tids["m.f1"]], names[tids["m.f2"]]) == ("first", "second")
