"""``tidescope run``: run a program like ``python`` does, instrumented, into a trace directory."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import runpy
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

import tidescope
from tidescope import _reloader
from tidescope.capture import _redact
from tidescope.config import Config
from tidescope.export import _output, _runs
from tidescope.export.drain import Drain
from tidescope.export.summary import keep_hint

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
    """The output directory: the run records into a new directory of its own in it."""
    level: str = "calls"
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    config: Config = dataclasses.field(default_factory=Config.load)


def _check_output(directory: str) -> Path:
    """This run's own directory in the output directory, absolute (the program may
    ``chdir``), created 0700 (the output directory too if missing), named in its ``LATEST``
    and proven writable with a probe file created as every trace file is."""
    try:
        path = _runs.make_run_directory(directory)
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


def _run_program(options: RunOptions, code: types.CodeType | None) -> int | None:
    """Run the program; its exit status, or None after an unhandled KeyboardInterrupt."""
    try:
        if options.module is not None:
            sys.argv = [options.module, *options.argv]
            if not sys.flags.safe_path:  # as python -m: the current directory first
                sys.path[0] = os.getcwd()
            runpy.run_module(options.module, run_name="__main__", alter_sys=True)
        else:
            assert options.script is not None and code is not None
            script = os.path.abspath(options.script)
            sys.argv = [options.script, *options.argv]
            if not sys.flags.safe_path:  # as python: the script's directory first
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
        return None
    except BaseException as exc:
        _print_exception(exc)
        return 1
    return 0


def run(options: RunOptions, *, run_id: str | None = None) -> int:
    """Run the program of ``options`` recorded; returns its exit status.

    The program ends as under python: its non-daemon threads are waited for and its
    ``atexit`` handlers run (both recorded), then the trace closes. After an unhandled
    KeyboardInterrupt this process dies of SIGINT, as python does.

    ``run_id``: the run this process belongs to (a program the run started again, see
    :func:`tidescope._reloader.run_reexecuted`); then it prints no summary of its own.

    Raises:
        UsageError: the script does not exist or the output directory cannot be written.
    """
    global _this
    code: types.CodeType | None = None
    main_path: str | None = None
    if options.script is not None:
        path = Path(options.script)
        if not path.is_file():
            reason = "No such file or directory" if not path.exists() else "Is a directory"
            raise UsageError(f"can't open file '{path.resolve()}': {reason}")
        main_path = str(path.resolve())
    output = _check_output(options.output)
    cfg = options.config
    if cfg.otlp_endpoint is not None:
        from tidescope.export.otlp import require_otlp  # noqa: PLC0415

        try:
            require_otlp()
        except ImportError as exc:
            raise UsageError(
                str(exc)
            ) from None  # the script is rewritten before start(): with its redaction
    _redact.configure(cfg.redact, cfg.redact_pattern, cfg.redact_extra)
    if options.script is not None:
        try:
            code = _compile_main(Path(options.script), options.level)
        except SyntaxError as exc:
            traceback.print_exception(type(exc), exc, None)
            return 1

    from tidescope import instrument  # noqa: PLC0415

    child = run_id is not None
    if run_id is None:
        run_id = f"{os.getpid()}-{time.time_ns()}"  # tells this run's files from older ones
    session = tidescope.start(options.config)
    drain = _RunDrain(
        output,
        header={"argv": [options.script or f"-m {options.module}", *options.argv], "run": run_id},
    )
    drain.start()
    installation = instrument.install(
        include=list(options.include) or None,
        exclude=list(options.exclude) or None,
        level=options.level,
        main_path=main_path,
    )
    _this = _ProcessTrace(session, drain, output, run_id, nodes=True, summary=not child)
    _hold_sigterm_across_forks()
    restore = _flush_on_exit_paths()
    unspawn = _capture_spawned_children(options, output, main_path, run_id)
    unreload = _reloader.install()
    status: int | None = 1
    try:
        status = _run_program(options, code)
        _end_like_python()
    finally:
        unreload()
        unspawn()
        installation.uninstall()
        _close_trace()
        restore()
    if status is None:  # an unhandled KeyboardInterrupt
        _die_of(signal.SIGINT)  # python too dies of it once finalized
        return 128 + signal.SIGINT  # still alive (SIGINT blocked): python's status then
    return status


def _end_like_python() -> None:
    """What python does once the main module is done, before it exits: wait for the
    non-daemon threads, then run the ``atexit`` handlers. Capture is still on here, so what
    they call is recorded; at the real exit python finds nothing left to run."""
    try:
        getattr(threading, "_shutdown")()  # noqa: B009 - private, as python calls it
    except BaseException as exc:  # a ^C while waiting: python reports it and goes on
        print("Exception ignored in: <module 'threading'>", file=sys.stderr)
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    atexit._run_exitfuncs()


@dataclasses.dataclass
class _ProcessTrace:
    """What this process closes at its end."""

    session: tidescope.Session
    drain: Drain
    output: Path
    run_id: str
    nodes: bool  # writes its node table (a forked child's is its parent's)
    summary: bool  # prints the run's summary (the ``tidescope run`` process only)


_this: _ProcessTrace | None = None
_closing = 0  # 0: open, 1: closing now, 2: closed
_pending_signal: int | None = None  # a fatal signal that arrived while closing
# Long enough for any real pass (a full default ring encodes in well under a second even
# in the pure core); it only ends a wait that would otherwise never end.
_SIGNAL_JOIN_TIMEOUT: Final = 10.0


class _RunDrain(Drain):
    """The drain of a process of the run: a ``multiprocessing`` child's normal exit closes
    the process's whole trace (capture off, ``$stats``, node table). It paces the writers
    (see :class:`Drain`): a run records to keep everything."""

    def __init__(self, directory: str | os.PathLike[str], **kwargs: Any) -> None:
        kwargs.setdefault("pace", True)
        super().__init__(directory, **kwargs)

    def _final_stop(self) -> None:
        _close_trace()


def _close_trace(*, from_signal: bool = False) -> None:
    """Close this process's trace, once: capture off, the rest of the buffer written, the
    closing ``$stats``, the node table, the run's summary. A fatal signal arriving
    meanwhile (SIGTERM, a second ^C) is held until the end, then the process dies of it.

    From a signal handler, the wait for the drain thread is bounded: the thread could be
    waiting for a lock that the interrupted code holds (a ``block`` writer's condition).
    """
    global _closing
    trace = _this
    if trace is None or _closing:
        return
    _closing = 1
    unguard = _hold_sigint()
    try:
        stats = trace.session.stop()
        trace.drain.stop(stats, timeout=_SIGNAL_JOIN_TIMEOUT if from_signal else None)
        if trace.nodes and trace.drain.writer.created:  # no events, no node table either
            _write_node_table(trace.output)
        if trace.summary:
            _summary(stats, trace.output, trace.drain, trace.run_id)
            if trace.drain.otlp is not None:
                _output.notice(trace.drain.otlp.summary())
    except Exception as exc:  # the trace is cut short; the program's end stays its own
        _say(f"trace not closed: {exc!r}")
    finally:
        _closing = 2
        unguard()
    if _pending_signal is not None:
        _die_of(_pending_signal)


def _hold_sigint() -> Callable[[], None]:
    """While the trace closes, a ^C waits (as SIGTERM does) instead of raising in the
    middle of it. Returns the undo."""
    if not threading_is_main() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return lambda: None
    signal.signal(signal.SIGINT, _flush_and_die)

    def undo() -> None:
        if signal.getsignal(signal.SIGINT) is _flush_and_die:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    return undo


def _say(message: str) -> None:
    try:
        print(f"tidescope: {message}", file=sys.stderr)
    except Exception:  # stderr closed, or the signal interrupted a write to it
        pass


def _die_of(signum: int) -> None:
    """End this process by ``signum``'s default action, as python would have died of it.
    Returns only if the signal is blocked."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed stream: nothing left to lose
            pass
    if threading_is_main():
        signal.signal(signum, signal.SIG_DFL)
    # off the main thread the handler still runs, on the main thread, and finds us closed
    _real_kill(os.getpid(), signum)


_real_kill = os.kill
_HARMLESS_BY_DEFAULT: Final = frozenset(
    {signal.SIGCHLD, signal.SIGCONT, signal.SIGURG, signal.SIGWINCH, signal.SIGSTOP,
     signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
)  # fmt: skip


def _kills_this_process(sig: Any) -> bool:
    """True if ``sig``, sent to this process now, ends it with no Python code run."""
    try:
        if sig == signal.SIGKILL:
            return True
        if sig in _HARMLESS_BY_DEFAULT or signal.getsignal(sig) is not signal.SIG_DFL:
            return False
        return sig not in signal.pthread_sigmask(signal.SIG_BLOCK, ())
    except (TypeError, ValueError, OSError):  # not a signal: the real call says so
        return False


def _flush_on_exit_paths() -> Callable[[], None]:
    """Close the trace before ``os._exit``, before a signal this process sends itself that
    kills it outright (a server that re-raises SIGTERM after restoring SIG_DFL), and on
    SIGTERM; in this process and its children. Returns the undo.

    SIGTERM then ends the process as Python would (killed by the signal, no ``finally``
    blocks run): only the trace is closed first.
    """
    real_exit, real_kill, real_raise = os._exit, os.kill, signal.raise_signal

    def _exit(status: int) -> NoReturn:
        _close_trace()
        real_exit(status)

    def kill(pid: int, sig: int, /) -> None:
        if pid in (0, os.getpid()) and _kills_this_process(sig):
            _close_trace()
        real_kill(pid, sig)

    def raise_signal(sig: int, /) -> None:
        if _kills_this_process(sig):
            _close_trace()
        real_raise(sig)

    os._exit = _exit
    os.kill = kill
    signal.raise_signal = raise_signal
    previous: Any = None
    if threading_is_main() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        previous = signal.signal(signal.SIGTERM, _flush_and_die)

    def restore() -> None:
        os._exit, os.kill, signal.raise_signal = real_exit, real_kill, real_raise
        if previous is not None and signal.getsignal(signal.SIGTERM) is _flush_and_die:
            signal.signal(signal.SIGTERM, previous)

    return restore


_CHILD_ENV = "TIDESCOPE_RUN_CHILD"
_forkserver_opts: dict[str, Any] | None = None  # in the fork server: what its workers record


def _capture_spawned_children(
    options: RunOptions, output: Path, main_path: str | None, run_id: str
) -> Callable[[], None]:
    """Make ``multiprocessing`` children started by *spawn* and *forkserver* record too.
    Returns the undo.

    Forked children keep recording on their own (the core and the drain reset in them);
    a spawned child is a new interpreter: its command line gets a bootstrap that reads the
    run's options from the environment (:func:`start_child`). So does the fork server's
    (:func:`start_forkserver`), whose forks then record.
    """
    import multiprocessing.spawn as mp_spawn  # noqa: PLC0415
    import multiprocessing.util as mp_util  # noqa: PLC0415

    os.environ[_CHILD_ENV] = json.dumps(
        {
            "output": str(output.resolve()),
            "run": run_id,
            "level": options.level,
            "include": list(options.include),
            "exclude": list(options.exclude),
            "main_path": main_path,
            "config": dataclasses.asdict(options.config),
        }
    )
    real = mp_spawn.get_command_line
    real_passfds = mp_util.spawnv_passfds

    def get_command_line(**kwds: Any) -> list[str]:
        cmd = list(real(**kwds))
        if "-c" in cmd:
            i = cmd.index("-c") + 1
            cmd[i] = "import tidescope.runner as _t; _t.start_child()\n" + cmd[i]
        return cmd

    def spawnv_passfds(path: Any, args: Any, passfds: Any) -> Any:
        args = list(args)
        i = args.index("-c") + 1 if "-c" in args else len(args)
        # 3.11-3.13: "from multiprocessing.forkserver import main; ..."; 3.14 puts
        # "import sys; " before it
        if i < len(args) and "from multiprocessing.forkserver import main" in args[i]:
            args[i] = "import tidescope.runner as _t; _t.start_forkserver()\n" + args[i]
        return real_passfds(path, args, passfds)

    mp_spawn.get_command_line = get_command_line
    mp_util.spawnv_passfds = spawnv_passfds

    def undo() -> None:
        mp_spawn.get_command_line = real
        mp_util.spawnv_passfds = real_passfds
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
        opts = json.loads(raw)
        _flush_on_exit_paths()  # first: a SIGTERM from now on closes what is open
        _record_child(opts, "<multiprocessing spawn child>")
        _hold_sigterm_across_forks()
        _instrument_child(opts)
        atexit.register(_close_trace)  # after the program's own handlers, registered later
    except Exception as exc:  # pragma: no cover - a broken bootstrap must not kill the child
        print(f"tidescope: child not recorded: {exc}", file=sys.stderr)


def start_forkserver() -> None:
    """In the ``multiprocessing`` fork server of ``tidescope run``: instrument as the run
    does, and have every worker it forks record into the run's directory.

    The server itself records nothing: it only imports the main module, which its workers
    then inherit, as forked children inherit their parent's. It starts no drain thread, so
    it forks with none.
    """
    global _forkserver_opts
    raw = os.environ.get(_CHILD_ENV)
    if not raw:
        return
    try:
        opts = json.loads(raw)
        _instrument_child(opts)
        _flush_on_exit_paths()  # its workers inherit the SIGTERM handler and the exits
        _hold_sigterm_across_forks()
        _forkserver_opts = opts
    except Exception as exc:  # pragma: no cover - a broken bootstrap must not kill the server
        print(f"tidescope: fork server not recorded: {exc}", file=sys.stderr)


def close_at_exit(session: tidescope.Session, drain: Drain) -> None:
    """Close this process's trace (``session`` and ``drain``, started by
    ``tidescope.record()``) on every way out that a run's processes close theirs on."""
    global _this
    output = Path(drain.directory)
    _this = _ProcessTrace(session, drain, output, "", nodes=True, summary=False)
    _flush_on_exit_paths()
    atexit.register(_close_trace)
    import multiprocessing  # noqa: PLC0415

    if multiprocessing.parent_process() is not None:
        # a multiprocessing child leaves through os._exit after its finalizers, not atexit
        import multiprocessing.util  # noqa: PLC0415

        multiprocessing.util.Finalize(None, _close_trace, exitpriority=-100)


def _record_child(opts: dict[str, Any], role: str) -> None:
    """Start recording this child of the run into the run's directory.

    A SIGTERM meanwhile (a pool terminated as its workers start) waits until the file is
    open, then closes it: no file of the run is left without its ``$stats``.
    """
    global _this, _closing
    _closing = 1
    try:
        session = tidescope.start(Config(**opts["config"]))
        output = Path(opts["output"])
        drain = _RunDrain(output, header={"argv": [role], "run": opts["run"]}, lazy=True)
        drain.start()
        _this = _ProcessTrace(session, drain, output, opts["run"], nodes=True, summary=False)
    finally:
        _closing = 0
        if _pending_signal is not None:
            _flush_and_die(_pending_signal, None)


def _instrument_child(opts: dict[str, Any]) -> None:
    from tidescope import instrument  # noqa: PLC0415

    instrument.install(
        include=opts["include"] or None,
        exclude=opts["exclude"] or None,
        level=opts["level"],
        main_path=opts["main_path"],
    )
    if opts["main_path"]:
        _instrument_mp_main(opts["main_path"], opts["level"])


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
    return threading.current_thread() is threading.main_thread()


def _flush_and_die(signum: int, frame: Any) -> None:
    """SIGTERM in a process of the run: close the trace, then die of the signal as Python
    would have (no ``finally`` blocks run). Arriving while the trace closes (at exit, or
    from a first signal), it waits for the close to end.

    Inherited by forked children and installed in spawned ones, so a ``Pool``'s
    ``terminate()`` leaves each worker's file complete. Nothing here waits for ever on a
    lock the interrupted code could hold: a close under way makes the signal wait for it
    instead; an interrupted read of the buffer is re-entered (its read lock is re-entrant),
    not waited for; the wait for the drain thread is bounded; the node table is read
    without a lock. Left: a program interrupted inside ``tidescope.start()`` or ``stop()``.
    """
    global _pending_signal
    if _closing == 1:
        _pending_signal = signum
        return
    _close_trace(from_signal=True)
    _die_of(signum)


_sigterm_held = False
_fork_hooks_registered = False


def _hold_sigterm_across_forks() -> None:
    """Block SIGTERM in the forking thread from just before ``os.fork()`` until the child's
    trace is ready (and in the parent, until the fork returns). Called once the drain
    exists, so that the child's unblock comes after the drain's own fork hook.

    Without this a SIGTERM sent to a child as it is forked (a ``Pool`` terminated while
    it starts a worker) is caught by the handler and then cleared by python's reset of
    pending signals after a fork: the child never dies. Blocked, it waits in the kernel.
    """
    global _fork_hooks_registered
    if _fork_hooks_registered:
        return
    _fork_hooks_registered = True
    os.register_at_fork(
        before=_block_sigterm, after_in_parent=_unblock_sigterm, after_in_child=_unblock_sigterm
    )


def _block_sigterm() -> None:
    global _sigterm_held
    try:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        _sigterm_held = signal.SIGTERM not in before
    except (OSError, ValueError):
        _sigterm_held = False


def _unblock_sigterm() -> None:
    global _sigterm_held
    if _sigterm_held:
        _sigterm_held = False
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _after_fork_in_child() -> None:
    # The session and the drain follow a fork on their own; the child closes its own trace
    # on every exit path (it inherits the handler and the patched exits), without a summary.
    global _this, _closing, _pending_signal, _forkserver_opts
    _pending_signal = None
    _closing = 2 if _closing else 0  # closed (or closing) in the parent: nothing to close here
    if _this is not None:
        _this = dataclasses.replace(_this, summary=False)
    elif _forkserver_opts is not None:  # a worker of the fork server
        opts, _forkserver_opts = _forkserver_opts, None
        try:
            _record_child(opts, "<multiprocessing forkserver child>")
        except Exception as exc:  # the worker runs unrecorded
            _say(f"forkserver child not recorded: {exc}")


os.register_at_fork(after_in_child=_after_fork_in_child)


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


def _summary(stats: dict[str, Any], output: Path, drain: Drain, run_id: str | None = None) -> None:
    """The closing line on stderr, what was lost and the run's children included; never
    raises."""
    try:
        writer = drain.writer
        written = writer.events_written
        dropped = stats.get("dropped_events", 0)
        errors = stats.get("internal_errors", 0)
        lost = ""
        if writer.write_error is not None:
            lost = (
                f", {writer.events_not_written} not written"
                f" (trace writing stopped: {writer.write_error})"
            )
        where = writer.path.name
        if run_id is not None:
            files, c_events, c_dropped, c_errors, incomplete = _children_counts(
                output, run_id, writer.path
            )
            if files:
                written, dropped, errors = (
                    written + c_events,
                    dropped + c_dropped,
                    errors + c_errors,
                )
                where += f" and {files} child process{'es' if files > 1 else ''}"
                if incomplete:
                    where += f", {incomplete} of them incomplete"
        hint = keep_hint({**stats, "peak_backlog": drain.peak_backlog})
        _output.notice(
            f"{written} events captured{lost}, {dropped} dropped"
            f"{f' ({hint})' if hint else ''}, {errors} internal errors"
            f" -> {output}{os.sep} ({where})"
        )
    except Exception:  # a summary that cannot be said is not worth a traceback
        pass


def _children_counts(output: Path, run_id: str, own: Path) -> tuple[int, int, int, int, int]:
    """This run's other files (its child processes'): how many, their events, drops and
    internal errors, and how many have no closing stats (killed outright). Only chunk
    headers and counts are read, never the events."""
    from tidescope.export.reader import TraceError, tally, trace_files  # noqa: PLC0415

    files = events = dropped = errors = incomplete = 0
    for path in trace_files(output):
        if path == own:
            continue
        try:
            header, counts, complete = tally(path)
        except (OSError, TraceError):
            continue  # not a trace of ours after all
        if type(header) is not dict or header.get("run") != run_id:
            continue
        files += 1
        events += int(counts.get("events_written", 0))
        dropped += int(counts.get("dropped_events", 0))
        errors += int(counts.get("internal_errors", 0))
        if not complete:
            incomplete += 1
    return files, events, dropped, errors, incomplete
