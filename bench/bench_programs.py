"""Whole programs under every recorder: CPU time as a ratio to python, interleaved per round.

    python bench/bench_programs.py [--rounds 3] [--cache DIR] [--only richards,go]
                                   [--recorders calls,viztracer]

Programs: pyperformance's richards, deltablue, raytrace, nbody, go and chaos, each run once
at a fixed small size (see ``bench_trace.pyperformance_programs``: the sdist is downloaded
at run time, never vendored). Recorders, each its own process, interleaved per round:
plain ``python``; ``tidescope run --level calls`` and ``--level values`` (defaults
otherwise: the core the environment picks, the drain paced as ``tidescope run`` does);
VizTracer's default command line (``viztracer -o FILE prog.py``: its 1,000,000-entry ring
keeps the last entries of a longer run); ``python -m cProfile -o FILE``; ``python -m
coverage run`` (coverage's default core for the interpreter). Prints per program and
recorder the median CPU time (user + system of the child) and its ratio to the plain run,
and for tidescope the events written, dropped and bytes per event (trace files' size over
events written, read from the files' running counts).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_trace import child_cpu, pyperformance_programs  # noqa: E402

# Python module -> its workload as one call of a fixed small size (a plain run takes 0.1-0.2 s here)
PROGRAMS = {
    "richards": "Richards().run(4)",
    "deltablue": "delta_blue(4000)",
    "raytrace": "bench_raytrace(1, 80, 80, None)",
    "nbody": "bench_nbody(1, 'sun', 50000)",
    "go": "versus_cpu()",
    "chaos": (
        "import types\n"
        "class _Runner:\n"
        "    metadata = {}\n"
        "    def bench_func(self, name, func, *args):\n"
        "        func(*args)\n"
        "main(_Runner(), types.SimpleNamespace(thickness=0.25, width=64, height=64,\n"
        "     iterations=10000, filename=None, rng_seed=1234))"
    ),
}


def tidescope_counts(out: Path) -> tuple[int, int, int]:
    """Events written, dropped and bytes over every trace file under ``out``."""
    from tidescope.export.reader import tally

    written = dropped = size = 0
    for path in out.rglob("*.tstrace"):
        _header, counts, _complete = tally(path)
        written += counts["events_written"]
        dropped += counts["dropped_events"]
        size += path.stat().st_size
    return written, dropped, size


def recorders(work: Path) -> dict[str, Callable[[Path], list[str]]]:
    py = sys.executable
    bindir = Path(py).parent
    return {
        "plain": lambda p: [py, str(p)],
        "calls": lambda p: [py, "-m", "tidescope", "run", "-o", str(work / "ts"), str(p)],
        "values": lambda p: [
            py,
            "-m",
            "tidescope",
            "run",
            "--level",
            "values",
            "-o",
            str(work / "ts"),
            str(p),
        ],
        "viztracer": lambda p: [
            str(bindir / "viztracer"),
            "--quiet",
            "-o",
            str(work / "viz.json"),
            str(p),
        ],
        "cProfile": lambda p: [py, "-m", "cProfile", "-o", str(work / "prof.out"), str(p)],
        "coverage": lambda p: [
            py,
            "-m",
            "coverage",
            "run",
            f"--data-file={work / 'cov.data'}",
            str(p),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--only", default="", help="comma-separated program names")
    parser.add_argument("--recorders", default="", help="comma-separated, plain always runs")
    args = parser.parse_args()
    wanted = [p for p in args.only.split(",") if p] or list(PROGRAMS)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cache = args.cache or work / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        programs = pyperformance_programs(cache, work, {name: PROGRAMS[name] for name in wanted})
        import coverage
        import viztracer

        from tidescope.capture import _core

        print(
            f"python {sys.version.split()[0]}, tidescope core {_core.CORE_NAME}, "
            f"viztracer {viztracer.__version__}, coverage {coverage.__version__}"
        )
        runs = recorders(work)
        if args.recorders:
            keep = {"plain", *args.recorders.split(",")}
            runs = {name: command for name, command in runs.items() if name in keep}
        cpu: dict[str, dict[str, list[float]]] = {p: {r: [] for r in runs} for p in programs}
        counts: dict[str, dict[str, tuple[int, int, int]]] = {p: {} for p in programs}
        for _ in range(args.rounds):
            for name, program in programs.items():
                for recorder, command in runs.items():
                    cpu[name][recorder].append(child_cpu(command(program), work))
                    if recorder in ("calls", "values"):
                        counts[name][recorder] = tidescope_counts(work / "ts")
                        shutil.rmtree(work / "ts")
        names = [r for r in runs if r != "plain"]
        print("| program | plain CPU | " + " | ".join(names) + " |")
        print("|---|---|" + "---|" * len(names))
        for name in programs:
            plain = statistics.median(cpu[name]["plain"])
            cells = [f"{statistics.median(cpu[name][r]) / plain:.1f}x" for r in names]
            print(f"| {name} | {plain:.3f} s | " + " | ".join(cells) + " |")
        print()
        print("| program | level | events written | dropped | bytes/event |")
        print("|---|---|---|---|---|")
        for name in programs:
            for level, (written, dropped, size) in counts[name].items():
                print(
                    f"| {name} | {level} | {written} | {dropped} | {size / max(written, 1):.1f} |"
                )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
