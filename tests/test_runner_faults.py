"""`tidescope run` under output faults and planted files: the program's output and status are
those of plain python, the loss is said once, and the trace holds only whole records."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidescope.export._runs import run_directory
from tidescope.export.reader import TraceFile, read_trace, trace_files


def write(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source))
    return path


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # From 3.12 a fork beside tidescope's drain thread warns "multi-threaded": not the subject
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, check=False,
        timeout=120, env=env,
    )  # fmt: skip


def tidescope_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run("-m", "tidescope", "run", *args, cwd=cwd)


def ours_and_plain(stderr: str) -> tuple[list[str], list[str]]:
    """tidescope's own lines of ``stderr``, and the program's."""
    lines = stderr.splitlines()
    return [ln for ln in lines if ln.startswith("tidescope: ")], [
        ln for ln in lines if not ln.startswith("tidescope: ")
    ]


def assert_whole_chunks(path: Path) -> list[dict[str, Any]]:
    """Every chunk of ``path`` is whole (no damage, no torn tail); returns its records."""
    trace = TraceFile(path)
    records = list(trace.records())
    assert (trace.damaged, trace.torn) == (0, False), records[-3:]
    return records


def last_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    counts = [r["$counts"] for r in records if "$counts" in r]
    assert counts, "no $counts record"
    return counts[-1]


def summary_numbers(line: str) -> dict[str, int]:
    return {k: int(v) for v, k in re.findall(r"(\d+) (events captured|not written|dropped)", line)}


BUSY = """
import sys
{setup}
def work(i):
    return i * 2

total = 0
for i in range(200000):
    total += work(i)
print(total)
sys.stderr.write("the program's own stderr\\n")
sys.exit(3)
"""


def check_stopped_writing(
    ours: subprocess.CompletedProcess[str],
    plain: subprocess.CompletedProcess[str],
    trace: Path,
    reason: str,
) -> None:
    assert (
        (ours.stdout, ours.returncode) == (plain.stdout, plain.returncode) == ("39999800000\n", 3)
    )
    notices, program = ours_and_plain(ours.stderr)
    assert program == plain.stderr.splitlines() and "Traceback" not in ours.stderr
    (stopped,) = [n for n in notices if "stopped writing" in n]  # said once
    assert reason in stopped
    summary = notices[-1]
    assert f"not written (trace writing stopped: {reason})" in summary
    n = summary_numbers(summary)
    assert n["events captured"] + n["not written"] + n["dropped"] == 400000
    assert n["not written"] > 0
    (path,) = trace_files(trace)
    records = assert_whole_chunks(path)  # the short write was cut back: no torn record
    events = [r for r in records if "event_type" in r]
    assert len(events) == n["events captured"]
    assert last_counts(records)["events_written"] == len(events)


@pytest.mark.parametrize("sigxfsz", ["python's SIG_IGN", "SIG_DFL"])
def test_a_file_size_limit_stops_the_trace_not_the_program(tmp_path: Path, sigxfsz: str) -> None:
    # Past RLIMIT_FSIZE a write fails with EFBIG and raises SIGXFSZ, which Python ignores
    # but a program may set back to its default action: killing the process. (A pass of
    # the drain writes up to a buffer's worth, 65,536 events, about 800 kB here.)
    setup = "import resource\nresource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, 1_500_000))"
    if sigxfsz == "SIG_DFL":
        setup += "\nimport signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_DFL)"
    write(tmp_path / "busy.py", BUSY.format(setup=setup))
    ours = tidescope_run("busy.py", cwd=tmp_path)
    plain = run("busy.py", cwd=tmp_path)
    check_stopped_writing(ours, plain, tmp_path / "tidescope-trace", "File too large (EFBIG)")
    (path,) = trace_files(tmp_path / "tidescope-trace")
    assert path.stat().st_size <= 1_500_000


@pytest.fixture
def tiny_filesystem() -> Iterator[Path]:
    """A 1500 KiB tmpfs (needs root, as CI runs); skips where mounting is not permitted."""
    with tempfile.TemporaryDirectory() as mnt:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", mnt],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
        try:
            yield Path(mnt)
        finally:
            subprocess.run(["umount", mnt], check=True)


def test_a_full_disk_stops_the_trace_not_the_program(tmp_path: Path, tiny_filesystem: Path) -> None:
    write(tmp_path / "busy.py", BUSY.format(setup=""))
    trace = tiny_filesystem / "trace"
    ours = tidescope_run("-o", str(trace), "busy.py", cwd=tmp_path)
    plain = run("busy.py", cwd=tmp_path)
    check_stopped_writing(ours, plain, trace, "No space left on device (ENOSPC)")


def test_the_output_directory_deleted_mid_run_changes_nothing_for_the_program(
    tmp_path: Path,
) -> None:
    write(
        tmp_path / "cleaner.py",
        """
        import os, shutil, sys

        def work(i):
            return i + 1

        print(sum(work(i) for i in range(100)), flush=True)
        shutil.rmtree(sys.argv[1], ignore_errors=True)
        pid = os.fork()
        if pid == 0:
            print("child", sum(work(i) for i in range(100)), flush=True)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("parent", os.waitstatus_to_exitcode(status), work(1))
        sys.exit(5)
        """,
    )
    trace = tmp_path / "tidescope-trace"
    ours = tidescope_run("cleaner.py", str(trace), cwd=tmp_path)
    plain = run("cleaner.py", str(trace), cwd=tmp_path)
    assert (ours.stdout, ours.returncode) == (plain.stdout, plain.returncode)
    assert plain.returncode == 5
    notices, program = ours_and_plain(ours.stderr)
    assert program == plain.stderr.splitlines() == []
    assert any("cannot create" in n and "(ENOENT)" in n for n in notices)  # the child's file
    assert any("node table not written" in n for n in notices)
    summary = notices[-1]
    assert "not written (trace writing stopped: the trace file was deleted" in summary
    assert summary_numbers(summary)["events captured"] == 0


def test_the_output_directory_made_read_only_mid_run_changes_nothing_for_the_program(
    tmp_path: Path,
) -> None:
    # Root ignores permission bits, so read-only means a read-only bind mount over it.
    probe = tmp_path / "probe"
    probe.mkdir()
    mounted = subprocess.run(
        ["mount", "--bind", "-o", "ro", str(probe), str(probe)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {mounted.stderr.strip()}")
    subprocess.run(["umount", str(probe)], check=True)
    write(
        tmp_path / "freezer.py",
        """
        import os, subprocess, sys

        def work(i):
            return i + 1

        print(sum(work(i) for i in range(100)), flush=True)
        d = sys.argv[1]  # only tidescope made it: plain python's mount fails, silently
        subprocess.run(["mount", "--bind", "-o", "ro", d, d], capture_output=True)
        pid = os.fork()
        if pid == 0:
            print("child", work(1), flush=True)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("parent", os.waitstatus_to_exitcode(status), work(2))
        sys.exit(6)
        """,
    )
    trace = tmp_path / "tidescope-trace"
    plain = run("freezer.py", str(trace), cwd=tmp_path)  # first: no directory to mount yet
    try:
        ours = tidescope_run("freezer.py", str(trace), cwd=tmp_path)
    finally:
        subprocess.run(["umount", str(trace)], capture_output=True, check=False)
    assert (ours.stdout, ours.returncode) == (plain.stdout, plain.returncode)
    assert plain.returncode == 6
    notices, program = ours_and_plain(ours.stderr)
    assert program == plain.stderr.splitlines() == []
    assert any("cannot create" in n and "(EROFS)" in n for n in notices)  # the child's file
    assert any("node table not written" in n and "(EROFS)" in n for n in notices)
    summary = notices[-1]  # the parent's file was open before: all of it is there
    assert "not written" not in summary and "202 events captured" in summary
    (path,) = trace_files(trace)
    assert "$stats" in list(read_trace(path))[-1]


def test_a_program_that_changes_directory_keeps_its_trace_in_the_output_directory(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write(
        tmp_path / "mover.py",
        """
        import os, sys

        def work(i):
            return i * 3

        os.chdir(sys.argv[1])
        pid = os.fork()
        if pid == 0:
            work(7)
            os._exit(0)
        os.waitpid(pid, 0)
        print(work(2))
        """,
    )
    ours = tidescope_run("mover.py", str(elsewhere), cwd=tmp_path)
    plain = run("mover.py", str(elsewhere), cwd=tmp_path)
    assert (ours.stdout, ours.returncode) == (plain.stdout, plain.returncode) == ("6\n", 0)
    assert ours_and_plain(ours.stderr)[1] == []
    assert not (elsewhere / "tidescope-trace").exists()
    trace = tmp_path / "tidescope-trace"
    returns = sorted(
        r["data"]["return_value"]
        for path in trace_files(trace)
        for r in read_trace(path)
        if r.get("event_type") == "function_exit"
    )
    assert returns == [6, 21]
    assert list(run_directory(trace).glob("nodes-*.jsonl"))


def test_a_program_that_closes_stdout_and_stderr_keeps_its_exit_status(tmp_path: Path) -> None:
    write(
        tmp_path / "closer.py",
        """
        import os, sys

        def work(i):
            return i

        print("before", flush=True)
        os.close(1)
        os.close(2)
        work(1)
        pid = os.fork()
        if pid == 0:
            work(2)  # the child's trace file must not land on descriptor 1 or 2
            seen = []
            for fd in (1, 2):
                try:
                    os.fstat(fd)
                    seen.append("open")
                except OSError:
                    seen.append("closed")
            with open(sys.argv[1], "w") as fh:
                fh.write(" ".join(seen))
            os._exit(0)
        os.waitpid(pid, 0)
        sys.exit(4)
        """,
    )
    ours = tidescope_run("closer.py", "ours.txt", cwd=tmp_path)
    plain = run("closer.py", "plain.txt", cwd=tmp_path)
    assert (ours.stdout, ours.returncode) == (plain.stdout, plain.returncode) == ("before\n", 4)
    assert ours.stderr == plain.stderr == ""
    assert (tmp_path / "ours.txt").read_text() == (tmp_path / "plain.txt").read_text()
    assert (tmp_path / "plain.txt").read_text() == "closed closed"
    files = trace_files(tmp_path / "tidescope-trace")
    assert len(files) == 2 and all("$stats" in list(read_trace(p))[-1] for p in files)


def test_planted_symlinks_are_never_followed_and_the_trace_is_still_recorded(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    missing = tmp_path / "created-through-a-link"
    out = tmp_path / "shared"
    out.mkdir()
    write(tmp_path / "app.py", "def f(x):\n    return x + 1\n\nprint(f(1))\n")
    trap = tmp_path / "trap"
    # tidescope's pid and start time are what the attacker guesses: a run directory planted
    # for each second of the next half minute (a link to a directory of links to the
    # victims) and LATEST, then tidescope exec'd in this process
    write(
        tmp_path / "plant.py",
        f"""
        import os, sys, time
        pid = os.getpid()
        out, trap = {str(out)!r}, {str(trap)!r}
        os.mkdir(trap)
        os.symlink({str(victim)!r}, os.path.join(trap, f"events-{{pid}}.tstrace"))
        os.symlink({str(missing)!r}, os.path.join(trap, f"nodes-{{pid}}.jsonl"))
        os.symlink({str(victim)!r}, os.path.join(trap, f".tidescope-probe-{{pid}}"))
        now = time.time()
        for s in range(-1, 30):
            name = time.strftime("%Y%m%d-%H%M%S", time.localtime(now + s)) + f"-{{pid}}"
            os.symlink(trap, os.path.join(out, name))
        os.symlink({str(victim)!r}, os.path.join(out, "LATEST"))
        print(pid, flush=True)
        os.execv(sys.executable, [sys.executable, "-m", "tidescope", "run", "-o", out, "app.py"])
        """,
    )
    proc = run("plant.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pid, printed = proc.stdout.splitlines()
    assert printed == "2"
    assert victim.read_text() == "precious\n" and not missing.exists()
    assert len(list(trap.iterdir())) == 3  # nothing written through the planted links
    latest = out / "LATEST"
    assert not latest.is_symlink() and stat.S_IMODE(latest.stat().st_mode) == 0o600
    run_dir = out / latest.read_text().strip()
    assert run_dir.name.endswith(f"-{pid}-1") and (out / run_dir.name[:-2]).is_symlink()
    assert not run_dir.is_symlink() and stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    (path,) = trace_files(out)
    assert path == run_dir / f"events-{pid}.tstrace"
    exits = [r for r in read_trace(path) if r.get("event_type") == "function_exit"]
    assert [e["data"]["return_value"] for e in exits] == [2]
    assert (run_dir / f"nodes-{pid}.jsonl").is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((run_dir / f"nodes-{pid}.jsonl").stat().st_mode) == 0o600


def test_trace_files_are_private_in_a_private_directory(tmp_path: Path) -> None:
    write(tmp_path / "app.py", "def f(x):\n    return x\n\nf(1)\n")
    proc = tidescope_run("-o", "new/trace", "app.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trace = tmp_path / "new" / "trace"
    (run_dir,) = [p for p in trace.iterdir() if p.is_dir()]
    assert stat.S_IMODE(trace.stat().st_mode) == stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((trace / "LATEST").stat().st_mode) == 0o600
    files = list(run_dir.iterdir())
    assert {p.name.split("-")[0] for p in files} == {"events", "nodes"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)


def test_a_trace_cut_by_sigkill_still_says_how_many_events_were_dropped(tmp_path: Path) -> None:
    write(
        tmp_path / "dropper.py",
        """
        import time

        def f(i):
            return i

        for i in range(20000):
            f(i)
        print("ready", flush=True)
        while True:
            time.sleep(0.05)
        """,
    )
    proc = subprocess.Popen(
        # drop_newest: under drop_oldest the C core's writers wait for the drain's passes
        [sys.executable, "-m", "tidescope", "run", "--buffer-size", "64",
         "--overflow-strategy", "drop_newest", "dropper.py"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        trace = tmp_path / "tidescope-trace"
        deadline = time.monotonic() + 60  # a bound on waiting, not a measurement
        while time.monotonic() < deadline:  # until the drain has written the final counts
            for p in trace_files(trace):
                c = TraceFile(p).counts
                if c["events_written"] + c["dropped_events"] == 40000:
                    break
            else:
                time.sleep(0.02)
                continue
            break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (path,) = trace_files(tmp_path / "tidescope-trace")
    records = assert_whole_chunks(path)
    assert not any("$stats" in r for r in records)
    counts = last_counts(records)
    assert counts["dropped_events"] > 0 and counts["internal_errors"] == 0
    assert counts["events_written"] == sum("event_type" in r for r in records)
    assert counts["events_written"] + counts["dropped_events"] == 40000
