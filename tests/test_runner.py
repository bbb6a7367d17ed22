"""`tidescope run` in a subprocess: the program behaves as under python; its trace joins up."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tidescope.export.reader import read_trace, trace_files


def write(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source))
    return path


def tidescope_run(
    *args: str, cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidescope", "run", *args],
        cwd=cwd, capture_output=True, text=True, input=stdin, check=False, timeout=120,
    )  # fmt: skip


def python_run(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, input=stdin,
        check=False, timeout=120,
    )  # fmt: skip


def events(directory: Path) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for path in trace_files(directory):
        out += [r for r in read_trace(path) if "event_type" in r]
    return out


APP = """
import sys

def greet(name, punctuation="!"):
    return f"hello {name}{punctuation}"

def main(argv):
    line = sys.stdin.readline().strip()
    print(greet(argv[1] if len(argv) > 1 else "world"), line)
    print("argv:", argv, "main:", __name__)
    return int(argv[2]) if len(argv) > 2 else 0

sys.exit(main(sys.argv))
"""


def test_program_sees_the_same_argv_stdin_stdout_and_exit_code(tmp_path: Path) -> None:
    write(tmp_path / "app.py", APP)
    ours = tidescope_run("app.py", "ada", "3", cwd=tmp_path, stdin="from stdin\n")
    plain = python_run("app.py", "ada", "3", cwd=tmp_path, stdin="from stdin\n")
    assert (ours.stdout, ours.returncode) == (plain.stdout, plain.returncode) == (ours.stdout, 3)
    summary = ours.stderr.strip().splitlines()[-1]
    assert summary.startswith("tidescope: ") and "events captured, 0 dropped" in summary
    evs = events(tmp_path / "tidescope-trace")
    entries = {e["call_id"]: e for e in evs if e["event_type"] == "function_entry"}
    exits = {e["call_id"]: e for e in evs if e["event_type"] == "function_exit"}
    assert set(entries) == set(exits)
    greet = next(e for e in entries.values() if e["data"]["function"] == "greet")
    main = next(e for e in entries.values() if e["data"]["function"] == "main")
    assert greet["parent_id"] == main["call_id"]
    assert exits[greet["call_id"]]["data"]["return_value"] == "hello ada!"


def test_unhandled_exception_prints_the_same_traceback_and_exits_1(tmp_path: Path) -> None:
    write(
        tmp_path / "boom.py",
        """
        def inner(x):
            return 1 / x

        def outer():
            return inner(0)

        outer()
        """,
    )
    ours = tidescope_run("boom.py", cwd=tmp_path)
    plain = python_run("boom.py", cwd=tmp_path)
    assert ours.returncode == plain.returncode == 1
    ours_tb = ours.stderr.strip().splitlines()[:-1]  # the last line is tidescope's summary
    assert ours_tb == plain.stderr.strip().splitlines()
    evs = events(tmp_path / "tidescope-trace")
    reasons = [e["data"]["exit_reason"] for e in evs if e["event_type"] == "function_exit"]
    assert reasons == ["exception", "exception"]


def test_syntax_error_is_reported_exactly_as_python_reports_it(tmp_path: Path) -> None:
    write(tmp_path / "bad.py", "x = 1\ndef f(:\n    pass\n")
    ours = tidescope_run("bad.py", cwd=tmp_path)
    plain = python_run("bad.py", cwd=tmp_path)
    assert ours.returncode == plain.returncode == 1
    assert ours.stderr == plain.stderr
    assert "Traceback" not in ours.stderr


def test_compile_warnings_are_shown_once_as_python_shows_them(tmp_path: Path) -> None:
    write(tmp_path / "app.py", "def f(x):\n    return x is 1\n\nprint(f(1))\n")
    ours = tidescope_run("app.py", cwd=tmp_path)
    plain = python_run("app.py", cwd=tmp_path)
    assert "SyntaxWarning" in plain.stderr
    assert (ours.stdout, ours.returncode) == (plain.stdout, plain.returncode)
    assert ours.stderr.splitlines()[:-1] == plain.stderr.splitlines()  # then our summary
    evs = events(tmp_path / "tidescope-trace")
    assert [e["data"]["function"] for e in evs if e["event_type"] == "function_entry"] == ["f"]


def test_missing_script_unwritable_output_and_unknown_option_are_clear_errors(
    tmp_path: Path,
) -> None:
    missing = tidescope_run("nope.py", cwd=tmp_path)
    assert missing.returncode == 2
    assert (
        missing.stderr.startswith("tidescope: can't open file")
        and "Traceback" not in missing.stderr
    )
    write(tmp_path / "app.py", "print('hi')\n")
    (tmp_path / "file").write_text("")
    blocked = tidescope_run("--output", "file/sub", "app.py", cwd=tmp_path)
    assert blocked.returncode == 2 and "cannot write to output directory" in blocked.stderr
    unknown = tidescope_run("--frobnicate", "app.py", cwd=tmp_path)
    assert unknown.returncode == 2 and "unrecognized arguments" in unknown.stderr
    bad_size = tidescope_run("--buffer-size", "1000", "app.py", cwd=tmp_path)
    assert bad_size.returncode == 2 and "power of two" in bad_size.stderr
    for proc in (missing, blocked, unknown, bad_size):
        assert "Traceback" not in proc.stderr


def test_module_mode_runs_a_package_module_as_main(tmp_path: Path) -> None:
    pkg = tmp_path / "shop"
    pkg.mkdir()
    write(pkg / "__init__.py", "")
    write(pkg / "cart.py", "def total(items):\n    return sum(items)\n")
    write(
        pkg / "cli.py",
        """
        import sys
        from shop.cart import total
        if __name__ == "__main__":
            print(total([1, 2, int(sys.argv[1])]))
        """,
    )
    ours = tidescope_run("--include", "shop.*", "-m", "shop.cli", "4", cwd=tmp_path)
    plain = python_run("-m", "shop.cli", "4", cwd=tmp_path)
    assert (ours.stdout, ours.returncode) == (plain.stdout, plain.returncode) == ("7\n", 0)
    evs = events(tmp_path / "tidescope-trace")
    names = {e["data"]["function"] for e in evs if e["event_type"] == "function_entry"}
    assert "total" in names


def test_sigterm_flushes_everything_and_closes_the_file(tmp_path: Path) -> None:
    write(
        tmp_path / "server.py",
        """
        import time
        def tick(i):
            return i
        for i in range(200):
            tick(i)
        print("ready", flush=True)
        while True:
            time.sleep(0.05)
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidescope", "run", "server.py"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if first != "ready\n":
        proc.kill()
        pytest.fail(f"the program did not start: {proc.communicate()[1]}")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM  # killed by the signal, as under python
    (path,) = trace_files(tmp_path / "tidescope-trace")
    records = list(read_trace(path))
    assert "$stats" in records[-1]
    ticks = [r for r in records if r.get("event_type") == "function_entry"]
    assert len(ticks) == 200 and "200 events" not in err  # 400 events: entries and exits


def test_forked_children_write_their_own_files(tmp_path: Path) -> None:
    write(
        tmp_path / "forker.py",
        """
        import os
        def child_work(n):
            return n * 2
        pid = os.fork()
        if pid == 0:
            child_work(21)
            os._exit(0)
        os.waitpid(pid, 0)
        child_work(1)
        """,
    )
    ours = tidescope_run("forker.py", cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr
    files = trace_files(tmp_path / "tidescope-trace")
    assert len(files) == 2
    by_pid = {}
    for path in files:
        evs = [r for r in read_trace(path) if r.get("event_type") == "function_exit"]
        by_pid[path.name] = sorted(e["data"]["return_value"] for e in evs)
    assert sorted(by_pid.values()) == [[2], [42]]


def test_export_and_show_read_the_trace_of_a_run(tmp_path: Path) -> None:
    write(tmp_path / "app.py", APP)
    tidescope_run("app.py", "x", cwd=tmp_path, stdin="\n")
    out = subprocess.run(
        [sys.executable, "-m", "tidescope", "export", "tidescope-trace", "--format", "chrome"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "records ->" in out.stderr
    (run,) = [p for p in (tmp_path / "tidescope-trace").iterdir() if p.is_dir()]
    assert f"reading the latest run, {Path('tidescope-trace', run.name)}" in out.stderr
    trace = json.loads((run / "trace.chrome.json").read_text())  # in the run's directory
    assert {e["name"] for e in trace["traceEvents"] if e["ph"] == "X"} >= {"__main__.greet"}
    show = subprocess.run(
        [sys.executable, "-m", "tidescope", "show", "tidescope-trace"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "top functions by calls" in show.stdout and "__main__.greet" in show.stdout
    nothing = subprocess.run(
        [sys.executable, "-m", "tidescope", "show", "missing"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert nothing.returncode == 2 and "no trace directory" in nothing.stderr


def test_multiprocessing_workers_write_their_own_files(tmp_path: Path) -> None:
    write(
        tmp_path / "pool.py",
        """
        import multiprocessing

        def square(n):
            return n * n

        if __name__ == "__main__":
            pool = multiprocessing.get_context("fork").Pool(2)
            print(sorted(pool.map(square, range(6))))
            pool.close()  # workers exit on their own: each flushes its trace
            pool.join()
        """,
    )
    ours = tidescope_run("pool.py", cwd=tmp_path)
    plain = python_run("pool.py", cwd=tmp_path)
    assert (ours.stdout, ours.returncode) == (plain.stdout, plain.returncode), ours.stderr
    files = trace_files(tmp_path / "tidescope-trace")
    assert len(files) >= 2  # the parent and at least one worker
    squares = []
    for path in files:
        records = list(read_trace(path))
        if not records:
            continue  # a worker the pool killed before it wrote anything
        pid = records[0]["$header"]["pid"]
        for r in records[1:]:
            if r.get("event_type") == "function_exit" and r["pid"] == pid:
                squares.append(r["data"]["return_value"])
    assert sorted(squares) == [0, 1, 4, 9, 16, 25]


def test_spawned_multiprocessing_workers_record_their_calls_too(tmp_path: Path) -> None:
    write(
        tmp_path / "spawner.py",
        """
        import multiprocessing

        def cube(n):
            return n * n * n

        if __name__ == "__main__":
            pool = multiprocessing.get_context("spawn").Pool(2)
            print(sorted(pool.map(cube, range(5))))
            pool.close()  # workers exit on their own: each flushes its trace
            pool.join()
        """,
    )
    ours = tidescope_run("spawner.py", cwd=tmp_path)
    plain = python_run("spawner.py", cwd=tmp_path)
    assert (ours.stdout, ours.returncode) == (plain.stdout, plain.returncode), ours.stderr
    cubes = []
    children = 0
    for path in trace_files(tmp_path / "tidescope-trace"):
        records = list(read_trace(path))
        if not records:
            continue  # a worker the pool killed before it wrote anything
        if records[0]["$header"]["argv"] == ["<multiprocessing spawn child>"]:
            children += 1
            assert "$stats" in records[-1]  # flushed at the child's exit
        cubes += [
            r["data"]["return_value"]
            for r in records[1:]
            if r.get("event_type") == "function_exit" and isinstance(r["data"]["return_value"], int)
        ]
    assert children >= 1
    assert sorted(cubes) == [0, 1, 8, 27, 64]


SEMANTICS = """
import asyncio, contextlib, functools, sys

log = []

def trace(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        log.append(fn.__name__)
        return fn(*args, **kwargs)
    return wrapper

def default_once(x, acc=[]):
    acc.append(x)
    return list(acc)

def short_circuit(a, b):
    calls = []
    def f(v):
        calls.append(v)
        return v
    r = f(a) or f(b)
    s = f(a) and f(b)
    return r, s, calls

def finally_wins():
    try:
        return "body"
    finally:
        return "finally"

def gen():
    got = yield 1
    try:
        got = yield got * 10
    except KeyError as exc:
        yield f"caught {exc.args[0]}"
    finally:
        log.append("gen closed")

def counter():
    n = 0
    def bump():
        nonlocal n
        n += 1
        return n
    return bump

TOTAL = 0
def add_global(v):
    global TOTAL
    TOTAL += v
    return TOTAL

class Base:
    def hello(self):
        return "base"

class Child(Base):
    kind = "child"
    doubled = [k * 2 for k in range(3)]
    @trace
    def hello(self):
        return "child+" + super().hello()
    @staticmethod
    def st(*a, **k):
        return a, sorted(k)
    @property
    def prop(self):
        return __class__.__name__

async def agen(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i

@contextlib.asynccontextmanager
async def resource():
    yield "res"

async def amain():
    out = [i async for i in agen(3)]
    async with resource() as r:
        out.append(r)
    async def slow():
        await asyncio.sleep(10)
    t = asyncio.ensure_future(slow())
    await asyncio.sleep(0)
    t.cancel()
    try:
        await t
    except asyncio.CancelledError:
        out.append("cancelled")
    return out

def walrus(items):
    return [y for x in items if (y := x * 2) > 2]

def match_it(v):
    match v:
        case {"k": int(n)} if n > 1:
            return f"big {n}"
        case [a, *rest]:
            return f"seq {a} {rest}"
        case _:
            return "other"

def main():
    print(default_once(1), default_once(2))
    print(short_circuit(0, 5), short_circuit(3, 0))
    print(finally_wins())
    g = gen()
    print(next(g), g.send(7), g.throw(KeyError("boom")))
    g.close()
    b = counter(); b(); print(b())
    add_global(2); print(add_global(3))
    c = Child()
    print(c.hello(), c.kind, c.doubled, Child.st(1, 2, z=3, y=4), c.prop)
    print(asyncio.run(amain()))
    print(walrus([1, 2, 3]), list(map(lambda v: v + 1, [1, 2])))
    print(match_it({"k": 5}), match_it([1, 2, 3]), match_it(None))
    print(log)
    try:
        {}["missing"]
    except KeyError as e:
        print("keyerror", e)
    sys.exit(4)

main()
"""


@pytest.mark.parametrize("level", ["calls", "values", "lines"])
def test_program_exercising_the_semantics_list_behaves_identically(
    tmp_path: Path, level: str
) -> None:
    write(tmp_path / "sem.py", SEMANTICS)
    ours = tidescope_run("--level", level, "sem.py", cwd=tmp_path)
    plain = python_run("sem.py", cwd=tmp_path)
    assert plain.returncode == 4 and "Traceback" not in plain.stderr
    assert (ours.stdout, ours.returncode) == (plain.stdout, plain.returncode), ours.stderr
    assert "0 internal errors" in ours.stderr
    evs = []
    for path in trace_files(tmp_path / "tidescope-trace"):
        evs += [r for r in read_trace(path) if "event_type" in r]
    entries = {e["call_id"] for e in evs if e["event_type"] == "function_entry"}
    exits = [e for e in evs if e["event_type"] == "function_exit"]
    assert {e["call_id"] for e in exits} <= entries
    assert any(e["data"]["exit_reason"] == "cancelled" for e in exits)


def run_records(directory: Path) -> dict[int, list[dict[str, object]]]:
    """Every file of a run, by pid: its records, header first."""
    out = {}
    for path in trace_files(directory):
        records = list(read_trace(path))
        out[records[0]["$header"]["pid"]] = records
    return out


def returns_of(records: list[dict[str, object]], function: str) -> list[object]:
    entries = {
        r["call_id"]
        for r in records
        if r.get("event_type") == "function_entry" and r["data"]["function"] == function
    }
    return [
        r["data"]["return_value"]
        for r in records
        if r.get("event_type") == "function_exit"
        and r["call_id"] in entries
        and r["data"]["exit_reason"] == "normal"
    ]


POOL = """
import multiprocessing, sys

def square(n):
    return n * n

if __name__ == "__main__":
    with multiprocessing.get_context(sys.argv[1]).Pool(2) as pool:  # exit: terminate()
        print(sorted(pool.map(square, range(8))))
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_pool_terminated_by_its_with_block_leaves_every_workers_file_complete(
    tmp_path: Path, method: str
) -> None:
    write(tmp_path / "pool.py", POOL)
    ours = tidescope_run("pool.py", method, cwd=tmp_path)
    plain = python_run("pool.py", method, cwd=tmp_path)
    assert (ours.stdout, ours.returncode) == (plain.stdout, plain.returncode), ours.stderr
    files = run_records(tmp_path / "tidescope-trace")
    assert len(files) >= 2  # the parent and its workers (a fork server writes none)
    squares = []
    for records in files.values():
        assert "$stats" in records[-1]  # closed, with its counts, though killed by SIGTERM
        squares += returns_of(records, "square")
    assert sorted(squares) == [n * n for n in range(8)]  # no finished task's events lost
    if method == "forkserver":
        roles = {r[0]["$header"]["argv"][0] for r in files.values()}
        assert "<multiprocessing forkserver child>" in roles
    # the run's summary counts every process's events, its workers' included
    total = sum(1 for records in files.values() for r in records if "event_type" in r)
    summary = ours.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"tidescope: {total} events captured, 0 dropped"), summary
    assert f"and {len(files) - 1} child process" in summary


SERVER = """
import multiprocessing, os, signal, sys, time

stop = False

def on_term(signum, frame):
    global stop
    stop = True

def handle(n):
    return n + 1

def shutdown(name):
    return name

def die_of_sigterm():
    # as uvicorn does after a graceful shutdown: die of the signal it caught
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)

def serve(name, ready):
    signal.signal(signal.SIGTERM, on_term)
    ready.put(name)
    n = 0
    while not stop:
        n = handle(n)
        time.sleep(0.01)
    shutdown(name)
    die_of_sigterm()

if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    ready = ctx.SimpleQueue()
    workers = [ctx.Process(target=serve, args=(f"w{i}", ready)) for i in range(2)]
    for w in workers:
        w.start()
    signal.signal(signal.SIGTERM, on_term)
    print(sorted(ready.get() for _ in workers), flush=True)
    while not stop:
        time.sleep(0.01)
    for w in workers:
        w.terminate()
    for w in workers:
        w.join()
    print([w.exitcode for w in workers], flush=True)
    shutdown("main")
    die_of_sigterm()
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_server_that_re_raises_sigterm_still_closes_its_trace_and_its_workers(
    tmp_path: Path, method: str
) -> None:
    write(tmp_path / "server.py", SERVER)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidescope", "run", "server.py", method],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        first = proc.stdout.readline()
        assert first == "['w0', 'w1']\n", proc.communicate(timeout=60)[1]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM  # died of the signal, as under python
    assert out == "[-15, -15]\n"
    assert "tidescope: " in err and " events captured, " in err  # the summary
    files = run_records(tmp_path / "tidescope-trace")
    assert len(files) == 3
    names = []
    for records in files.values():
        assert "internal_errors" in records[-1]["$stats"]
        names += returns_of(records, "shutdown")
    assert sorted(names) == ["main", "w0", "w1"]


KEYBOARD_INTERRUPT = """
import atexit, threading, time

def goodbye(who):
    print("goodbye", who)
    return who

def late(n):
    time.sleep(0.1)
    print("late thread done", n)
    return n

def main():
    atexit.register(goodbye, "atexit")
    threading.Thread(target=late, args=(7,)).start()
    raise KeyboardInterrupt

main()
"""


def test_an_unhandled_keyboard_interrupt_ends_the_run_as_python_ends(tmp_path: Path) -> None:
    write(tmp_path / "ki.py", KEYBOARD_INTERRUPT)
    ours = tidescope_run("ki.py", cwd=tmp_path)
    plain = python_run("ki.py", cwd=tmp_path)
    # python waits for the thread, runs atexit, then dies of SIGINT (not exit status 130)
    assert plain.returncode == -signal.SIGINT
    assert (ours.stdout, ours.returncode) == (plain.stdout, plain.returncode), ours.stderr
    assert ours.stderr.strip().splitlines()[:-1] == plain.stderr.strip().splitlines()
    (records,) = run_records(tmp_path / "tidescope-trace").values()
    assert "$stats" in records[-1]
    assert returns_of(records, "main") == []  # it raised
    # what the late thread and the atexit handler did is recorded: capture was still on
    assert returns_of(records, "late") == [7]
    assert returns_of(records, "goodbye") == ["atexit"]


def test_atexit_handlers_run_recorded_and_after_the_program_s_threads(tmp_path: Path) -> None:
    write(
        tmp_path / "bye.py",
        KEYBOARD_INTERRUPT.replace("raise KeyboardInterrupt", "return 0").replace(
            "main()\n", "import sys\nsys.exit(main() + 3)\n"
        ),
    )
    ours = tidescope_run("bye.py", cwd=tmp_path)
    plain = python_run("bye.py", cwd=tmp_path)
    assert plain.stdout == "late thread done 7\ngoodbye atexit\n"
    assert (ours.stdout, ours.returncode) == (plain.stdout, plain.returncode) == (plain.stdout, 3)
    (records,) = run_records(tmp_path / "tidescope-trace").values()
    assert "$stats" in records[-1]
    assert returns_of(records, "main") == [0]
    assert returns_of(records, "late") == [7]
    assert returns_of(records, "goodbye") == ["atexit"]


def test_the_summary_counts_the_events_of_the_runs_child_processes_only(tmp_path: Path) -> None:
    write(
        tmp_path / "pool.py",
        """
        import multiprocessing

        def square(n):
            return n * n

        if __name__ == "__main__":
            pool = multiprocessing.get_context("fork").Pool(2)
            print(sorted(pool.map(square, range(6))))
            pool.close()
            pool.join()
        """,
    )
    tidescope_run("pool.py", cwd=tmp_path)  # an earlier run: in its own directory, not counted
    ours = tidescope_run("pool.py", cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr
    run = None
    files = []
    for path in trace_files(tmp_path / "tidescope-trace"):  # the latest run's
        records = list(read_trace(path))
        if path.name in ours.stderr:  # the parent: the summary names its file
            run = records[0]["$header"]["run"]
        files.append(records)
    assert run is not None
    mine = [records for records in files if records[0]["$header"]["run"] == run]
    assert len(files) == len(mine) >= 2
    total = sum(1 for records in mine for r in records if "event_type" in r)
    assert total == 2 * 6  # every square's entry and exit, all in the workers
    summary = ours.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"tidescope: {total} events captured, 0 dropped, 0 internal errors")
    assert f"and {len(mine) - 1} child process" in summary and "incomplete" not in summary
