"""Programs of ``tidescope run`` that start themselves again (Django's autoreloader): the
re-executed child records into the same run.

``manage.py runserver`` with the autoreloader on serves from a child: the first process runs
``sys.executable`` with its own command line again (``django.utils.autoreload``'s
``get_child_arguments()``), environment ``RUN_MAIN=true``, and only waits. That child is a
plain ``python manage.py runserver``. While a run is going, this module patches
``get_child_arguments`` (when Django imports it) so the child's command line starts with a
bootstrap, ``-c "import tidescope._reloader ...; run_reexecuted()"``, followed by the program
and its arguments as Django built them: the child then runs the program as ``tidescope run``
does, recorded into the run's directory (:func:`run_reexecuted`).

On ^C both processes get SIGINT; Django's first process then gives its child only 0.25 s
(``subprocess.run``) before killing it, too little to close a trace on a busy machine, so the
patched process waits up to :data:`SIGINT_WAIT` seconds instead.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import runpy
import subprocess
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn

from tidescope.capture import _core

__all__ = ["BOOTSTRAP", "SIGINT_WAIT", "install", "run_reexecuted"]

BOOTSTRAP: Final = "import tidescope._reloader as _t; _t.run_reexecuted()"
SIGINT_WAIT: Final = 10.0
_TARGET: Final = "django.utils.autoreload"


def _interpreter_flags() -> int:
    """How many items of a re-execution's command line come before the program: the
    interpreter, then Django's ``-W`` and ``-X`` options."""
    return 1 + len(sys.warnoptions) + len(getattr(sys, "_xoptions", {}))


def bootstrapped(args: Sequence[str]) -> list[str]:
    """``args`` (``[python, -W.., -X.., program...]``) with the bootstrap before the program;
    ``args`` as they are when they do not start with this interpreter."""
    args = list(args)
    n = _interpreter_flags()
    if not args or args[0] != sys.executable or len(args) <= n or BOOTSTRAP in args:
        return args
    return [*args[:n], "-c", BOOTSTRAP, *args[n:]]


def _patch(module: types.ModuleType) -> None:
    real: Callable[[], Any] = getattr(module, "get_child_arguments", None)  # type: ignore[assignment]
    if real is None or getattr(real, "_tidescope", False):
        return

    def get_child_arguments() -> Any:
        args = real()
        try:
            return bootstrapped(args)
        except Exception as exc:
            _core.count_error(exc)
            return args

    get_child_arguments._tidescope = True  # type: ignore[attr-defined]
    module.get_child_arguments = get_child_arguments  # type: ignore[attr-defined]
    wait = getattr(subprocess.Popen, "_sigint_wait_secs", None)
    if isinstance(wait, float) and wait < SIGINT_WAIT:
        subprocess.Popen._sigint_wait_secs = SIGINT_WAIT  # type: ignore[attr-defined]


class _Loader(importlib.abc.Loader):
    """The real loader of ``django.utils.autoreload``, then the patch."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        module: types.ModuleType | None = self.real.create_module(spec)
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        self.real.exec_module(module)
        try:
            _patch(module)
        except Exception as exc:
            _core.count_error(exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``django.utils.autoreload`` through the other finders and wraps its loader."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _TARGET:
            return None
        try:
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                if finder is self or find is None:
                    continue
                spec: importlib.machinery.ModuleSpec | None = find(fullname, path, target)
                if spec is None:
                    continue
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec
        except Exception as exc:
            _core.count_error(exc)
        return None


def install() -> Callable[[], None]:
    """Have Django's autoreloader re-execute the program recorded (now, if Django's
    autoreload is imported, else when it is). Returns the undo (for the finder)."""
    module = sys.modules.get(_TARGET)
    if module is not None:
        _patch(module)
    finder = _Finder()
    sys.meta_path.insert(0, finder)

    def undo() -> None:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)

    return undo


def run_reexecuted() -> NoReturn:
    """In a process that a program of ``tidescope run`` started again with its own command
    line (the bootstrap of :func:`bootstrapped`): ``sys.argv[1:]`` is the
    program (``script args...`` or ``-m module args...``); run it as the run does, recorded
    into the run's directory. Outside a run, it runs unrecorded, as python would.
    """
    from tidescope import runner  # noqa: PLC0415 - only the re-executed child needs it
    from tidescope.config import Config  # noqa: PLC0415

    args = sys.argv[1:]
    module = args[1] if args[:1] == ["-m"] and len(args) > 1 else None
    program = args[2:] if module is not None else args[1:]
    script = None if module is not None else (args[0] if args else None)
    raw = os.environ.get(runner._CHILD_ENV)
    if script is None and module is None:
        sys.exit("tidescope: nothing to run")
    opts: dict[str, Any] | None = None
    try:
        opts = json.loads(raw) if raw else None
    except ValueError as exc:
        runner._say(f"re-executed program not recorded: {exc}")
    if opts is None:  # not a child of a run: what python would have done
        sys.argv = [module or script or "", *program]
        if module is not None:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            sys.path[0] = os.path.dirname(os.path.abspath(str(script)))
            runpy.run_path(str(script), run_name="__main__")
        sys.exit(0)
    options = runner.RunOptions(
        script=script,
        module=module,
        argv=program,
        output=opts["output"],
        level=opts["level"],
        include=opts["include"],
        exclude=opts["exclude"],
        config=Config(**opts["config"]),
    )
    try:
        status = runner.run(options, run_id=opts["run"])
    except runner.UsageError as exc:
        runner._say(str(exc))
        status = 2
    sys.exit(status)
