"""``tidescope.instrument``: the AST-rewriting import hook that injects the ``report_*`` calls.

Quick start (what ``tidescope run`` does)::

    from tidescope import instrument

    instrument.install(level="values", main_path="app.py")  # rewrites imports from now on
    code, records = instrument.instrument_main("app.py", level="values")
    exec(code, {"__name__": "__main__", "__file__": "app.py"})
    table = instrument.node_table()   # ast_node_id -> file, span, type, parent, source

Levels: ``calls`` (entry and exit of functions, methods, lambdas, coroutines and
generators), ``values`` (adds variable snapshots, branches, loop iterations, ``match``) and
``lines`` (adds line events). How each construct is rewritten, and why the program's
semantics do not change, is told in ``tidescope.instrument._rewrite``; node ids in
``tidescope.instrument._nodes``; the hook, its selection and failing open in
``tidescope.instrument._hook``; the cache in ``tidescope.instrument._cache``.
"""

from __future__ import annotations

from tidescope.instrument._hook import Installation, install, instrument_main, stats, uninstall
from tidescope.instrument._nodes import NodeRecord, node_table
from tidescope.instrument._rewrite import LEVELS, rewrite_source

__all__ = [
    "LEVELS",
    "Installation",
    "NodeRecord",
    "install",
    "instrument_main",
    "node_table",
    "rewrite_source",
    "stats",
    "uninstall",
]
