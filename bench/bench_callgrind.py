"""Extra instructions per traced call, fib at ``calls``, against the peers (valgrind callgrind).

    python bench/bench_callgrind.py [3.11 3.12 3.13] [--small 16] [--large 22] [--src DIR]
                                    [--level values]

For each CPython (the worktree's ``.venv-3.1x`` when present, else ``python3.1x`` on PATH
or under ~/.pyenv, with ``src/`` on the path), runs ``fib(n)`` in a child under
``valgrind --tool=callgrind`` for every mode:

- ``none``: plain fib, untraced;
- ``viztracer``: plain fib under ``VizTracer(ignore_c_function=True)`` (no file saved);
- ``cprofile``: plain fib under ``cProfile.Profile``;
- ``c`` / ``pure``: fib rewritten by the import hook at ``calls`` and imported, capture on
  with ``tidescope.start()`` on that core, a ``Drain`` running in its thread: entry and
  exit with the argument, the return value and the ids are recorded and encoded into a
  trace (the final pass at stop included). ``--no-drain`` leaves the drain out: the
  report path alone, the events left in the ring.

Per mode, (instructions(large) - instructions(small)) / (calls(large) - calls(small)) is
the cost of one whole fib call with start-up cancelled out; the table gives that minus the
untraced figure: what tracing adds per call. ``--level values`` rewrites fib at ``values``
instead: each call then also reports one branch event (``if n < 2``), so the difference
from the ``calls`` figure is the cost of one value event. Instruction counts do not drift with the
machine's load. ``--src`` measures another checkout's ``src/`` (its extension built in
place) with the same interpreters, e.g. a commit before a change. The cyclic GC is off
while fib runs (a collection's cost depends on the heap, not on the call measured).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = ("none", "viztracer", "cprofile", "c", "pure")
ROOT = Path(__file__).resolve().parent.parent
FIB = "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n"


def calls(n: int) -> int:
    a, b = 0, 1  # fib(n) makes 2 * F(n + 1) - 1 calls
    for _ in range(n + 1):
        a, b = b, a + b
    return 2 * a - 1


def child(mode: str, n: int) -> None:
    """Run fib(n) in this process under ``mode``."""
    work = tempfile.mkdtemp(prefix="bench_callgrind_")
    Path(work, "benchfib.py").write_text(FIB, encoding="utf-8")
    sys.path.insert(0, work)
    stop = None
    if mode in ("c", "pure"):
        import tidescope
        from tidescope.export.drain import Drain
        from tidescope.instrument import install

        install(include="benchfib", cache=False, level=os.environ.get("BENCH_LEVEL", "calls"))
        import benchfib  # rewritten by the hook

        session = tidescope.start(buffer_size=1 << 18)
        if os.environ.get("BENCH_NO_DRAIN"):
            stop = tidescope.stop
        else:
            drain = Drain(Path(work, "trace"))
            drain.start()

            def stop() -> None:
                drain.stop(session.stop())

    else:
        import benchfib  # noqa: F401
    fib = sys.modules["benchfib"].fib
    if mode == "viztracer":
        from viztracer import VizTracer

        tracer = VizTracer(ignore_c_function=True, verbose=0, tracer_entries=1 << 18)
        tracer.start()
        stop = tracer.stop
    elif mode == "cprofile":
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        stop = prof.disable
    gc.disable()
    fib(n)
    gc.enable()
    if stop is not None:
        stop()
    shutil.rmtree(work, ignore_errors=True)


def python_for(version: str) -> tuple[str, dict[str, str]] | None:
    """The interpreter for ``version`` and the environment to run it in, or None."""
    venv = ROOT / f".venv-{version}" / "bin" / "python"
    if venv.exists():
        return str(venv), {}
    cands = [shutil.which(f"python{version}")]
    cands += [str(p) for p in Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}")]
    for c in cands:
        if c:
            return c, {"PYTHONPATH": str(ROOT / "src")}
    return None


def instructions(python: str, env: dict[str, str], mode: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        cmd += [python, __file__, "--child", mode, str(n)]
        e = {**os.environ, **env, "PYTHONHASHSEED": "0"}
        if mode in ("c", "pure"):
            e["TIDESCOPE_CORE"] = "c" if mode == "c" else "python"
        subprocess.run(cmd, check=True, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        text = Path(out).read_text(encoding="utf-8", errors="replace")
    m = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
    assert m is not None, "no totals in callgrind's output"
    return int(m.group(1))


def has_viztracer(python: str, env: dict[str, str]) -> bool:
    r = subprocess.run([python, "-c", "import viztracer"], env={**os.environ, **env}, check=False)
    return r.returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("versions", nargs="*", default=["3.11", "3.12", "3.13"])
    ap.add_argument("--small", type=int, default=16)
    ap.add_argument("--large", type=int, default=22)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--no-drain", action="store_true", help="no drain: the report path only")
    ap.add_argument("--level", default="calls", help="the rewrite's level (calls, values)")
    ap.add_argument("--src", help="measure this directory's tidescope (a src/ layout)")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    if shutil.which("valgrind") is None:
        sys.exit("bench_callgrind: valgrind is not installed")
    modes = [m for m in args.modes.split(",") if m]
    span = calls(args.large) - calls(args.small)
    print(
        f"fib({args.large}) - fib({args.small}): {span:,} calls at {args.level}; "
        "extra instructions per call"
    )
    print("| CPython | " + " | ".join(m for m in modes if m != "none") + " | untraced call |")
    print("|---" * len(modes) + "|---|")
    for version in args.versions:
        found = python_for(version)
        if found is None:
            print(f"| {version} | not found |")
            continue
        python, env = found
        if args.src:
            env = {"PYTHONPATH": str(Path(args.src).resolve())}
        if args.no_drain:
            env["BENCH_NO_DRAIN"] = "1"
        env["BENCH_LEVEL"] = args.level
        per = {}
        for mode in ["none"] + [m for m in modes if m != "none"]:
            if mode == "viztracer" and not has_viztracer(python, env):
                continue
            big = instructions(python, env, mode, args.large)
            small = instructions(python, env, mode, args.small)
            per[mode] = (big - small) / span
        base = per["none"]
        cells = [f"{per[m] - base:,.0f}" if m in per else "-" for m in modes if m != "none"]
        print(f"| {version} | " + " | ".join(cells) + f" | {base:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
