"""The ``tidescope`` command: run, export, show, query, view, demo and debug."""

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
    from tidescope.config import find_pyproject  # noqa: PLC0415

    pyproject = find_pyproject()
    info: dict[str, Any] = {
        "version": tidescope.__version__,
        "python": sys.version.split()[0],
        **tidescope.core_info(),
        "pyproject": None if pyproject is None else str(pyproject),
        "config": vars_of(_settings()),
        "run": _run_settings(),
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
    project = _run_settings()
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
        output=args.output or project.get("output", _OUTPUT),
        level=args.level or project.get("level", "calls"),
        include=args.include or project.get("include", []),
        exclude=args.exclude or project.get("exclude", []),
        config=config,
    )
    try:
        return run(options)
    except UsageError as exc:
        _fail(str(exc))


def _settings(**arguments: Any) -> Config:
    """The Config of ``arguments``, the environment and the nearest pyproject.toml; a bad
    setting ends the command."""
    from tidescope.capture import _core  # noqa: PLC0415
    from tidescope.config import Config, ConfigError  # noqa: PLC0415

    if _core.CORE_ERROR is not None:
        _fail(_core.CORE_ERROR)
    try:
        return Config.load(**arguments)
    except ConfigError as exc:
        _fail(str(exc))


_OUTPUT = "tidescope-trace"


def _run_settings() -> dict[str, Any]:
    """``tidescope run``'s settings in the nearest pyproject.toml; a bad one ends the command."""
    from tidescope.config import ConfigError, find_pyproject, run_settings  # noqa: PLC0415

    try:
        return run_settings(find_pyproject())
    except ConfigError as exc:
        _fail(str(exc))


def _default_directory() -> str:
    """The output directory of ``tidescope run`` here: ``output`` in the nearest
    pyproject.toml, else ``tidescope-trace``."""
    return str(_run_settings().get("output", _OUTPUT))


def _split_run(run: argparse.ArgumentParser, tokens: list[str]) -> tuple[list[str], list[str]]:
    """``tidescope run``'s own options, and the program's part: ``-m MODULE args...`` or
    ``script args...``, everything after the module or script passed as it is, as python
    does. A ``--`` before the program ends tidescope's options; one right after the module
    or script name is dropped (the old way to pass options), never given to the program."""
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "--":
            own, program = tokens[:i], tokens[i + 1 :]
            break
        if tok.startswith("-m") and not tok.startswith("--"):
            if tok == "-m" and i + 1 >= len(tokens):
                _fail("argument -m: expected a module name")
            rest = tokens[i + 2 :] if tok == "-m" else tokens[i + 1 :]
            own, program = tokens[:i], ["-m", tokens[i + 1] if tok == "-m" else tok[2:], *rest]
            break
        if tok == "-" or not tok.startswith("-"):
            own, program = tokens[:i], tokens[i:]
            break
        action = run._option_string_actions.get(tok.split("=", 1)[0])
        i += 2 if action is not None and action.nargs != 0 and "=" not in tok else 1
    else:
        return tokens, []
    head = 2 if program[:1] == ["-m"] else 1
    if program[head : head + 1] == ["--"]:
        del program[head]
    return own, program


def _fail(message: str) -> NoReturn:
    """Say ``message`` as one line on stderr and end with status 2 (bad input or settings)."""
    print(f"tidescope: {message}", file=sys.stderr)
    raise SystemExit(2)


def _trace_dir(directory: str) -> str:
    """The run to read: ``directory``, or its latest run (said on stderr) when it is the
    output directory of ``tidescope run``."""
    from tidescope.export._runs import run_directory  # noqa: PLC0415
    from tidescope.export.reader import trace_files  # noqa: PLC0415

    if not os.path.isdir(directory):
        _fail(f"no trace directory '{directory}'")
    run = run_directory(directory)
    if not trace_files(run):
        _fail(f"'{directory}' holds no trace files (events-*.tstrace)")
    if run != Path(directory):
        print(f"tidescope: reading the latest run, {run}", file=sys.stderr)
    return str(run)


def _export(args: argparse.Namespace) -> int:
    from tidescope.export import chrome, jsonl  # noqa: PLC0415

    if args.format == "otlp":
        from tidescope.export._otlp_command import export_otlp  # noqa: PLC0415

        return export_otlp(
            _trace_dir(args.directory or _default_directory()),
            args.endpoint,
            _settings(),
            _fail,
            _reading,
        )
    directory = _trace_dir(args.directory or _default_directory())
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
            if "event_type" in rec or "$note" in rec:  # notes name threads and tasks
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

    directory = _trace_dir(args.directory or _default_directory())
    summary = _reading(lambda: summarize(directory))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _view(args: argparse.Namespace) -> int:
    from tidescope.query import QueryError  # noqa: PLC0415
    from tidescope.view import serve  # noqa: PLC0415

    directory = _trace_dir(args.directory or _default_directory())
    try:
        _reading(lambda: serve(directory, port=args.port, open_browser=args.open))
    except QueryError as exc:  # duckdb or pyarrow missing: the message names the extra
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot serve on 127.0.0.1 port {args.port}: {exc.strerror or exc}")
    return 0


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples laid out as written."""


_DESCRIPTION = """\
Record what a Python program does, then read the recording.

Each `tidescope run` records into a new directory of its own under the output directory
(tidescope-trace/<date>-<time>-<pid>/), whose LATEST file names the latest run. show and
export given the output directory read the latest run; given a run's directory, that run.
Settings come from the command line, then TIDESCOPE_* environment variables, then the
[tool.tidescope] table of the nearest pyproject.toml."""

_RUN_EPILOG = """\
Everything after the script or -m MODULE is the program's own command line, as with python.
sys.path[0] is the script's directory, or the current directory with -m.

examples:
  tidescope run app.py --port 8000
  tidescope run --level values --include 'myapp.*' -m pytest -q tests/
  tidescope run -o /tmp/traces -m uvicorn myapp:app"""


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The command's parser, and its ``run`` subcommand's."""
    from tidescope import __version__  # noqa: PLC0415
    from tidescope.config import Config  # noqa: PLC0415

    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="tidescope",
        description=_DESCRIPTION,
        epilog="example:\n  tidescope run app.py && tidescope show",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tidescope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    run = sub.add_parser(
        "run",
        help="run a program like python does, recording it",
        description="Run a Python script or module as python would, recording its calls.",
        usage="tidescope run [options] (script.py | -m module) [args ...]",
        epilog=_RUN_EPILOG,
        formatter_class=_HelpFormatter,
    )
    run.add_argument("-m", dest="module", metavar="MODULE", help="run a library module as a script")
    run.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help=f"output directory; each run records into a new directory in it"
        f" (default: {_OUTPUT}, or output in [tool.tidescope])",
    )
    run.add_argument(
        "--level",
        choices=("calls", "values", "lines"),
        help="what to record: calls and returns; also variable values, branches and loops;"
        " also every line (default: calls)",
    )
    run.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="module name pattern to record; repeat for more (default: the program's own"
        " modules, those outside site-packages and the standard library)",
    )
    run.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="module name pattern not to record; repeat for more (default: none)",
    )
    run.add_argument(
        "--buffer-size",
        type=int,
        metavar="N",
        help=f"events the buffer holds, a power of two (default: {defaults.buffer_size})",
    )
    run.add_argument(
        "--overflow-strategy",
        choices=("drop_oldest", "drop_newest", "block"),
        help="what a full buffer does: drop the oldest events, drop the new ones, or make"
        f" the program wait for room (default: {defaults.overflow_strategy})",
    )
    run.add_argument(
        "--values",
        choices=("auto", "ref", "deep"),
        help="arguments and return values: scalars by value and objects by reference (ref),"
        " a bounded copy (deep), or ref at --level calls and deep at values and lines"
        f" (auto) (default: {defaults.values})",
    )
    run.add_argument(
        "--deep-module",
        action="append",
        dest="deep_modules",
        metavar="PATTERN",
        help="module name pattern whose calls keep a bounded copy of their values whatever"
        " --values says; repeat for more (default: none)",
    )
    run.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="export spans live to this OTLP/HTTP traces URL (docs/otlp.md; the otlp extra)",
    )
    run.add_argument("argv", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    run.set_defaults(func=_run)
    export = sub.add_parser(
        "export",
        help="convert a run's trace to another format",
        description="Convert a run's trace for another tool: chrome (Perfetto and"
        " chrome://tracing open it), perfetto (the Perfetto format, for big traces), jsonl"
        " (one JSON event a line), nodes (the instrumented code's node table) or otlp (spans"
        " sent to an OpenTelemetry endpoint, see docs/otlp.md).",
        epilog="examples:\n  tidescope export --format chrome\n"
        "  tidescope export tidescope-trace/20261202-142501-4242 --format jsonl -o run.jsonl",
        formatter_class=_HelpFormatter,
    )
    export.add_argument(
        "directory",
        nargs="?",
        help=f"the output directory (its latest run is read) or a run's directory"
        f" (default: {_OUTPUT}, or output in [tool.tidescope])",
    )
    export.add_argument(
        "--format",
        choices=("chrome", "jsonl", "nodes", "otlp", "perfetto"),
        default="chrome",
        help="output format (default: %(default)s)",
    )
    export.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="output file (default: trace.chrome.json, trace.perfetto-trace, events.all.jsonl"
        " or nodes.all.jsonl in the run's directory)",
    )
    export.add_argument(
        "--endpoint",
        metavar="URL",
        help="--format otlp: the OTLP/HTTP traces URL to send to"
        " (example: http://127.0.0.1:4318/v1/traces)",
    )
    export.set_defaults(func=_export)
    show = sub.add_parser(
        "show",
        help="summarise a run's trace",
        description="Summarise a run's trace: events by type, the busiest functions,"
        " exceptions, and what was lost.",
        epilog="examples:\n  tidescope show\n  tidescope show /tmp/traces --json",
        formatter_class=_HelpFormatter,
    )
    show.add_argument(
        "directory",
        nargs="?",
        help=f"the output directory (its latest run is read) or a run's directory"
        f" (default: {_OUTPUT}, or output in [tool.tidescope])",
    )
    show.add_argument(
        "--json", action="store_true", help="print JSON (default: text; shape: docs/show.md)"
    )
    show.set_defaults(func=_show)
    view = sub.add_parser(
        "view",
        help="browse a run's trace in a local web page",
        description="Serve a local web debugger over a run's trace on 127.0.0.1 (the index is"
        " built on first use, as for query; needs tidescope[view]). Prints the page's URL.",
        epilog="examples:\n  tidescope view\n  tidescope view /tmp/traces --open --port 8000",
        formatter_class=_HelpFormatter,
    )
    view.add_argument(
        "directory",
        nargs="?",
        help=f"the output directory (its latest run is read) or a run's directory"
        f" (default: {_OUTPUT}, or output in [tool.tidescope])",
    )
    view.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    view.add_argument("--open", action="store_true", help="open the page in the browser")
    view.set_defaults(func=_view)
    demo = sub.add_parser(
        "demo",
        help="record a small program and print its events",
        description="Record a small built-in program in memory and print its events.",
        epilog="example:\n  tidescope demo --json",
        formatter_class=_HelpFormatter,
    )
    demo.add_argument("--json", action="store_true", help="one JSON event per line (default: text)")
    demo.set_defaults(func=_demo)
    debug = sub.add_parser(
        "debug",
        help="show the version, the core in use and why, and the settings",
        description="Print the version, the capture core in use and why, and the settings"
        " in effect here, as JSON.",
        epilog="example:\n  tidescope debug",
        formatter_class=_HelpFormatter,
    )
    debug.set_defaults(func=_debug)
    from tidescope.query import _cli as query_cli  # noqa: PLC0415

    query_cli.add_parser(sub)
    return parser, run


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser, run = _parser()
    tokens = list(sys.argv[1:] if argv is None else argv)
    program: list[str] = []
    if tokens[:1] == ["run"]:
        own, program = _split_run(run, tokens[1:])
        tokens = ["run", *own]
    args = parser.parse_args(tokens)
    if args.func is _run:
        args.module, args.argv = (
            (program[1], program[2:]) if program[:1] == ["-m"] else (None, program)
        )  # the program's own output is the program's business
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
