"""The ``tidescope`` command in a subprocess: the program's command line as python's,
``--version`` and plain help, ``[tool.tidescope]``, and a directory per run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

import tidescope
from tidescope.export.reader import read_trace, trace_files

TIDESCOPE = str(Path(sys.executable).parent / "tidescope")  # the installed console script
TIMEOUT = 120


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def cli(*args: str, cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIDESCOPE, *args], cwd=cwd, capture_output=True, text=True, check=False,
        timeout=TIMEOUT, **kwargs,  # type: ignore[call-overload]
    )  # fmt: skip


def python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, check=False,
        timeout=TIMEOUT,
    )  # fmt: skip


def runs(output: Path) -> list[Path]:
    return sorted(p for p in output.iterdir() if p.is_dir())


def records(directory: Path) -> list[dict[str, object]]:
    return [r for path in trace_files(directory) for r in read_trace(path)]


def returns(directory: Path) -> list[object]:
    return sorted(
        r["data"]["return_value"]  # type: ignore[index]
        for r in records(directory)
        if r.get("event_type") == "function_exit"
    )


def calls(directory: Path) -> list[str]:
    return sorted(
        f"{r['data']['module']}.{r['data']['function']}"  # type: ignore[index]
        for r in records(directory)
        if r.get("event_type") == "function_entry"
    )


SHOW_ARGV = """
import sys

def seen(argv):
    return len(argv)

seen(sys.argv)
print(repr(sys.argv[1:]), sys.path[0])
"""


# 1. the program's command line


def test_a_script_gets_every_argument_after_its_name_and_its_directory_first_on_sys_path(
    tmp_path: Path,
) -> None:
    write(tmp_path / "sub" / "prog.py", SHOW_ARGV)
    args = ("sub/prog.py", "-q", "--level", "x", "-m", "mod", "--", "-o")
    ours = cli("run", "--level", "values", *args, cwd=tmp_path)
    plain = python(*args, cwd=tmp_path)
    assert ours.returncode == plain.returncode == 0, ours.stderr
    assert ours.stdout == plain.stdout == f"{list(args[1:])!r} {tmp_path / 'sub'}\n"
    assert returns(tmp_path / "tidescope-trace") == [8]


def test_a_double_dash_ends_tidescopes_options_and_never_reaches_the_program(
    tmp_path: Path,
) -> None:
    write(tmp_path / "prog.py", SHOW_ARGV)
    before = cli("run", "-o", "t", "--", "prog.py", "-a", cwd=tmp_path)
    after = cli("run", "-o", "t", "prog.py", "--", "-a", cwd=tmp_path)  # the old way
    assert before.stdout == after.stdout == f"['-a'] {tmp_path}\n"


def test_run_m_pytest_passes_pytests_own_options_to_it(tmp_path: Path) -> None:
    write(
        tmp_path / "test_warns.py",
        """
        import warnings

        def test_warns():
            warnings.warn("careful", UserWarning)
        """,
    )
    common = ("-m", "pytest", "-q", "-p", "no:cacheprovider", "test_warns.py")
    passed = cli("run", "-o", "t", *common, cwd=tmp_path)
    assert passed.returncode == 0 and "1 passed" in passed.stdout, passed.stdout + passed.stderr
    assert "test session starts" not in passed.stdout  # -q reached pytest
    failed = cli("run", "-o", "t", *common, "-W", "error::UserWarning", cwd=tmp_path)
    assert failed.returncode == 1 and "1 failed" in failed.stdout  # so did -W


def test_run_m_uvicorn_version_is_uvicorns(tmp_path: Path) -> None:
    ours = cli("run", "-m", "uvicorn", "--version", cwd=tmp_path)
    plain = python("-m", "uvicorn", "--version", cwd=tmp_path)
    assert ours.returncode == plain.returncode == 0, ours.stderr
    assert ours.stdout == plain.stdout and ours.stdout.startswith("Running uvicorn")


def test_run_m_a_package_from_the_current_directory_as_python_does(tmp_path: Path) -> None:
    write(tmp_path / "mypkg" / "__init__.py", "")
    write(tmp_path / "mypkg" / "helper.py", "def double(x):\n    return 2 * x\n")
    write(
        tmp_path / "mypkg" / "__main__.py",
        """
        import sys
        from mypkg.helper import double

        print(double(21), sys.argv, sys.path[0])
        """,
    )
    ours = cli("run", "-m", "mypkg", "-x", "--", "y", cwd=tmp_path)
    plain = python("-m", "mypkg", "-x", "--", "y", cwd=tmp_path)
    assert ours.returncode == plain.returncode == 0, ours.stderr
    assert ours.stdout == plain.stdout
    assert ours.stdout.endswith(f"'-x', '--', 'y'] {tmp_path}\n")
    assert returns(tmp_path / "tidescope-trace") == [42]
    attached = cli("run", "-o", "t", "-mmypkg", "-x", "--", "y", cwd=tmp_path)
    assert attached.stdout == plain.stdout
    missing = cli("run", "--level", "values", "-m", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_run_m_http_server_serves_and_stops_on_a_signal(tmp_path: Path, sig: int) -> None:
    proc = subprocess.Popen(
        [TIDESCOPE, "run", "-m", "http.server", "--bind", "127.0.0.1", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = re.search(r"port (\d+)", line)
        assert port is not None, line
        with urllib.request.urlopen(f"http://127.0.0.1:{port[1]}/", timeout=30) as response:
            assert response.status == 200
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if sig == signal.SIGINT:  # http.server catches it and exits normally
        assert proc.returncode == 0 and "Keyboard interrupt received" in out
    else:
        assert proc.returncode == -signal.SIGTERM
    assert "0 internal errors" in err.splitlines()[-1]
    (path,) = trace_files(tmp_path / "tidescope-trace")
    assert "$stats" in list(read_trace(path))[-1]  # closed, not cut


def test_run_m_gunicorn_records_its_workers_requests(tmp_path: Path) -> None:
    write(
        tmp_path / "app.py",
        """
        def greet(path):
            return b"hello " + path.encode()

        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [greet(environ["PATH_INFO"])]
        """,
    )
    import gunicorn.config

    # a recent gunicorn opens a control socket in ~/.gunicorn unless told not to
    quiet = ["--no-control-socket"] if "control_socket" in gunicorn.config.Config().settings else []
    proc = subprocess.Popen(
        [TIDESCOPE, "run", "-m", "gunicorn", "-w", "2", "-b", "127.0.0.1:0", *quiet, "app:app"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        port = None
        booted = 0
        for line in proc.stderr:  # until the master listens and both workers have booted
            if m := re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line):
                port = m[1]
            booted += "Booting worker" in line
            if port and booted == 2:
                break
        assert port is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/x", timeout=30) as response:
            assert response.read() == b"hello /x"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    (run,) = runs(tmp_path / "tidescope-trace")
    assert calls(run) == ["app.app", "app.greet"]
    # the master and the worker that served the request; the idle worker left no file
    assert len(trace_files(run)) == 2
    assert len(list(run.glob("nodes-*.jsonl"))) == 1


def test_child_processes_that_record_nothing_leave_no_files(tmp_path: Path) -> None:
    write(
        tmp_path / "crashloop.py",
        """
        import multiprocessing, os, sys

        def work(n):
            return n + 1

        def nothing():
            pass

        if __name__ == "__main__":
            for _ in range(30):  # workers that die as they start, as in a crash loop
                pid = os.fork()
                if pid == 0:
                    os._exit(3)
                os.waitpid(pid, 0)
            for method in ("spawn", "forkserver"):
                p = multiprocessing.get_context(method).Process(target=os.getpid)
                p.start()
                p.join()
            pid = os.fork()
            if pid == 0:
                work(1)
                os._exit(0)
            os.waitpid(pid, 0)
            sys.exit(work(0) - 1)
        """,
    )
    ours = cli("run", "crashloop.py", cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr
    (run,) = runs(tmp_path / "tidescope-trace")
    assert len(trace_files(run)) == 2  # the run's and the child that recorded a call
    assert len(list(run.glob("nodes-*.jsonl"))) == 2
    assert returns(run) == [1, 2]


# 2. --version, python -m tidescope, help


def test_version_from_the_command_and_from_python_m_tidescope(tmp_path: Path) -> None:
    ours = cli("--version", cwd=tmp_path)
    module = python("-m", "tidescope", "--version", cwd=tmp_path)
    assert ours.returncode == module.returncode == 0
    assert ours.stdout == module.stdout == f"tidescope {tidescope.__version__}\n"


@pytest.mark.parametrize("command", ["", "run", "export", "show", "demo", "debug"])
def test_help_is_plain_words_with_defaults_and_an_example(tmp_path: Path, command: str) -> None:
    out = python("-m", "tidescope", *command.split(), "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # as read, whatever the terminal's width
    assert "``" not in text and not re.search(r":(func|class|meth|attr|data):", text)
    assert "example" in text
    if command in ("run", "export", "show"):
        assert "(default: tidescope-trace, or output in [tool.tidescope])" in text
    if command == "run":
        assert "(default: 65536)" in text and "(default: drop_oldest)" in text
        assert "(default: calls)" in text


# 3. [tool.tidescope]

PROJECT = """
[project]
name = "demo"

[tool.tidescope]
buffer-size = 256
level = "values"
output = "traces"
"""

APP = """
def f(x):
    y = x * 2
    return y

f(4)
"""


def stats_of(directory: Path) -> dict[str, object]:
    (stats,) = [r["$stats"] for r in records(directory) if "$stats" in r]
    return stats  # type: ignore[return-value]


def test_the_nearest_pyproject_applies_to_the_command_line(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", PROJECT)
    write(tmp_path / "src" / "app.py", APP)
    ours = cli("run", "app.py", cwd=tmp_path / "src")  # found upward, as pytest finds it
    assert ours.returncode == 0, ours.stderr
    assert not (tmp_path / "src" / "tidescope-trace").exists()
    trace = tmp_path / "traces"  # relative to the pyproject.toml
    assert stats_of(trace)["size"] == 256
    assert "local_variable_snapshot" in {r.get("event_type") for r in records(trace)}  # values
    shown = cli("show", cwd=tmp_path / "src")  # show's default directory too
    assert shown.returncode == 0 and "f" in shown.stdout


def test_command_line_flags_override_the_pyproject(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", PROJECT)
    write(tmp_path / "app.py", APP)
    ours = cli(
        "run", "--buffer-size", "1024", "--level", "calls", "-o", "here", "app.py", cwd=tmp_path
    )
    assert ours.returncode == 0, ours.stderr
    assert not (tmp_path / "traces").exists()
    assert stats_of(tmp_path / "here")["size"] == 1024
    assert {r.get("event_type") for r in records(tmp_path / "here")} >= {"function_entry"}
    assert not any("snapshot" in str(r.get("event_type")) for r in records(tmp_path / "here"))


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ("buffer_size = 1000", "buffer_size"),  # out of range: not a power of two
        ('buffer_size = "big"', "buffer_size"),  # wrong type
        ("max_depth = 0", "max_depth"),
        ("bufer_size = 256", "bufer_size is not a tidescope setting"),
        ('level = "everything"', "level"),
        ('include = "app"', "include"),
        ("[tool.tidescope.nested]\nx = 1", "nested"),
    ],
)
def test_an_invalid_pyproject_setting_is_one_line_naming_the_file_and_setting(
    tmp_path: Path, table: str, named: str
) -> None:
    pyproject = write(tmp_path / "pyproject.toml", f"[tool.tidescope]\n{table}\n")
    write(tmp_path / "app.py", APP)
    for args in (("run", "app.py"), ("debug",)):
        out = cli(*args, cwd=tmp_path)
        assert out.returncode == 2 and out.stdout == ""
        (line,) = out.stderr.splitlines()
        assert line.startswith(f"tidescope: {pyproject}") and named in line
    assert not (tmp_path / "tidescope-trace").exists()


def test_start_reads_the_nearest_pyproject_and_arguments_override_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "pyproject.toml", "[tool.tidescope]\nbuffer_size = 256\nmax_items = 5\n")
    (tmp_path / "deep").mkdir()
    monkeypatch.chdir(tmp_path / "deep")
    session = tidescope.start(max_items=7)
    try:
        assert (session.config.buffer_size, session.config.max_items) == (256, 7)
    finally:
        tidescope.stop()
    write(tmp_path / "pyproject.toml", "[tool.tidescope]\nbuffer_size = 1000\n")
    with pytest.raises(tidescope.ConfigError, match=r"pyproject\.toml: \[tool\.tidescope\]"):
        tidescope.start()
    assert tidescope.active_session() is None


# 4. a directory per run


def test_each_run_has_its_own_directory_and_show_reads_the_latest_saying_which(
    tmp_path: Path,
) -> None:
    write(tmp_path / "app.py", "import sys\n\ndef f(x):\n    return x\n\nf(int(sys.argv[1]))\n")
    assert cli("run", "app.py", "1", cwd=tmp_path).returncode == 0
    assert cli("run", "app.py", "2", cwd=tmp_path).returncode == 0
    output = tmp_path / "tidescope-trace"
    first, second = runs(output)  # named by time and pid: in order
    assert re.fullmatch(r"\d{8}-\d{6}-\d+", first.name)
    assert (output / "LATEST").read_text() == f"{second.name}\n"
    assert (returns(first), returns(second), returns(output)) == ([1], [2], [2])
    assert tidescope.open_trace(output).directory == second
    latest = cli("show", "--json", cwd=tmp_path)  # no argument: the default directory
    assert latest.returncode == 0, latest.stderr
    assert (
        latest.stderr
        == f"tidescope: reading the latest run, {Path('tidescope-trace', second.name)}\n"
    )
    assert json.loads(latest.stdout)["events"] == 2  # one run's, never both
    older = cli("show", "--json", str(first), cwd=tmp_path)
    assert older.stderr == "" and json.loads(older.stdout)["events"] == 2
    exported = cli("export", "--format", "jsonl", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    lines = (second / "events.all.jsonl").read_text().splitlines()
    assert [json.loads(x)["data"].get("return_value") for x in lines] == [None, 2]


def test_without_latest_the_newest_run_is_read(tmp_path: Path) -> None:
    write(tmp_path / "app.py", "import sys\n\ndef f(x):\n    return x\n\nf(int(sys.argv[1]))\n")
    for n in ("1", "2"):
        assert cli("run", "app.py", n, cwd=tmp_path).returncode == 0
    output = tmp_path / "tidescope-trace"
    (output / "LATEST").unlink()
    (output / "LATEST").symlink_to(runs(output)[0])  # a planted link is not trusted
    assert returns(output) == [2]


def test_every_child_process_of_a_run_writes_into_the_runs_directory(tmp_path: Path) -> None:
    write(
        tmp_path / "family.py",
        """
        import multiprocessing, os

        def square(n):
            return n * n

        if __name__ == "__main__":
            for method in ("fork", "spawn", "forkserver"):
                with multiprocessing.get_context(method).Pool(1) as pool:
                    print(pool.map(square, [{"fork": 2, "spawn": 3, "forkserver": 4}[method]]))
            pid = os.fork()
            if pid == 0:
                square(5)
                os._exit(0)
            os.waitpid(pid, 0)
        """,
    )
    ours = cli("run", "family.py", cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr
    (run,) = runs(tmp_path / "tidescope-trace")
    assert returns(run) == [4, 9, 16, 25]
    assert {p.parent for p in trace_files(run)} == {run}
