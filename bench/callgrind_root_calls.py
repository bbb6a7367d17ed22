"""Instructions per root call (nothing open in its context) of the C core's entry report.

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
        --toggle-collect='report_function_entry' .venv-3.11/bin/python \
        bench/callgrind_root_calls.py 10000     (then 30000; per call: the difference / 20000)

A thread's first root call notes its name (once per thread); every root call compares a
thread-local with the thread state's id (changes/show12-results.md).
"""

from __future__ import annotations

import gc
import sys

import tidescope
from tidescope.capture import _core

n = int(sys.argv[1])
session = tidescope.start(buffer_size=1 << 16)
enter, leave = _core.report_function_entry, _core.report_function_exit
gc.disable()
for _ in range(n):  # root calls: nothing open in this context
    leave(enter("m", "f", None), None)
session.stop()
print(_core.CORE_NAME)
