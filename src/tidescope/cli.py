"""The ``tidescope`` command: run, export, show, demo and debug."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

if TYPE_CHECKING:
    from tidescope.config import Config

__all__ = ["main"]

_T = TypeVar("_T")


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

    with capture(_settings(buffer_size=1024)) as cap:
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

    info: dict[str, Any] = {
        "version": tidescope.__version__,
        "python": sys.version.split()[0],
        **tidescope.core_info(),
        "config": vars_of(_settings()),
    }
    print(json.dumps(info, indent=2))
    return 0


def vars_of(cfg: Any) -> dict[str, Any]:
    """A Config's settings as a dict."""
    import dataclasses  # noqa: PLC0415

    return dataclasses.asdict(cfg)


def _run(args: argparse.Namespace) -> int:
    from tidescope.runner import RunOptions, UsageError, run  # noqa: PLC0415

    argv = list(args.argv)
    if args.module is None and not argv:
        _fail("tidescope run needs a script or -m module (see tidescope run --help)")
    config = _settings(
        buffer_size=args.buffer_size,
        overflow_strategy=args.overflow_strategy,
        values=args.values,
        deep_modules=None if args.deep_modules is None else tuple(args.deep_modules),
        otlp_endpoint=args.otlp_endpoint,
    )
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


def _settings(**arguments: Any) -> Config:
    """The Config of ``arguments`` and the environment; a bad setting ends the command."""
    from tidescope.capture import _core  # noqa: PLC0415
    from tidescope.config import Config, ConfigError  # noqa: PLC0415

    if _core.CORE_ERROR is not None:
        _fail(_core.CORE_ERROR)
    try:
        return Config.load(**arguments)
    except ConfigError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    """Say ``message`` as one line on stderr and end with status 2 (bad input or settings)."""
    print(f"tidescope: {message}", file=sys.stderr)
    raise SystemExit(2)


def _trace_dir(directory: str) -> str:
    from tidescope.export.reader import trace_files  # noqa: PLC0415

    if not os.path.isdir(directory):
        _fail(f"no trace directory '{directory}'")
    if not trace_files(directory):
        _fail(f"'{directory}' holds no trace files (events-*.tstrace)")
    return directory


def _export(args: argparse.Namespace) -> int:
    from tidescope.export import chrome, jsonl  # noqa: PLC0415

    if args.format == "otlp":
        from tidescope.export._otlp_command import export_otlp  # noqa: PLC0415

        return export_otlp(_trace_dir(args.directory), args.endpoint, _settings(), _fail, _reading)
    directory = _trace_dir(args.directory)
    damage: list[str] = []
    records = _records(directory, damage)
    if args.format == "chrome":
        target = args.output or str(chrome.default_output(directory))
        with _output(target, "w") as out:
            n = _reading(lambda: chrome.write_records(records, out))
    elif args.format == "perfetto":
        from tidescope.export import perfetto  # noqa: PLC0415

        target = args.output or str(perfetto.default_output(directory))
        try:
            named = itertools.chain(perfetto.headers(directory), records)
            n, _ = _reading(lambda: perfetto.write_file(named, target))
        except OSError as exc:
            _fail(f"cannot write '{target}': {exc.strerror or exc}")
    elif args.format == "jsonl":
        target = args.output or os.path.join(directory, "events.all.jsonl")
        with _output(target, "w") as out:
            n = _reading(lambda: jsonl.write_jsonl(records, out))
    else:
        target = args.output or os.path.join(directory, "nodes.all.jsonl")
        with _output(target, "wb") as out:
            n = _reading(lambda: _copy_lines(sorted(Path(directory).glob("nodes-*.jsonl")), out))
    for line in damage:
        print(f"tidescope: {line}", file=sys.stderr)
    print(f"tidescope: {n} records -> {target}", file=sys.stderr)
    return 0


def _records(directory: str, damage: list[str]) -> Iterator[dict[str, Any]]:
    """Every event of a trace directory; a file's damaged chunks are told in ``damage``."""
    from tidescope.export.reader import read_trace, trace_files  # noqa: PLC0415

    for path in trace_files(directory):
        skipped: list[dict[str, Any]] = []
        for rec in read_trace(path):
            if "event_type" in rec:
                yield rec
            elif "$damaged" in rec:
                skipped.append(rec["$damaged"])
        if skipped:
            first = skipped[0]
            damage.append(
                f"{path}: {len(skipped)} damaged chunk(s) skipped"
                f" (first: at byte {first['offset']}, {first['reason']})"
            )


def _copy_lines(paths: list[Path], out: IO[bytes]) -> int:
    """Copy files to ``out`` a chunk at a time, a newline after each; returns the lines."""
    n = 0
    for path in paths:
        last = b"\n"
        for chunk in _chunks(path):
            out.write(chunk)
            n += chunk.count(b"\n")
            last = chunk[-1:]
        if last != b"\n":
            out.write(b"\n")
            n += 1
    return n


def _chunks(path: Path) -> Iterator[bytes]:
    from tidescope.export.reader import TraceError  # noqa: PLC0415

    try:
        with open(path, "rb") as src:
            while chunk := src.read(1 << 20):
                yield chunk
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _output(target: str, mode: str) -> Iterator[Any]:
    """``target`` open for writing; a failure to create or write it ends the command.

    A regular file is written as a new private file beside it (never through a symlink
    planted at ``target``) and renamed over it when complete, so a failed export leaves no
    partial file; a device or pipe the user names (``/dev/stdout``) is written as it is.
    """
    import contextlib  # noqa: PLC0415
    import stat  # noqa: PLC0415

    from tidescope.export._output import create_file  # noqa: PLC0415

    encoding = None if "b" in mode else "utf-8"
    tmp: Path | None = None
    try:
        try:
            special = not stat.S_ISREG(os.stat(target).st_mode)
        except FileNotFoundError:
            special = False
        if special:
            with open(target, mode, encoding=encoding) as out:
                yield out
            return
        path = Path(target)
        fd, tmp = create_file(path.with_name(f".{path.name}.tmp"))
        with os.fdopen(fd, mode, encoding=encoding) as out:
            yield out
        os.replace(tmp, path)
        tmp = None
    except BrokenPipeError:
        raise
    except OSError as exc:
        _fail(f"cannot write '{target}': {exc.strerror or exc}")
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _reading(work: Callable[[], _T]) -> _T:
    """Run ``work``; a trace that cannot be read ends the command with one line."""
    from tidescope.export.reader import TraceError  # noqa: PLC0415

    try:
        return work()
    except TraceError as exc:
        _fail(str(exc))


def _show(args: argparse.Namespace) -> int:
    from tidescope.export.summary import format_summary, summarize  # noqa: PLC0415

    directory = _trace_dir(args.directory)
    summary = _reading(lambda: summarize(directory))
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
    run.add_argument(
        "--values",
        choices=("auto", "ref", "deep"),
        help="arguments and return values: scalars by value and objects by reference (ref), "
        "the bounded snapshot (deep), or ref at calls and deep at values/lines (auto)",
    )
    run.add_argument(
        "--deep-module",
        action="append",
        dest="deep_modules",
        metavar="PATTERN",
        help="module pattern whose calls take the bounded snapshot whatever --values says",
    )
    run.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="export spans live to this OTLP/HTTP traces URL (docs/otlp.md; the otlp extra)",
    )
    run.add_argument("argv", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    run.set_defaults(func=_run)
    export = sub.add_parser("export", help="convert a trace directory")
    export.add_argument("directory")
    export.add_argument(
        "--format", choices=("chrome", "jsonl", "nodes", "otlp", "perfetto"), default="chrome"
    )
    export.add_argument("-o", "--output", help="output file")
    export.add_argument(
        "--endpoint", metavar="URL", help="--format otlp: the OTLP/HTTP traces URL to send to"
    )
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
    if args.func is _run:  # the program's own output is the program's business
        return int(args.func(args))
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here rather than at exit
    except BrokenPipeError:
        # `tidescope show DIR | head`: the reader has gone, so end quietly with the status a
        # shell reports for a command ended by SIGPIPE, and nothing left to flush at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return status
