"""Instructions per instrumented call, for redaction's cost (run under valgrind's callgrind).

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
        --toggle-collect='report_function_entry' --toggle-collect='report_function_exit' \
        .venv-3.11/bin/python bench/callgrind_redact.py plain 20000
    callgrind_annotate /tmp/cg.out | head

Workloads (functions rewritten by the import hook at the ``calls`` level, so arguments
reach the core as ``{name: value}`` as they do in a real run):

- ``plain``: ``f(a, b, c)`` with scalar arguments, scalar return;
- ``secret``: ``f(a, password, c)``, the same otherwise;
- ``dict``: ``f(a, b, c)`` returning ``{"x": a, "y": b, "z": c}``;
- ``none``: the loop without calls (subtract it for the per-call cost of a whole call).

Per call: the difference between two runs (10,000 and 30,000 calls) over 20,000.
"""

from __future__ import annotations

import gc
import sys

import tidescope
from tidescope.instrument import _rewrite

SOURCE = """
def plain(a, b, c):
    return a

def secret(a, password, c):
    return a

def dict_(a, b, c):
    return {"x": a, "y": b, "z": c}

def run(fn, n):
    for i in range(n):
        fn(i, "x", 1.5)

def run_none(fn, n):
    for i in range(n):
        pass
"""


def main() -> None:
    which, n = sys.argv[1], int(sys.argv[2])
    tree, _ = _rewrite.rewrite_source(SOURCE, "<bench>", "bench", "calls")
    ns: dict[str, object] = {"__name__": "bench"}
    exec(compile(tree, "<bench>", "exec", dont_inherit=True), ns)
    fn = ns[{"plain": "plain", "secret": "secret", "dict": "dict_", "none": "plain"}[which]]
    run = ns["run_none" if which == "none" else "run"]
    tidescope.start(buffer_size=1 << 16)
    gc.disable()  # a collection's cost depends on the heap, not on the call measured
    run(fn, 100)  # type: ignore[operator]  # warm the caches
    run(fn, n)  # type: ignore[operator]
    tidescope.stop()


if __name__ == "__main__":
    main()
