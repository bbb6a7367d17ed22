"""``tidescope run``: run a program like ``python`` does, instrumented, into a trace directory."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import runpy
import signal
import sys
import traceback
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import tidescope
from tidescope.capture import _redact
from tidescope.config import Config
from tidescope.export import _output
from tidescope.export.drain import Drain

__all__ = ["RunOptions", "UsageError", "run"]

_PACKAGE_DIR = str(Path(tidescope.__file__).resolve().parent)


class UsageError(Exception):
    """Bad input to ``tidescope run``: reported as one line and exit status 2."""


@dataclasses.dataclass
class RunOptions:
    """What to run and how to record it."""

    script: str | None = None
    module: str | None = None
    argv: Sequence[str] = ()
    output: str = "tidescope-trace"
    level: str = "calls"
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    config: Config = dataclasses.field(default_factory=Config.load)


def _check_output(directory: str) -> Path:
    """The output directory, absolute (the program may ``chdir``), created 0700 if missing,
    and proven writable with a probe file created as every trace file is."""
    try:
        path = _output.make_directory(directory)
        fd, probe = _output.create_file(path / f".tidescope-probe-{os.getpid()}")
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise UsageError(
            f"cannot write to output directory '{directory}': {exc.strerror or exc}"
        ) from None
    return path


def _compile_main(path: Path, level: str) -> types.CodeType:
    """Compile the script instrumented; a syntax error propagates as Python reports it."""
    path = path.resolve()  # Python compiles __main__ under its absolute path
    # instrument_main raises the user's own syntax error as compile does, and shows the
    # compiler's warnings once (a plain compile here first showed them twice)
    from tidescope import instrument  # noqa: PLC0415 - only `run` needs the rewriter

    code, _records = instrument.instrument_main(str(path), level)  # records join node_table()
    return code


def _print_exception(exc: BaseException) -> None:
    """Print ``exc`` like Python's top level: without tidescope's own frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    if tb is not None:  # an exception raised inside tidescope itself keeps all its frames
        exc = exc.with_traceback(tb)  # the default hook prints exc.__traceback__, not tb
    sys.excepthook(type(exc), exc, exc.__traceback__)


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # like Python: a non-int code is printed, status 1
    return 1


def _run_program(options: RunOptions, code: types.CodeType | None) -> int:
    try:
        if options.module is not None:
            sys.argv = [options.module, *options.argv]
            runpy.run_module(options.module, run_name="__main__", alter_sys=True)
        else:
            assert options.script is not None and code is not None
            script = os.path.abspath(options.script)
            sys.argv = [options.script, *options.argv]
            sys.path[0] = os.path.dirname(script)
            main = types.ModuleType("__main__")
            main.__file__ = script
            main.__builtins__ = __builtins__  # type: ignore[attr-defined]
            main.__cached__ = None  # type: ignore[attr-defined]
            saved_main = sys.modules.get("__main__")
            sys.modules["__main__"] = main
            try:
                exec(code, main.__dict__)
            finally:
                if saved_main is not None:
                    sys.modules["__main__"] = saved_main
    except SystemExit as exc:
        return _exit_code(exc)
    except KeyboardInterrupt as exc:
        _print_exception(exc)
        return 130
    except BaseException as exc:
        _print_exception(exc)
        return 1
    return 0


def run(options: RunOptions) -> int:
    """Run the program of ``options`` recorded; returns its exit status.

    Raises:
        UsageError: the script does not exist or the output directory cannot be written.
    """
    code: types.CodeType | None = None
    main_path: str | None = None
    if options.script is not None:
        path = Path(options.script)
        if not path.is_file():
            reason = "No such file or directory" if not path.exists() else "Is a directory"
            raise UsageError(f"can't open file '{path.resolve()}': {reason}")
        main_path = str(path.resolve())
    output = _check_output(options.output)
    cfg = options.config  # the script is rewritten before start(): with its redaction
    _redact.configure(cfg.redact, cfg.redact_pattern, cfg.redact_extra)
    if options.script is not None:
        try:
            code = _compile_main(Path(options.script), options.level)
        except SyntaxError as exc:
            traceback.print_exception(type(exc), exc, None)
            return 1

    from tidescope import instrument  # noqa: PLC0415

    session = tidescope.start(options.config)
    drain = Drain(
        output, header={"argv": [options.script or f"-m {options.module}", *options.argv]}
    )
    drain.start()
    installation = instrument.install(
        include=list(options.include) or None,
        exclude=list(options.exclude) or None,
        level=options.level,
        main_path=main_path,
    )
    restore = _flush_on_exit_paths(drain)
    unspawn = _capture_spawned_children(options, output, main_path)
    status = 1
    try:
        status = _run_program(options, code)
    finally:
        unspawn()
        restore()
        installation.uninstall()
        stats = session.stop()
        drain.stop(stats)
        _write_node_table(output)
        _summary(stats, output, drain)
    return status


def _flush_on_exit_paths(drain: Drain) -> Callable[[], None]:
    """Flush before ``os._exit`` and on SIGTERM, in this process and its forks. Returns the undo.

    SIGTERM then ends the process as Python would (killed by the signal, no ``finally``
    blocks run): only the trace is flushed first.
    """
    global _on_terminate
    real_exit = os._exit

    def _exit(status: int) -> NoReturn:
        # in a forked child the drain has already switched to the child's own file
        drain.stop(tidescope.stats())
        real_exit(status)

    os._exit = _exit
    _on_terminate = drain.stop_from_signal_handler
    previous: Any = None
    if threading_is_main() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        previous = signal.signal(signal.SIGTERM, _flush_and_die)

    def restore() -> None:
        global _on_terminate
        os._exit = real_exit
        _on_terminate = None
        if previous is not None and signal.getsignal(signal.SIGTERM) is _flush_and_die:
            signal.signal(signal.SIGTERM, previous)

    return restore


_on_terminate: Callable[[], None] | None = None


_CHILD_ENV = "TIDESCOPE_RUN_CHILD"


def _capture_spawned_children(
    options: RunOptions, output: Path, main_path: str | None
) -> Callable[[], None]:
    """Make ``multiprocessing`` children started by *spawn* record too. Returns the undo.

    Forked children keep recording on their own (the core and the drain reset in them);
    a spawned child is a new interpreter: its command line gets a bootstrap that reads the
    run's options from the environment (:func:`start_child`).
    """
    import multiprocessing.spawn as mp_spawn  # noqa: PLC0415

    os.environ[_CHILD_ENV] = json.dumps(
        {
            "output": str(output.resolve()),
            "level": options.level,
            "include": list(options.include),
            "exclude": list(options.exclude),
            "main_path": main_path,
            "config": dataclasses.asdict(options.config),
        }
    )
    real = mp_spawn.get_command_line

    def get_command_line(**kwds: Any) -> list[str]:
        cmd = list(real(**kwds))
        if "-c" in cmd:
            i = cmd.index("-c") + 1
            cmd[i] = "import tidescope.runner as _t; _t.start_child()\n" + cmd[i]
        return cmd

    mp_spawn.get_command_line = get_command_line

    def undo() -> None:
        mp_spawn.get_command_line = real
        os.environ.pop(_CHILD_ENV, None)

    return undo


def start_child() -> None:
    """In a spawned ``multiprocessing`` child of ``tidescope run``: record like the parent.

    Never breaks the child: if anything here fails, the child runs unrecorded.
    """
    raw = os.environ.get(_CHILD_ENV)
    if not raw:
        return
    try:
        import atexit  # noqa: PLC0415

        from tidescope import instrument  # noqa: PLC0415

        opts = json.loads(raw)
        session = tidescope.start(Config(**opts["config"]))
        drain = Drain(opts["output"], header={"argv": ["<multiprocessing spawn child>"]})
        drain.start()
        instrument.install(
            include=opts["include"] or None,
            exclude=opts["exclude"] or None,
            level=opts["level"],
            main_path=opts["main_path"],
        )
        if opts["main_path"]:
            _instrument_mp_main(opts["main_path"], opts["level"])

        def finish() -> None:
            drain.stop(session.stop())
            _write_node_table(Path(opts["output"]))

        atexit.register(finish)
    except Exception as exc:  # pragma: no cover - a broken bootstrap must not kill the child
        print(f"tidescope: child not recorded: {exc}", file=sys.stderr)


def _instrument_mp_main(main_path: str, level: str) -> None:
    """Have multiprocessing re-run the parent's script as ``__mp_main__`` instrumented
    (it uses ``runpy.run_path``, which the import hook never sees)."""
    from tidescope import instrument  # noqa: PLC0415

    real_run_path = runpy.run_path
    target = os.path.realpath(main_path)

    def run_path(
        path_name: str, init_globals: dict[str, Any] | None = None, run_name: str | None = None
    ) -> dict[str, Any]:
        if run_name != "__mp_main__" or os.path.realpath(path_name) != target:
            return real_run_path(path_name, init_globals, run_name)
        code, _ = instrument.instrument_main(path_name, level, module="__mp_main__")
        namespace: dict[str, Any] = dict(init_globals or {})
        namespace.update(
            __name__=run_name, __file__=path_name, __loader__=None, __package__=None,
            __spec__=None, __cached__=None, __builtins__=__builtins__,
        )  # fmt: skip
        exec(code, namespace)
        return namespace

    runpy.run_path = run_path


def threading_is_main() -> bool:
    """True in the main thread (only it may install signal handlers)."""
    import threading  # noqa: PLC0415

    return threading.current_thread() is threading.main_thread()


def _flush_and_die(signum: int, frame: Any) -> None:
    """SIGTERM in the ``tidescope run`` process: flush the trace, then die of the signal as
    Python would have (no ``finally`` blocks run). If the signal interrupts the flush at
    exit, it dies at once: waiting for more work is what plain Python would never do."""
    try:
        if _on_terminate is not None:
            _on_terminate()
    except Exception as exc:  # the trace is lost, the program still dies as it should
        print(f"tidescope: trace not flushed on SIGTERM: {exc!r}", file=sys.stderr)
    finally:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _default_sigterm_in_child() -> None:
    # Children die of SIGTERM as they would under Python: a multiprocessing Pool's
    # terminate() catches workers in their own exit, and any flush there could hang them.
    # They keep what their drain wrote (every interval, and all of it at a normal exit).
    if signal.getsignal(signal.SIGTERM) is _flush_and_die:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_default_sigterm_in_child)


def _write_node_table(output: Path) -> None:
    """Write ``nodes-<pid>.jsonl`` whole, or say once why not; never raises."""
    from tidescope import instrument  # noqa: PLC0415

    nodes = instrument.node_table()
    if not nodes:
        return
    data = "".join(json.dumps(rec._asdict()) + "\n" for rec in nodes).encode()
    path = output / f"nodes-{os.getpid()}.jsonl"
    try:
        fd, path = _output.create_file(path)
    except OSError as exc:
        _output.notice(f"node table not written to {path}: {_output.describe(exc)}")
        return
    try:
        _output.append(fd, data)
    except OSError as exc:
        _output.notice(f"node table not written to {path}: {_output.describe(exc)}")
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            path.unlink()
    finally:
        os.close(fd)


def _summary(stats: dict[str, Any], output: Path, drain: Drain) -> None:
    """The closing line on stderr, what was lost included; never raises."""
    try:
        writer = drain.writer
        lost = ""
        if writer.write_error is not None:
            lost = (
                f", {writer.events_not_written} not written"
                f" (trace writing stopped: {writer.write_error})"
            )
        _output.notice(
            f"{writer.events_written} events captured{lost},"
            f" {stats.get('dropped_events', 0)} dropped,"
            f" {stats.get('internal_errors', 0)} internal errors"
            f" -> {output}{os.sep} ({writer.path.name})"
        )
    except Exception:  # a summary that cannot be said is not worth a traceback
        pass
