"""The deep snapshot on the C core (``_deep.c``) against the walk it replaces, in whole programs.

    python bench/bench_deep.py [--rounds 5] [--cache DIR]

Programs: pyperformance's richards and deltablue at small sizes (see
``bench_trace.pyperformance_programs``; the sdist is downloaded at run time). Runs,
each its own process, interleaved per round: plain ``python``; ``tidescope run --level
calls``; ``--level values``; and ``--level values`` with the C walk switched off
(``_snapshot._snap_deep`` and ``_payload_deep`` set to None before the command line
runs: every deep snapshot then takes the pure ``Snapper`` walk, as before ``_deep.c``).
Prints the median CPU time (user + system of the child) and its ratio to the plain run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_trace import child_cpu, pyperformance_programs  # noqa: E402

PROGRAMS = {"richards": "Richards().run(1)", "deltablue": "delta_blue(200)"}

WALK_OFF = (
    "import sys\n"
    "from tidescope.capture import _core, _snapshot\n"
    "_snapshot._snap_deep = _snapshot._payload_deep = None\n"
    "from tidescope.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cache = args.cache or work / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        programs = pyperformance_programs(cache, work, PROGRAMS)
        from tidescope.capture import _core

        print(f"python {sys.version.split()[0]}, tidescope core {_core.CORE_NAME}")
        out = str(work / "ts")
        runs = {
            "plain": lambda p: [py, str(p)],
            "calls": lambda p: [py, "-m", "tidescope", "run", "-o", out, str(p)],
            "values (C walk)": lambda p: [
                py, "-m", "tidescope", "run", "--level", "values", "-o", out, str(p)
            ],
            "values (pure walk)": lambda p: [
                py, "-c", WALK_OFF, "run", "--level", "values", "-o", out, str(p)
            ],
        }  # fmt: skip
        cpu: dict[str, dict[str, list[float]]] = {p: {r: [] for r in runs} for p in programs}
        for _ in range(args.rounds):
            for name, program in programs.items():
                for run, command in runs.items():
                    cpu[name][run].append(child_cpu(command(program), work))
                    shutil.rmtree(work / "ts", ignore_errors=True)
        names = [r for r in runs if r != "plain"]
        print("| program | plain CPU | " + " | ".join(names) + " |")
        print("|---|---|" + "---|" * len(names))
        for name in programs:
            plain = statistics.median(cpu[name]["plain"])
            medians = [statistics.median(cpu[name][r]) for r in names]
            cells = [f"{m:.3f} s ({m / plain:.0f}x)" for m in medians]
            print(f"| {name} | {plain:.3f} s | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
