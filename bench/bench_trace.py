"""Bytes per event on disk and drops under ``tidescope run`` with default settings, against
VizTracer's bytes per entry, on fib(27), the mixed workload and pyperformance's richards,
deltablue and raytrace.

    python bench/bench_trace.py [--rounds 3] [--cache DIR]

pyperformance's sdist is downloaded at run time (``pip download --no-deps --no-binary
:all: pyperformance`` into ``--cache``, a temporary directory by default); it is not
vendored. Each benchmark's ``run_benchmark.py`` is copied without its ``__main__`` block
(pyperf's runner) and ends with a direct call of its workload at a fixed small size; a stub
``pyperf`` module gives raytrace the ``perf_counter`` it reads. Every program runs as its
own process, interleaved per round: plain ``python``, ``tidescope run`` (defaults: calls
level, the core the environment picks) and ``viztracer`` (defaults, with
``--tracer_entries`` large enough to keep every entry). Prints, per program: tidescope's
events written and dropped and bytes per event (the trace file's size over its events),
VizTracer's entries and bytes per entry (the JSON file's size over ``traceEvents``), and
the CPU time of each process (user + system of the child, median of the rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PYPERFORMANCE = {  # benchmark -> its workload call, a fixed small size
    "richards": "Richards().run(1)",
    "deltablue": "delta_blue(100)",
    "raytrace": "bench_raytrace(1, 40, 40, None)",
}
FIB = """
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

print(fib(27))
"""
VIZ_ENTRIES = 20_000_000


def pyperformance_programs(
    cache: Path, out: Path, calls: dict[str, str] = PYPERFORMANCE
) -> dict[str, Path]:
    """The benchmarks named in ``calls`` as plain programs in ``out``, each ending with its
    workload call, from the sdist (downloaded once into ``cache``)."""
    sdists = sorted(cache.glob("pyperformance-*.tar.gz"))
    if not sdists:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
             ":all:", "pyperformance", "-d", str(cache)],
            check=True,
        )  # fmt: skip
        sdists = sorted(cache.glob("pyperformance-*.tar.gz"))
    programs = {}
    with tarfile.open(sdists[-1]) as tar:
        for name, call in calls.items():
            (member,) = [
                m for m in tar.getmembers()
                if m.name.endswith(f"/data-files/benchmarks/bm_{name}/run_benchmark.py")
            ]  # fmt: skip
            source = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
            body = re.split(r"\nif __name__ == ['\"]__main__['\"]:", source)[0]
            path = out / f"{name}.py"
            path.write_text(f"{body}\n\n{call}\n")
            programs[name] = path
    (out / "pyperf.py").write_text("from time import perf_counter  # noqa: F401\n")
    print(f"pyperformance: {sdists[-1].name}")
    return programs


def child_cpu(cmd: list[str], cwd: Path) -> float:
    """Run ``cmd``; the CPU seconds (user + system) it took."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def tidescope_round(program: Path, work: Path) -> dict[str, Any]:
    out = work / f"ts-{program.stem}"
    cmd = [sys.executable, "-m", "tidescope", "run", "-o", str(out), str(program)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=work, check=True, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    got = re.search(r"tidescope: (\d+) events captured, (\d+) dropped", proc.stderr)
    assert got is not None, proc.stderr
    (trace,) = out.glob("events-*.tstrace")
    events, dropped = int(got[1]), int(got[2])
    size = trace.stat().st_size
    for f in out.iterdir():
        f.unlink()
    out.rmdir()
    return {
        "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "events": events,
        "dropped": dropped,
        "bytes": size,
    }


def viztracer_round(program: Path, work: Path) -> dict[str, Any]:
    out = work / f"viz-{program.stem}.json"
    viz = Path(sys.executable).with_name("viztracer")
    cmd = [str(viz), "--quiet", "--tracer_entries", str(VIZ_ENTRIES), "-o", str(out), str(program)]
    cpu = child_cpu(cmd, work)
    size = out.stat().st_size
    entries = len(json.loads(out.read_text())["traceEvents"])
    out.unlink()
    return {"cpu": cpu, "entries": entries, "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cache = args.cache or work / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        programs = {"fib(27)": work / "fib.py"}
        programs["fib(27)"].write_text(FIB)
        mixed = work / "mixed.py"
        mixed.write_text((HERE / "macro_workloads.py").read_text() + "\n\nprint(mixed(20000))\n")
        programs["mixed"] = mixed
        programs.update(pyperformance_programs(cache, work))
        from tidescope.capture import _core

        print(f"python {sys.version.split()[0]}, tidescope core {_core.CORE_NAME}")
        rows: dict[str, dict[str, list[Any]]] = {p: {} for p in programs}
        for _ in range(args.rounds):
            for name, program in programs.items():
                row = rows[name]
                row.setdefault("plain", []).append(child_cpu([sys.executable, str(program)], work))
                row.setdefault("ts", []).append(tidescope_round(program, work))
                row.setdefault("viz", []).append(viztracer_round(program, work))
        print(
            "| program | events written | dropped | bytes/event | VizTracer entries "
            "| VizTracer bytes/entry | CPU plain | CPU tidescope run | CPU viztracer |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for name, row in rows.items():
            ts, viz = row["ts"], row["viz"]
            bpe = statistics.median(r["bytes"] / r["events"] for r in ts)
            vbpe = statistics.median(r["bytes"] / r["entries"] for r in viz)
            plain = statistics.median(row["plain"])
            tcpu = statistics.median(r["cpu"] for r in ts)
            vcpu = statistics.median(r["cpu"] for r in viz)
            print(
                f"| {name} | {'/'.join(str(r['events']) for r in ts)} "
                f"| {'/'.join(str(r['dropped']) for r in ts)} | {bpe:.2f} "
                f"| {viz[0]['entries']} | {vbpe:.1f} | {plain:.2f} s "
                f"| {tcpu:.2f} s ({tcpu / plain:.1f}x) | {vcpu:.2f} s ({vcpu / plain:.1f}x) |"
            )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
