"""The query index of a real recording: its tables against what the program did, rebuilds,
reuse, damage, permissions, and ``tidescope query``'s output formats and errors."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")

from tidescope.export.reader import read_trace, trace_files
from tidescope.query import INDEX_NAME, QueryError, open_index

PROGRAM = """
import asyncio
import threading

def parse(text):
    total = 0
    for ch in text:
        total += int(ch)
    return total

def risky(x):
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * 2

async def worker(n):
    await asyncio.sleep(0)
    return parse(str(n))

def main():
    parse("123")
    try:
        risky(-3)
    except ValueError:
        pass
    risky(4)
    t = threading.Thread(target=parse, args=("45",))
    t.start()
    t.join()
    asyncio.run(worker(77))

main()
"""


def record(directory: Path, source: str = PROGRAM, *args: str) -> Path:
    """Run ``source`` under ``tidescope run --level values``; returns the trace directory."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "prog.py"
    script.write_text(textwrap.dedent(source))
    out = directory / "trace"
    proc = subprocess.run(
        [sys.executable, "-m", "tidescope", "run", "--level", "values", "-o", str(out), *args,
         str(script)],
        cwd=directory, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # the run's own directory, whether the run wrote into ``out`` or into a directory of
    # its own under it
    runs = [p.parent for p in out.glob("*/events-*.tstrace")]
    return runs[0] if len(runs) == 1 and not list(out.glob("events-*.tstrace")) else out


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record(tmp_path_factory.mktemp("rec"))


@pytest.fixture
def trace(recorded: Path, tmp_path: Path) -> Path:
    """A private copy of the recording (without its index), for a test that changes it."""
    copy = tmp_path / "trace"
    shutil.copytree(recorded, copy, ignore=shutil.ignore_patterns(INDEX_NAME))
    return copy


def query(
    directory: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidescope", "query", *(([str(directory)]) if directory else []),
         *args],
        capture_output=True, text=True, check=False, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip


def rows(directory: Path, sql: str) -> list[dict[str, object]]:
    with open_index(directory) as index:
        names, values = index.sql(sql)
    return [dict(zip(names, r, strict=True)) for r in values]


def test_calls_hold_each_call_with_its_arguments_return_value_and_exception(
    recorded: Path,
) -> None:
    calls = rows(
        recorded,
        "SELECT qualname, module, args, return_value, exception_type, exception_message,"
        " exit_reason, duration_ns, end_ns - start_ns AS span, self_ns"
        " FROM calls ORDER BY start_ns",
    )
    got = [(c["qualname"], json.loads(c["args"]), json.loads(c["return_value"])) for c in calls]  # type: ignore[arg-type]
    assert got == [
        ("main", {}, None),
        ("parse", {"text": "123"}, 6),
        ("risky", {"x": -3}, None),
        ("risky", {"x": 4}, 8),
        ("parse", {"text": "45"}, 9),
        ("worker", {"n": 77}, 14),
        ("parse", {"text": "77"}, 14),
    ]
    raised = [c for c in calls if c["exception_type"] is not None]
    assert [(c["exception_type"], c["exception_message"], c["exit_reason"]) for c in raised] == [
        ("builtins.ValueError", "negative: -3", "exception")
    ]
    assert {c["module"] for c in calls} == {"__main__"}
    for c in calls:
        assert 0 < c["duration_ns"] <= c["span"]  # type: ignore[operator]
        assert 0 <= c["self_ns"] <= c["duration_ns"]  # type: ignore[operator]
    main = calls[0]
    # main's own time excludes the calls it made in its thread, not the thread's or task's
    inline = sum(c["duration_ns"] for c in calls[1:4])  # type: ignore[misc]
    assert main["self_ns"] == main["duration_ns"] - inline  # type: ignore[operator]


def test_calls_join_up_with_their_callers_threads_and_tasks(recorded: Path) -> None:
    calls = {
        (c["qualname"], c["args"]): c
        for c in rows(
            recorded, "SELECT call_id, parent_id, thread, task, qualname, args FROM calls"
        )
    }
    main = calls[("main", "{}")]
    in_thread = calls[("parse", '{"text":"45"}')]
    worker = calls[("worker", '{"n":77}')]
    in_task = calls[("parse", '{"text":"77"}')]
    assert calls[("parse", '{"text":"123"}')]["parent_id"] == main["call_id"]
    assert in_thread["thread"] != main["thread"]
    assert in_thread["parent_id"] in (None, main["call_id"])  # the call that started it, if noted
    assert main["task"] is None and worker["task"] is not None
    assert in_task["task"] == worker["task"] and in_task["parent_id"] == worker["call_id"]


def test_events_hold_every_event_of_the_trace_with_its_envelope_and_data(recorded: Path) -> None:
    want = [r for p in trace_files(recorded) for r in read_trace(p) if "event_type" in r]
    got = rows(recorded, "SELECT * FROM events ORDER BY event_id")
    assert len(got) == len(want)
    for g, w in zip(got, sorted(want, key=lambda r: r["event_id"]), strict=True):  # type: ignore[arg-type, return-value]
        assert json.loads(g.pop("data")) == w.pop("data")  # type: ignore[arg-type]
        corr = w.pop("correlation_id")
        assert g.pop("correlation_id") == (None if corr is None else str(corr))
        assert g == w


def test_values_hold_the_loop_assignment_and_branch_values_of_each_call(recorded: Path) -> None:
    with open_index(recorded) as index:
        ((cid,),) = index.sql("SELECT call_id FROM calls WHERE args = ?", ['{"text":"123"}'])[1]
        _, got = index.sql(
            'SELECT name, value, kind, line FROM "values" WHERE call_id = ? ORDER BY timestamp',
            [cid],
        )
        assert [(n, json.loads(v), line) for n, v, _, line in got] == [
            ("total", 0, 6), ("ch", "1", 7), ("total", 1, 8), ("ch", "2", 7), ("total", 3, 8),
            ("ch", "3", 7), ("total", 6, 8),
        ]  # fmt: skip
        assert {k for _, _, k, _ in got} == {"local_variable_snapshot", "loop_iteration"}
        _, branches = index.sql(
            'SELECT c.args, v.name, v.value FROM "values" v JOIN calls c USING (call_id)'
            " WHERE v.kind = 'branch_execution' ORDER BY v.timestamp"
        )
        assert branches == [('{"x":-3}', "x < 0", "true"), ('{"x":4}', "x < 0", "false")]
        _, nodes = index.sql(
            'SELECT DISTINCT v.ast_node_id, n.node_type FROM "values" v'
            " JOIN nodes n ON n.id = v.ast_node_id WHERE v.call_id = ? ORDER BY 1",
            [cid],
        )
        assert [t for _, t in nodes] == ["Assign", "For", "AugAssign"]


def test_nodes_and_sources_hold_the_node_table_and_the_program_text(recorded: Path) -> None:
    (nodes_file,) = sorted(recorded.glob("nodes-*.jsonl"))
    want = {r["id"]: r for r in map(json.loads, nodes_file.read_text().splitlines())}
    got = rows(recorded, "SELECT * FROM nodes")
    assert {r["id"]: r for r in got} == want
    (src,) = rows(recorded, "SELECT file, text FROM sources")
    (script,) = [p / "prog.py" for p in recorded.parents if (p / "prog.py").exists()][:1]
    assert src == {"file": str(script), "text": textwrap.dedent(PROGRAM)}


def test_files_and_stats_count_events_drops_errors_and_damage(recorded: Path) -> None:
    n_events = sum(1 for p in trace_files(recorded) for r in read_trace(p) if "event_type" in r)
    (st,) = rows(recorded, "SELECT * FROM stats")
    assert st == {
        "files": 1, "events": n_events, "events_written": n_events, "dropped_events": 0,
        "internal_errors": 0, "damaged_chunks": 0, "torn_files": 0, "incomplete_files": 0,
    }  # fmt: skip
    (f,) = rows(recorded, "SELECT * FROM files WHERE kind = 'events'")
    assert f["complete"] is True and json.loads(f["header"])["pid"] == f["pid"]  # type: ignore[arg-type]


def test_the_index_is_reused_while_the_trace_is_unchanged(trace: Path) -> None:
    with open_index(trace) as index:
        first = os.stat(index.path)
    with open_index(trace) as index:
        again = os.stat(index.path)
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    with open_index(trace, rebuild=True) as index:
        assert os.stat(index.path).st_ino != first.st_ino


def test_the_index_is_rebuilt_when_the_trace_changes(trace: Path, tmp_path: Path) -> None:
    assert rows(trace, "SELECT count(*) AS n FROM calls") == [{"n": 7}]
    # another process of the same run: a new trace file in the directory
    other = record(tmp_path / "other", "def f(x):\n    return x\n\nf(1)\nf(2)\n")
    (source,) = trace_files(other)
    added = trace / "events-1.tstrace"
    shutil.copy(source, added)
    assert rows(trace, "SELECT count(*) AS n FROM calls") == [{"n": 9}]
    sql = f"SELECT events, torn, complete FROM files WHERE file = '{added.name}'"
    assert rows(trace, sql) == [{"events": 4, "torn": False, "complete": True}]
    # a file that changes in place: its CLOSE chunk cut short, as by a kill mid-write
    data = added.read_bytes()
    added.write_bytes(data[: len(data) - 20])
    assert rows(trace, sql) == [{"events": 4, "torn": True, "complete": False}]


def test_a_damaged_chunk_is_skipped_and_counted_and_the_rest_is_indexed(trace: Path) -> None:
    (path,) = trace_files(trace)
    data = bytearray(path.read_bytes())
    last = data.rfind(b"TSCK")  # the CLOSE chunk: flip a byte of its body
    data[last + 14] ^= 0xFF
    path.write_bytes(bytes(data))
    (f,) = rows(trace, "SELECT * FROM files WHERE kind = 'events'")
    assert (f["damaged"], f["complete"], f["first_damaged_offset"]) == (1, False, last)
    assert rows(trace, "SELECT damaged_chunks, incomplete_files FROM stats") == [
        {"damaged_chunks": 1, "incomplete_files": 1}
    ]
    assert rows(trace, "SELECT count(*) AS n FROM calls") == [{"n": 7}]


def test_a_call_whose_exit_never_came_is_a_row_without_an_exit(tmp_path: Path) -> None:
    trace = record(tmp_path, "import os\n\ndef last():\n    os._exit(0)\n\nlast()\n")
    (call,) = rows(trace, "SELECT qualname, end_ns, exit_reason, duration_ns FROM calls")
    assert call == {"qualname": "last", "end_ns": None, "exit_reason": None, "duration_ns": None}


def test_the_index_is_private_and_never_written_through_a_planted_symlink(
    trace: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (trace / INDEX_NAME).symlink_to(victim)
    with open_index(trace) as index:
        assert stat.S_IMODE(os.lstat(index.path).st_mode) == 0o600
        assert not index.path.is_symlink()
    assert victim.read_text() == "keep"


def test_user_sql_cannot_change_the_index_or_touch_other_files(trace: Path) -> None:
    with open_index(trace) as index:
        for sql in (
            "DROP TABLE calls",
            "SELECT * FROM read_csv('/etc/passwd')",
            f"COPY calls TO '{trace / 'out.csv'}'",
            "SET enable_external_access = true",
        ):
            with pytest.raises(QueryError):
                index.sql(sql)
        assert index.sql("SELECT count(*) FROM calls")[1] == [(7,)]
    assert not (trace / "out.csv").exists()


def test_sql_errors_are_one_line_and_a_closed_index_says_so(recorded: Path) -> None:
    index = open_index(recorded)
    with pytest.raises(QueryError) as exc:
        index.sql("SELECT nope FROM calls")
    assert "\n" not in str(exc.value) and "nope" in str(exc.value)
    index.close()
    index.close()
    with pytest.raises(QueryError, match="closed"):
        index.sql("SELECT 1")


def test_the_pure_decoder_builds_the_same_index(trace: Path, tmp_path: Path) -> None:
    pure = tmp_path / "pure"
    shutil.copytree(trace, pure)
    code = (
        "import sys; from tidescope.query import open_index\n"
        "with open_index(sys.argv[1]) as i: print(i.sql(sys.argv[2])[1])"
    )
    sql = "SELECT * FROM calls ORDER BY call_id"
    out = subprocess.run(
        [sys.executable, "-c", code, str(pure), sql], capture_output=True, text=True,
        check=True, env={**os.environ, "TIDESCOPE_CORE": "python"},
    )  # fmt: skip
    with open_index(trace) as index:
        assert out.stdout.strip() == str(index.sql(sql)[1])


# --- the command line ---------------------------------------------------------------------


def test_query_prints_an_aligned_table(recorded: Path) -> None:
    out = query(
        recorded,
        "SELECT qualname, args, duration_ns > 0 AS timed, exception_type FROM calls"
        " WHERE qualname = 'risky' ORDER BY start_ns",
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["qualname", "args", "timed", "exception_type"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["risky", '{"x":-3}', "True", "builtins.ValueError"]
    assert lines[3].split() == ["risky", '{"x":4}', "True"]
    assert lines[-1] == "(2 rows)"
    assert lines[2].index('{"x"') == lines[0].index("args")


def test_query_json_and_csv_give_every_row_whole(recorded: Path) -> None:
    sql = "SELECT qualname, args, self_ns FROM calls ORDER BY start_ns"
    as_json = [json.loads(line) for line in query(recorded, sql, "--json").stdout.splitlines()]
    as_csv = list(csv.DictReader(io.StringIO(query(recorded, sql, "--csv").stdout)))
    assert [r["qualname"] for r in as_json] == [r["qualname"] for r in as_csv]
    assert len(as_json) == 7
    assert [r["args"] for r in as_json] == [r["args"] for r in as_csv]
    assert [str(r["self_ns"]) for r in as_json] == [r["self_ns"] for r in as_csv]


def test_query_bad_sql_is_one_line_and_status_2(recorded: Path) -> None:
    out = query(recorded, "SELEC nothing")
    assert out.returncode == 2
    assert out.stdout == "" and out.stderr.count("\n") == 1
    assert out.stderr.startswith("tidescope: ") and "syntax error" in out.stderr.lower()


def test_query_without_a_trace_directory_is_one_line_and_status_2(tmp_path: Path) -> None:
    out = query(tmp_path / "missing", "SELECT 1")
    assert (out.returncode, out.stderr.count("\n")) == (2, 1)


def test_query_without_duckdb_names_the_extra(recorded: Path) -> None:
    code = (
        "import sys; sys.modules['duckdb'] = None\n"
        "from tidescope.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "query", str(recorded), "SELECT 1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr == (
        "tidescope: tidescope query needs duckdb and pyarrow: pip install 'tidescope[query]'\n"
    )


def test_an_index_open_in_this_process_does_not_hide_a_rebuilt_one(
    trace: Path, tmp_path: Path
) -> None:
    other = record(tmp_path / "other", "def f(x):\n    return x\n\nf(1)\n")
    old = open_index(trace)
    try:
        assert old.sql("SELECT count(*) FROM calls")[1] == [(7,)]
        shutil.copy(trace_files(other)[0], trace / "events-1.tstrace")
        with open_index(trace) as new:  # the trace changed: rebuilt, and this reads the new one
            assert new.sql("SELECT count(*) FROM calls")[1] == [(8,)]
        assert old.sql("SELECT count(*) FROM calls")[1] == [(7,)]  # a snapshot of its time
    finally:
        old.close()


def test_query_reads_tidescope_trace_in_the_current_directory_by_default(
    trace: Path, tmp_path: Path
) -> None:
    trace.rename(tmp_path / "tidescope-trace")
    out = subprocess.run(
        [sys.executable, "-m", "tidescope", "query", "SELECT count(*) AS n FROM calls", "--csv"],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert (out.returncode, out.stdout) == (0, "n\n7\n"), out.stderr


def test_values_json_has_no_form_for_are_indexed_as_jsonable_gives_them(tmp_path: Path) -> None:
    source = (
        "def odd(keys, big, text, nan, raw, items):\n    return 1\n\n"
        "odd({1: 'a', (2, 3): 'b'}, 2**70, 'x\\udc80y', float('nan'), b'\\x00\\xff', {7})\n"
    )
    trace = record(tmp_path, source)
    ((args,),) = [r.values() for r in rows(trace, "SELECT args FROM calls")]
    assert json.loads(args) == {  # type: ignore[arg-type]
        "keys": {"1": "a", "(2, 3)": "b"}, "big": 2**70, "text": "x?y", "nan": None,
        "raw": {"$bytes": "AP8="}, "items": [7],
    }  # fmt: skip


def test_a_memory_limit_holds_the_readers_duckdb(recorded: Path) -> None:
    """tidescope view's server passes one, so DuckDB's cache of a big index stays bounded."""
    from tidescope.query import open_index
    from tidescope.view import MEMORY_LIMIT

    with open_index(recorded, memory_limit="64MB") as index:
        _, got = index.sql("SELECT current_setting('memory_limit')")
        _, calls = index.sql("SELECT count(*) FROM calls")
    assert got[0][0] == "61.0 MiB"  # 64 MB as DuckDB says it
    assert calls[0][0] > 0
    with open_index(recorded) as index:  # DuckDB's default otherwise
        _, default = index.sql("SELECT current_setting('memory_limit')")
    assert default != got
    assert MEMORY_LIMIT.endswith("MB")
