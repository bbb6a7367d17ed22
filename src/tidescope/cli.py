"""The ``tidescope`` command: run, export, show, demo and debug."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main"]


def _demo_program() -> None:
    from tidescope.capture import runtime  # noqa: PLC0415

    def add(cart: dict[str, int], item: str, qty: int) -> int:
        cid = runtime.report_function_entry("demo.shop", "add", [cart, item, qty])
        try:
            cart[item] = cart.get(item, 0) + qty
            runtime.report_ast_variable_snapshot(cid, {"cart": cart}, 3, "demo.shop:add:3:8:Assign")
            if qty <= 0:
                raise ValueError(f"quantity must be positive, got {qty}")
            total = sum(cart.values())
        except Exception as exc:
            runtime.report_function_exit(cid, exc, exit_reason="exception")
            raise
        runtime.report_function_exit(cid, total)
        return total

    def checkout(items: list[tuple[str, int]]) -> dict[str, int]:
        cid = runtime.report_function_entry("demo.shop", "checkout", [items])
        cart: dict[str, int] = {}
        for item, qty in items:
            try:
                add(cart, item, qty)
            except ValueError as exc:
                runtime.report_error(exc)
        runtime.report_function_exit(cid, cart)
        return cart

    checkout([("apple", 2), ("pear", 0), ("plum", 5)])


def _demo(args: argparse.Namespace) -> int:
    from tidescope.testing import capture  # noqa: PLC0415

    with capture(buffer_size=1024) as cap:
        _demo_program()
    for ev in cap.events():
        if args.json:
            print(json.dumps(ev.to_dict()))
        else:
            d = ev.to_dict()
            print(
                f"{d['event_type']:<24} call={d['call_id']:<10} parent={d['parent_id']!s:<10} "
                f"{json.dumps(d['data'])[:110]}"
            )
    stats = cap.stats()
    print(
        f"-- {stats['total_writes']} events captured, {stats['dropped_events']} dropped, "
        f"{stats['internal_errors']} internal errors, core: {stats['core']}"
    )
    return 0


def _debug(args: argparse.Namespace) -> int:
    import tidescope  # noqa: PLC0415
    from tidescope.config import Config  # noqa: PLC0415

    info: dict[str, Any] = {
        "version": tidescope.__version__,
        "python": sys.version.split()[0],
        **tidescope.core_info(),
    }
    try:
        info["config"] = {k: v for k, v in vars_of(Config.load()).items()}
    except Exception as exc:
        info["config_error"] = str(exc)
    print(json.dumps(info, indent=2))
    return 0


def vars_of(cfg: Any) -> dict[str, Any]:
    """A Config's settings as a dict."""
    import dataclasses  # noqa: PLC0415

    return dataclasses.asdict(cfg)


def _run(args: argparse.Namespace) -> int:
    from tidescope.config import Config, ConfigError  # noqa: PLC0415
    from tidescope.runner import RunOptions, UsageError, run  # noqa: PLC0415

    argv = list(args.argv)
    if args.module is None and not argv:
        _fail("tidescope run needs a script or -m module (see tidescope run --help)")
    try:
        config = Config.load(buffer_size=args.buffer_size, overflow_strategy=args.overflow_strategy)
    except ConfigError as exc:
        _fail(str(exc))
    options = RunOptions(
        script=None if args.module is not None else argv[0],
        module=args.module,
        argv=argv if args.module is not None else argv[1:],
        output=args.output,
        level=args.level,
        include=args.include,
        exclude=args.exclude,
        config=config,
    )
    try:
        return run(options)
    except UsageError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    print(f"tidescope: {message}", file=sys.stderr)
    raise SystemExit(2)


def _trace_dir(directory: str) -> str:
    from tidescope.export.jsonl import trace_files  # noqa: PLC0415

    if not os.path.isdir(directory):
        _fail(f"no trace directory '{directory}'")
    if not trace_files(directory):
        _fail(f"'{directory}' holds no trace files (events-*.jsonl)")
    return directory


def _export(args: argparse.Namespace) -> int:
    from tidescope.export import chrome, jsonl  # noqa: PLC0415

    directory = _trace_dir(args.directory)
    if args.format == "chrome":
        target = args.output or str(chrome.default_output(directory))
        with open(target, "w", encoding="utf-8") as out:
            n = chrome.write_chrome(directory, out)
    elif args.format == "jsonl":
        target = args.output or os.path.join(directory, "events.all.jsonl")
        n = 0
        with open(target, "w", encoding="utf-8") as out:
            for path in jsonl.trace_files(directory):
                for rec in jsonl.read_trace(path):
                    if "$header" not in rec and "$stats" not in rec:
                        out.write(json.dumps(rec) + "\n")
                        n += 1
    else:
        target = args.output or os.path.join(directory, "nodes.all.jsonl")
        n = 0
        with open(target, "w", encoding="utf-8") as out:
            for path in sorted(Path(directory).glob("nodes-*.jsonl")):
                for line in path.read_text(encoding="utf-8").splitlines():
                    out.write(line + "\n")
                    n += 1
    print(f"tidescope: {n} records -> {target}", file=sys.stderr)
    return 0


def _show(args: argparse.Namespace) -> int:
    from tidescope.export.summary import format_summary, summarize  # noqa: PLC0415

    summary = summarize(_trace_dir(args.directory))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="tidescope", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run a program like python does, recording it",
        usage="tidescope run [options] (script.py | -m module) [args ...]",
    )
    run.add_argument("-m", dest="module", help="run a library module as a script")
    run.add_argument("-o", "--output", default="tidescope-trace", help="trace directory")
    run.add_argument("--level", choices=("calls", "values", "lines"), default="calls")
    run.add_argument("--include", action="append", default=[], help="module pattern to record")
    run.add_argument("--exclude", action="append", default=[], help="module pattern to skip")
    run.add_argument("--buffer-size", type=int, help="events the ring buffer holds")
    run.add_argument("--overflow-strategy", choices=("drop_oldest", "drop_newest", "block"))
    run.add_argument("argv", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    run.set_defaults(func=_run)
    export = sub.add_parser("export", help="convert a trace directory")
    export.add_argument("directory")
    export.add_argument("--format", choices=("chrome", "jsonl", "nodes"), default="chrome")
    export.add_argument("-o", "--output", help="output file")
    export.set_defaults(func=_export)
    show = sub.add_parser("show", help="summarise a trace directory")
    show.add_argument("directory")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_show)
    demo = sub.add_parser("demo", help="record a small program and print its events")
    demo.add_argument("--json", action="store_true", help="one JSON event per line")
    demo.set_defaults(func=_demo)
    debug = sub.add_parser("debug", help="show the version, the core in use and why")
    debug.set_defaults(func=_debug)
    args = parser.parse_args(argv)
    return int(args.func(args))
