"""Process pools and processes under fork and spawn: the caller's correlation and call reach the
child, the child records into its own trace file, node up/down, remote send/receive join."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _proc_workers as workers
import pytest

import tidescope
from tidescope import EventType
from tidescope.capture import runtime as rt
from tidescope.export.reader import read_trace, trace_files
from tidescope.integrations._propagation import span_id_for, trace_id_for
from tidescope.integrations.process import TracedPool, TracedProcessPoolExecutor, traced_process

SEND = EventType.REMOTE_CALL_SEND
TIMEOUT = 120  # seconds: only so a broken pool fails the test instead of hanging it

from _errors import internal_errors  # noqa: E402

# Python 3.12+ warns when a process with threads forks (a thread holding a lock at the fork
# leaves it held in the child). The fork start method is the users' choice and what these
# tests exercise; threads left idle by other test modules (executors' workers) hold no lock
# the children use, so the warning says nothing about this integration here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"
)


@pytest.fixture(params=["fork", "spawn"])
def ctx(request: pytest.FixtureRequest) -> Any:
    return multiprocessing.get_context(request.param)


@pytest.fixture
def caller() -> Iterator[tuple[Any, Any]]:
    """A capture with a bound correlation and one open call: ``(capture, call_id)``."""
    with tidescope.capture(buffer_size=4096) as cap, rt.bind_correlation_id("order-7"):
        call = rt.report_function_entry("app", "checkout", [])
        yield cap, call
        rt.report_function_exit(call, None)


def child_records(directory: Path) -> dict[int, list[dict[str, Any]]]:
    """Each child trace file's events (no header or stats), by the child's pid."""
    out: dict[int, list[dict[str, Any]]] = {}
    for path in trace_files(directory):
        records = list(read_trace(path))
        if not records:
            continue  # a worker killed (Pool.terminate) before it wrote anything
        pid = records[0]["$header"]["pid"]
        assert pid != os.getpid()
        out[pid] = [r for r in records if "event_type" in r]
    return out


def of_type(records: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [r for r in records if r["event_type"] == event_type]


def check_task(
    records: list[dict[str, Any]], sends: list[Any], caller_call: Any
) -> list[dict[str, Any]]:
    """Assert every task run in ``records`` joins the caller; returns the ``run`` entries."""
    by_message = {s.data["metadata"]["message_id"]: s for s in sends}
    runs = [
        r
        for r in of_type(records, "function_entry")
        if r["data"]["module"] == "tidescope.integrations.process"
    ]
    receives = of_type(records, "remote_call_receive")
    assert len(runs) == len(receives)
    for receive, run in zip(receives, runs, strict=True):
        send = by_message[receive["data"]["metadata"]["message_id"]]
        assert receive["data"]["traceparent"] == send.data["traceparent"]
        assert receive["data"]["trace_id"] == trace_id_for("order-7")
        assert receive["data"]["span_id"] == span_id_for(caller_call)
        assert receive["data"]["metadata"]["function"] == send.data["metadata"]["function"]
        assert run["parent_id"] == caller_call
        assert run["correlation_id"] == "order-7"
        assert run["data"]["args"]["target"] == send.data["metadata"]["function"]
    return runs


def check_nodes(records: list[dict[str, Any]], pid: int, *, down: bool = True) -> None:
    nodes = [
        (r["data"]["event_type"], r["data"]["metadata"]["pid"])
        for r in of_type(records, "node_event")
    ]
    assert nodes == ([("up", pid), ("down", pid)] if down else [("up", pid)])
    up = of_type(records, "node_event")[0]
    assert up["data"]["metadata"]["parent_pid"] == os.getpid()
    assert up["data"]["node_name"] == up["node"]


def test_executor_tasks_carry_the_callers_correlation_and_call_into_the_child(
    ctx: Any, caller: tuple[Any, Any], tmp_path: Path
) -> None:
    cap, call = caller
    with TracedProcessPoolExecutor(
        2, mp_context=ctx, initializer=workers.remember, initargs=("init",), trace_dir=tmp_path
    ) as ex:
        seen = ex.submit(workers.context_here, "a").result(TIMEOUT)
        squares = list(ex.map(workers.square, range(5), timeout=TIMEOUT))
    assert squares == [0, 1, 4, 9, 16]
    assert seen["pid"] != os.getpid()
    assert seen["correlation"] == "order-7"
    assert seen["initialized"] == ["init"]  # the user's initializer still ran
    sends = cap.events(SEND)
    assert [s.data["target"] for s in sends] == ["ProcessPoolExecutor"] * 2
    assert all(s.call_id == call for s in sends)
    children = child_records(tmp_path)
    assert seen["pid"] in children
    runs = []
    for pid, records in children.items():
        check_nodes(records, pid)
        runs += check_task(records, sends, call)
        # every call the child recorded carries the caller's correlation (a worker may
        # have got no task at all)
        assert {r["correlation_id"] for r in records if r["event_type"] != "node_event"} <= {
            "order-7"
        }
    assert sorted(r["data"]["args"]["target"] for r in runs) == [
        "_proc_workers.context_here",
        *["_proc_workers.square"] * 5,
    ]
    assert {r["parent_id"] for r in runs} == {call}
    work = [
        r
        for records in children.values()
        for r in of_type(records, "function_entry")
        if r["data"]["module"] == "_proc_workers"
    ]
    run_ids = {r["call_id"] for r in runs}
    assert len(work) == 6 and all(w["parent_id"] in run_ids for w in work)
    assert internal_errors() == 0, cap.stats()["last_internal_error"]


def test_a_failing_task_raises_in_the_caller_and_is_recorded_in_the_child(
    ctx: Any, caller: tuple[Any, Any], tmp_path: Path
) -> None:
    with TracedProcessPoolExecutor(1, mp_context=ctx, trace_dir=tmp_path) as ex:
        future = ex.submit(workers.fail, "no stock")
        with pytest.raises(ValueError, match="no stock"):
            future.result(TIMEOUT)
    [records] = child_records(tmp_path).values()
    [exit_] = [
        r for r in of_type(records, "function_exit") if r["data"]["exit_reason"] == "exception"
    ]
    assert exit_["data"]["exception"]["type"] == "builtins.ValueError"
    assert exit_["data"]["exception"]["args"] == ["no stock"]
    assert exit_["correlation_id"] == "order-7"


def test_pool_methods_bind_their_callable_and_workers_leave_with_node_down(
    ctx: Any, caller: tuple[Any, Any], tmp_path: Path
) -> None:
    cap, call = caller
    pool = TracedPool(2, context=ctx, trace_dir=tmp_path)
    try:
        got = [
            pool.apply_async(workers.square, (3,)).get(TIMEOUT),
            pool.apply(workers.square, (4,)),
            pool.map(workers.square, [1, 2]),
            pool.map_async(workers.square, [5]).get(TIMEOUT),
            pool.starmap(workers.add, [(1, 2)]),
            pool.starmap_async(workers.add, [(3, 4)]).get(TIMEOUT),
            list(pool.imap(workers.square, [6])),
            list(pool.imap_unordered(workers.square, [7])),
        ]
    finally:
        pool.close()
        pool.join()
    assert got == [9, 16, [1, 4], [25], [3], [7], [36], [49]]
    sends = cap.events(SEND)
    assert len(sends) == 8 and {s.data["target"] for s in sends} == {"multiprocessing.Pool"}
    children = child_records(tmp_path)
    runs = []
    for pid, records in children.items():
        check_nodes(records, pid)
        runs += check_task(records, sends, call)
    assert len(runs) == 9  # one per item: map binds the callable, not the chunk
    assert sorted(r["data"]["args"]["target"] for r in runs) == sorted(
        ["_proc_workers.square"] * 7 + ["_proc_workers.add"] * 2
    )


def test_a_pool_closed_by_its_context_manager_keeps_every_finished_tasks_events(
    ctx: Any, caller: tuple[Any, Any], tmp_path: Path
) -> None:
    _cap, call = caller
    with TracedPool(2, context=ctx, trace_dir=tmp_path) as pool:  # exits with terminate()
        assert pool.map(workers.square, range(6)) == [0, 1, 4, 9, 16, 25]
    pool.join()
    results = sorted(
        r["data"]["return_value"]
        for records in child_records(tmp_path).values()
        for r in of_type(records, "function_exit")
        if r["parent_id"] == call
    )
    assert results == [0, 1, 4, 9, 16, 25]


def test_a_traced_process_runs_its_target_under_the_callers_correlation(
    ctx: Any, caller: tuple[Any, Any], tmp_path: Path
) -> None:
    _cap, call = caller
    process = traced_process(workers.context_here, ("solo",), context=ctx, trace_dir=tmp_path)
    process.start()
    process.join(TIMEOUT)
    assert process.exitcode == 0
    [(pid, records)] = child_records(tmp_path).items()
    assert pid == process.pid
    check_nodes(records, pid)
    [work] = [
        r for r in of_type(records, "function_entry") if r["data"]["module"] == "_proc_workers"
    ]
    assert work["correlation_id"] == "order-7"
    [run] = [r for r in of_type(records, "function_entry") if r["call_id"] == work["parent_id"]]
    assert run["parent_id"] == call


def test_with_capture_off_callables_go_unwrapped_and_nothing_is_written(
    ctx: Any, tmp_path: Path
) -> None:
    with TracedProcessPoolExecutor(1, mp_context=ctx, trace_dir=tmp_path) as ex:
        seen = ex.submit(workers.context_here, "off").result(TIMEOUT)
    assert seen["correlation"] is None and seen["call"] is None
    assert trace_files(tmp_path) == []


def test_an_unpicklable_correlation_reaches_the_child_as_its_trace_id(
    ctx: Any, tmp_path: Path
) -> None:
    lock = threading.Lock()  # cannot be pickled
    with (
        tidescope.capture(buffer_size=1024) as cap,
        rt.bind_correlation_id(lock),
        TracedProcessPoolExecutor(1, mp_context=ctx, trace_dir=tmp_path) as ex,
    ):
        seen = ex.submit(workers.context_here, "lock").result(TIMEOUT)
    [send] = cap.events(SEND)
    assert seen["correlation"] == send.data["trace_id"] == trace_id_for(lock)


def test_huge_arguments_and_results_are_recorded_bounded(
    ctx: Any, caller: tuple[Any, Any], tmp_path: Path
) -> None:
    with TracedProcessPoolExecutor(1, mp_context=ctx, trace_dir=tmp_path) as ex:
        assert len(ex.submit(workers.huge, 2_000_000).result(TIMEOUT)) == 2_000_000
    [records] = child_records(tmp_path).values()
    [exit_] = [r for r in of_type(records, "function_exit") if r["correlation_id"] == "order-7"]
    assert exit_["data"]["return_value"]["$truncated"] == "str"
    assert exit_["data"]["return_value"]["size"] == 2_000_000


SCRIPT = """
import multiprocessing, sys
from tidescope.capture import runtime as rt
from tidescope.integrations.process import TracedProcessPoolExecutor

def cube(n):
    return n * n * n

def main():
    ctx = multiprocessing.get_context(sys.argv[1])
    with rt.bind_correlation_id("batch-3"):
        with TracedProcessPoolExecutor(2, mp_context=ctx) as ex:
            print(sorted(ex.map(cube, range(4))))

if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_under_tidescope_run_children_record_into_the_runs_directory(
    method: str, tmp_path: Path
) -> None:
    (tmp_path / "batch.py").write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run(
        [sys.executable, "-m", "tidescope", "run", "batch.py", method],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=TIMEOUT,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "[0, 1, 8, 27]\n"), done.stderr
    parent_pid = None
    cubes: list[int] = []
    ups = 0
    for path in trace_files(tmp_path / "tidescope-trace"):
        records = list(read_trace(path))
        if not records:
            continue
        if records[0]["$header"].get("ppid") == os.getpid():
            parent_pid = records[0]["$header"]["pid"]
            continue
        events = [r for r in records if "event_type" in r]
        ups += len([r for r in of_type(events, "node_event") if r["data"]["event_type"] == "up"])
        for r in of_type(events, "remote_call_receive"):
            assert r["correlation_id"] == "batch-3"
            assert r["data"]["trace_id"] == trace_id_for("batch-3")
        cubes += [
            r["data"]["return_value"]
            for r in of_type(events, "function_exit")
            if r["correlation_id"] == "batch-3" and isinstance(r["data"]["return_value"], int)
        ]
    assert parent_pid is not None
    assert ups >= 1
    # each cube is returned twice in the child: by cube() (the import hook) and by the task
    assert sorted(cubes) == sorted([0, 1, 8, 27] * 2)


def test_none_and_hostile_arguments_and_results_are_recorded_safely(
    ctx: Any, caller: tuple[Any, Any], tmp_path: Path
) -> None:
    with TracedProcessPoolExecutor(1, mp_context=ctx, trace_dir=tmp_path) as ex:
        assert ex.submit(workers.echo, None).result(TIMEOUT) is None
        back = ex.submit(workers.echo, workers.Hostile()).result(TIMEOUT)
    assert type(back) is workers.Hostile
    [records] = child_records(tmp_path).values()
    runs = [r for r in of_type(records, "function_entry") if r["parent_id"] == caller[1]]
    assert runs[0]["data"]["args"]["args"] == [None]
    hostile_arg = runs[1]["data"]["args"]["args"][0]
    assert hostile_arg["$object"] == "_proc_workers.Hostile"
    exits = [r for r in of_type(records, "function_exit") if r["parent_id"] == caller[1]]
    assert [e["data"]["exit_reason"] for e in exits] == ["normal", "normal"]
    assert internal_errors() == 0
