"""``tidescope query [DIR] SQL``: run SQL over a trace's index; a table, JSON lines or CSV."""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO, Any

__all__ = ["add_parser"]

_CELL_LIMIT = 80  # characters of a value shown in a table cell (JSON and CSV keep it whole)


def add_parser(sub: Any) -> None:
    """Add the ``query`` subcommand to the ``tidescope`` parser's subparsers."""
    query = sub.add_parser(
        "query",
        help="run SQL over a trace directory (indexed on first use; needs tidescope[query])",
        description="Run SQL over a trace directory. Tables: calls, events, values, nodes, "
        "sources, files, stats, meta (see docs/query.md).",
    )
    query.add_argument(
        "directory",
        nargs="?",
        help="the output directory (its latest run is read) or a run's directory"
        " (default: tidescope-trace, or output in [tool.tidescope])",
    )
    query.add_argument("sql", help="the SQL to run")
    form = query.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="one JSON object per row")
    form.add_argument("--csv", action="store_true", help="CSV with a header row")
    query.add_argument("--rebuild", action="store_true", help="rebuild the index first")
    query.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the ``query`` subcommand; bad input is one line on stderr and status 2."""
    from tidescope.cli import _default_directory, _fail, _trace_dir  # noqa: PLC0415
    from tidescope.export.reader import TraceError  # noqa: PLC0415
    from tidescope.query import QueryError, open_index  # noqa: PLC0415

    try:
        from tidescope.query import _duckdb  # noqa: PLC0415

        _duckdb()
        directory = _trace_dir(args.directory or _default_directory())
        with open_index(directory, rebuild=args.rebuild) as index:
            names, rows = index.sql(args.sql)
    except (QueryError, TraceError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write the index in '{args.directory}': {exc.strerror or exc}")
    out = sys.stdout
    if args.json:
        write_json(names, rows, out)
    elif args.csv:
        write_csv(names, rows, out)
    else:
        write_table(names, rows, out)
    return 0


def write_json(names: list[str], rows: list[tuple[Any, ...]], out: IO[str]) -> None:
    """One JSON object per row (a value JSON cannot hold is written as its text)."""
    for row in rows:
        out.write(json.dumps(dict(zip(names, row, strict=True)), default=str) + "\n")


def write_csv(names: list[str], rows: list[tuple[Any, ...]], out: IO[str]) -> None:
    """A header row, then the rows (NULL as an empty field)."""
    import csv  # noqa: PLC0415

    w = csv.writer(out, lineterminator="\n")
    w.writerow(names)
    w.writerows(rows)


def write_table(names: list[str], rows: list[tuple[Any, ...]], out: IO[str]) -> None:
    """The rows as an aligned text table: numbers to the right, NULL as an empty cell,
    a long value cut with an ellipsis, then a line with the number of rows."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(n) for n in names]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    right = [
        bool(rows) and all(type(r[i]) in (int, float) or r[i] is None for r in rows)
        for i in range(len(names))
    ]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out.write(line(names) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write(line(row) + "\n")
    out.write(f"({len(rows)} row{'' if len(rows) == 1 else 's'})\n")


def _cell(v: Any) -> str:
    if v is None:
        return ""
    text = v if isinstance(v, str) else str(v)
    text = text.replace("\n", "\\n").replace("\t", " ")
    return text if len(text) <= _CELL_LIMIT else text[: _CELL_LIMIT - 1] + "…"
