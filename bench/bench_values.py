"""CPU time of a small object-oriented program under ``tidescope run --level calls``, with
the value policy at ``ref`` (the default at calls) and ``deep`` (every call's ``self``
snapshotted in full, as before the policy), interleaved with plain python.

    .venv-3.11/bin/python bench/bench_values.py [--rounds 5] [--calls 200000]
    .venv-3.11/bin/python bench/bench_values.py --pyperformance richards   # or deltablue

Without ``--pyperformance`` it runs its own program: a class with eight attributes passed
as ``self`` through ``--calls`` method calls. With it, the benchmark's source is taken
from the pyperformance sdist (``pip download`` at run time) and run once without pyperf.
Prints each command's median CPU seconds (user + system of the child), its ratio to
python, and the trace's bytes per event.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

import tidescope

PROGRAM = """
import sys

class Body:
    def __init__(self, i):
        self.name = f"body{i}"
        self.x = float(i)
        self.y = 2.0 * i
        self.vx = 0.5
        self.vy = -0.5
        self.mass = 1.0 + i
        self.tags = ["a", "b", "c"]
        self.meta = {"id": i, "kind": "planet"}

    def step(self, dt):
        self.x = self.advance(self.x, self.vx, dt)
        self.y = self.advance(self.y, self.vy, dt)
        return self.energy()

    def advance(self, pos, v, dt):
        return pos + v * dt

    def energy(self):
        return 0.5 * self.mass * (self.vx * self.vx + self.vy * self.vy)

def main(n):
    bodies = [Body(i) for i in range(8)]
    total = 0.0
    for k in range(n // 32):
        for b in bodies:
            total += b.step(0.01)
    print(round(total, 3))

main(int(sys.argv[1]))
"""


# how each pyperformance benchmark is run once, in place of its pyperf runner
PYPERFORMANCE = {"richards": "Richards().run(1)", "deltablue": "delta_blue(100)"}


def fetch(name: str, into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
         "-d", str(into), "pyperformance"],
        check=True,
    )  # fmt: skip
    (sdist,) = into.glob("pyperformance-*.tar.gz")
    with tarfile.open(sdist) as tar:
        member = next(
            m for m in tar.getmembers()
            if m.name.endswith(f"data-files/benchmarks/bm_{name}/run_benchmark.py")
        )  # fmt: skip
        text = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
    text = text.replace("import pyperf\n", "")
    text = re.split(r"^if __name__ == .__main__.:", text, flags=re.M)[0]
    script = into / f"{name}.py"
    script.write_text(text + "\n" + PYPERFORMANCE[name] + "\n")
    return script


def cpu(cmd: list[str], cwd: Path) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, timeout=3600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--pyperformance", choices=sorted(PYPERFORMANCE))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        if args.pyperformance:
            script = str(fetch(args.pyperformance, cwd))
            argv: list[str] = []
        else:
            (cwd / "oo.py").write_text(textwrap.dedent(PROGRAM))
            script, argv = "oo.py", [str(args.calls)]
        ts = [sys.executable, "-m", "tidescope", "run", "--level", "calls"]
        cmds = {
            "python": [sys.executable, script, *argv],
            "calls, values=ref": [*ts, "-o", "ref", "--values", "ref", script, *argv],
            "calls, values=deep": [*ts, "-o", "deep", "--values", "deep", script, *argv],
        }
        os.environ["XDG_CACHE_HOME"] = str(cwd / "cache")
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(args.rounds):
            for name, cmd in cmds.items():  # interleaved: load drifts hit every command
                times[name].append(cpu(cmd, cwd))
        base = statistics.median(times["python"])
        for name, t in times.items():
            med = statistics.median(t)
            print(f"{name:22} {med:8.3f} s CPU  {med / base:7.1f}x python")
        for policy in ("ref", "deep"):
            for old in sorted((cwd / policy).glob("*.tstrace"))[:-1]:
                old.unlink()  # the last round's trace only
            size = sum(p.stat().st_size for p in (cwd / policy).glob("*.tstrace"))
            n = sum(1 for _ in tidescope.open_trace(cwd / policy).events())
            print(f"values={policy}: {n} events, {size / max(n, 1):.1f} bytes per event")


if __name__ == "__main__":
    main()
