"""The pytest recorder behind ``pytest --tidescope[=DIR]``: capture for the session, every
event tagged with its test, and each failing test's call chain in its report.

Started by the ``tidescope_pytest`` entry point (which imports this module only when
asked) in ``pytest_load_initial_conftests``, before any conftest file or test module is
imported: capture starts, a drain writes ``DIR/events-<pid>.tstrace``, and the import
hook is installed with the project's selection (the modules under the current directory,
or ``--tidescope-include``). Test modules and conftest files, which pytest's assertion
rewriting compiles, get both rewrites (``tidescope.instrument._pytest_rewrite``), so
assertion messages stay pytest's. Under ``tidescope run -m pytest`` the runner's session
and drain are used instead, and nothing else is started.

Tagging costs nothing per call: for each test, the node id is bound as the correlation id
of the context the test runs in (the core already carries a correlation in each call
frame and copies it to every event), from the start of its setup to the end of its
teardown, and one ``trace_control`` event marks the test's start and one its end
(``{"pytest": "start" | "end", "nodeid": ..., "outcome": ...}``). Tasks the test creates
inherit the tag; a thread it starts begins untagged, with its own correlation.

For a failing phase (setup, call or teardown), the drain writes what the buffer holds and
the test's events are read back from the trace file: the chain of calls the exception
went through, outermost first, each with its arguments, the exception it raised, and the
calls it made before that with their return values. The report gets it as a section
``tidescope <phase>``, after the trace file's path. Reading goes through the file from
its start (its string tables are needed), so each failure costs a pass over the trace.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Generator
from typing import Any, Final

import pytest

import tidescope
from tidescope.capture import _core, ingestor
from tidescope.capture.runtime.core import emit_in_context
from tidescope.config import Config, ConfigError
from tidescope.events import EventType
from tidescope.export.drain import Drain
from tidescope.export.reader import TraceError, read_trace

__all__ = ["Recorder", "activate"]

_NAME: Final = "tidescope-recorder"
_CALLS_SHOWN: Final = 5  # returned calls listed under a frame of the chain, the latest
_VALUE_CHARS: Final = 120


def activate(config: pytest.Config, directory: str | None) -> None:
    """Start recording this pytest run (``directory`` is ``--tidescope``'s value, None when
    only ``tidescope run`` records), and register the recorder.

    Raises:
        pytest.UsageError: ``directory`` is a file, a setting is invalid, or the directory
            cannot be written.
    """
    if config.pluginmanager.has_plugin(_NAME):
        return  # activated already for this configuration
    runner = sys.modules.get("tidescope.runner")
    trace = getattr(runner, "_this", None)
    if trace is not None:  # tidescope run -m pytest: its session, drain and hook
        config.pluginmanager.register(Recorder(trace.drain, None), _NAME)
        return
    if directory is None:
        return
    if directory.endswith(".py") or os.path.isfile(directory):
        raise pytest.UsageError(
            f"--tidescope takes a directory, not '{directory}': write --tidescope=DIR"
        )
    ns = config.known_args_namespace
    try:
        cfg = Config.load()
    except ConfigError as exc:
        raise pytest.UsageError(f"tidescope: {exc}") from None
    if tidescope.active_session() is not None:
        config.pluginmanager.register(Recorder(None, None), _NAME)  # tag only: not ours
        return
    try:
        session = tidescope.start(cfg)
    except Exception as exc:  # a core that cannot be used, say
        raise pytest.UsageError(f"tidescope: {exc}") from None
    try:
        from tidescope.export._runs import make_run_directory  # noqa: PLC0415

        drain = Drain(
            make_run_directory(directory),  # a run of its own, as tidescope run's
            header={"argv": ["pytest", *config.invocation_params.args], "run": _run_id()},
            pace=True,
        ).start()
    except OSError as exc:
        session.stop()
        raise pytest.UsageError(
            f"tidescope: cannot write to '{directory}': {exc.strerror or exc}"
        ) from None
    from tidescope import instrument  # noqa: PLC0415

    installation = instrument.install(
        include=list(ns.tidescope_include) or None,
        exclude=list(ns.tidescope_exclude) or None,
        level=ns.tidescope_level,
    )
    recorder = Recorder(drain, _Own(session, installation))
    recorder.late = _imported_already(installation)
    config.pluginmanager.register(recorder, _NAME)


def _run_id() -> str:
    return f"{os.getpid()}-{time.time_ns()}"


def _imported_already(installation: Any) -> list[str]:
    """Modules the selection takes that were imported before the hook was installed (the
    packages of pytest plugins loaded from entry points, say): they run uninstrumented."""
    late = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or not path.endswith(".py"):
            continue
        try:
            if installation.selects_name(name) and installation.selects_file(path):
                late.append(name)
        except Exception:
            continue
    return sorted(late)


class _Own:
    """What the recorder started itself and stops at the end."""

    def __init__(self, session: tidescope.Session, installation: Any) -> None:
        self.session = session
        self.installation = installation
        self.stats: dict[str, Any] | None = None


class Recorder:
    """The pytest plugin object: tags tests, reports failing chains, closes the trace.

    Args:
        drain: the drain writing this process's trace (None: tag only, no report).
        own: the session and hook this recorder started and must stop (None under
            ``tidescope run``, which closes its own).
    """

    def __init__(self, drain: Drain | None, own: _Own | None) -> None:
        self.drain = drain
        self.own = own
        self.late: list[str] = []
        self._outcome = "passed"

    # -- pytest hooks -----------------------------------------------------------------

    def pytest_report_header(self) -> list[str]:
        if self.own is None or self.drain is None:
            return []
        lines = [f"tidescope: recording to {self.drain.writer.path}"]
        if self.late:
            more = len(self.late) - 5
            shown = ", ".join(self.late[:5]) + (f" and {more} more" if more > 0 else "")
            lines.append(
                f"tidescope: imported before recording started, not instrumented: {shown} "
                "(tidescope run -m pytest records them)"
            )
        return lines

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        token = _core.bind_correlation(item.nodeid)
        self._outcome = "passed"
        _mark({"pytest": "start", "nodeid": item.nodeid, "location": _location(item)})
        try:
            return (yield)
        finally:
            _mark({"pytest": "end", "nodeid": item.nodeid, "outcome": self._outcome})
            _core.restore_context(token)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.failed:
            self._outcome = "failed"
            if self.drain is not None:
                try:
                    text = self._failure(item.nodeid)
                except Exception as exc:  # the report goes on without it
                    text = f"tidescope: the recording could not be read: {exc!r}"
                report.sections.append((f"tidescope {report.when}", text))
        elif report.skipped and self._outcome == "passed":
            self._outcome = "skipped"
        return report

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        self._close()  # last: session fixtures' teardowns are recorded

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        own, drain = self.own, self.drain
        if own is None or own.stats is None or drain is None:
            return
        writer = drain.writer
        terminalreporter.write_line(
            f"tidescope: {writer.events_written} events recorded, "
            f"{own.stats.get('dropped_events', 0)} dropped, "
            f"{own.stats.get('internal_errors', 0)} internal errors -> {writer.path}"
        )

    def pytest_unconfigure(self) -> None:
        self._close()

    # -- the trace --------------------------------------------------------------------

    def _close(self) -> None:
        own = self.own
        if own is None or own.stats is not None or self.drain is None:
            return
        own.installation.uninstall()
        own.stats = own.session.stop()
        self.drain.stop(own.stats)
        from tidescope.runner import _write_node_table  # noqa: PLC0415

        _write_node_table(self.drain.directory)

    def _failure(self, nodeid: str) -> str:
        drain = self.drain
        assert drain is not None
        drain.pump()  # what the buffer holds now, written
        path = drain.writer.path
        try:
            events = [r for r in read_trace(path) if r.get("correlation_id") == nodeid]
        except TraceError as exc:
            return f"trace: {path}\n{exc}"
        return f"trace: {path}\n" + format_chain(events)


def _mark(data: dict[str, Any]) -> None:
    emit_in_context(ingestor.ingest_generic_event, EventType.TRACE_CONTROL, data)


def _location(item: pytest.Item) -> str:
    path, line, _ = item.location
    return f"{path}:{(line or 0) + 1}"


# ---------------------------------------------------------------------------------------
# the failing call chain


def format_chain(events: list[dict[str, Any]]) -> str:
    """The call chain an exception went through, from one test's event records (as
    :func:`tidescope.export.reader.read_trace` gives them), outermost call first."""
    entries: dict[Any, dict[str, Any]] = {}
    exits: dict[Any, dict[str, Any]] = {}
    children: dict[Any, list[Any]] = {}
    for r in events:
        kind = r.get("event_type")
        if kind == EventType.FUNCTION_ENTRY:
            entries[r["call_id"]] = r
            children.setdefault(r.get("parent_id"), []).append(r["call_id"])
        elif kind == EventType.FUNCTION_EXIT:
            exits[r["call_id"]] = r
    raised = [c for c in exits if _exception(exits[c]) is not None and c in entries]
    tops = [c for c in raised if entries[c].get("parent_id") not in entries]
    if not tops:
        return "no recorded call raised (the failure came from code tidescope does not record)"
    chain = [max(tops, key=lambda c: exits[c]["timestamp"])]
    while True:
        exc = _exception(exits[chain[-1]])
        inner = [
            c for c in children.get(chain[-1], ())
            if c in exits and _exception(exits[c]) == exc
        ]  # fmt: skip
        if not inner:
            break
        chain.append(max(inner, key=lambda c: exits[c]["timestamp"]))
    lines = []
    for depth, call in enumerate(chain):
        pad = "  " * depth
        entry, done = entries[call], exits[call]
        lines.append(f"{pad}{_signature(entry)} raised {_describe(_exception(done))}{_line(entry)}")
        nxt = chain[depth + 1] if depth + 1 < len(chain) else None
        before = [
            c for c in children.get(call, ())
            if c != nxt and c in exits and _exception(exits[c]) is None
            and (nxt is None or exits[c]["timestamp"] < entries[nxt]["timestamp"])
        ]  # fmt: skip
        if len(before) > _CALLS_SHOWN:
            lines.append(f"{pad}  ... {len(before) - _CALLS_SHOWN} earlier calls")
        for c in before[-_CALLS_SHOWN:]:
            value = exits[c].get("data", {}).get("return_value")
            lines.append(f"{pad}  {_signature(entries[c])} -> {_value(value)}")
    return "\n".join(lines)


def _exception(exit_record: dict[str, Any]) -> Any:
    data = exit_record.get("data") or {}
    return data.get("exception") if data.get("exit_reason") == "exception" else None


def _signature(entry: dict[str, Any]) -> str:
    data = entry.get("data") or {}
    args = data.get("args") or {}
    shown = ", ".join(f"{k}={_value(v)}" for k, v in args.items()) if isinstance(args, dict) else ""
    return f"{data.get('module')}.{data.get('function')}({shown})"


def _line(entry: dict[str, Any]) -> str:
    node = entry.get("ast_node_id")
    parts = node.split(":") if isinstance(node, str) else []
    return f"  [line {parts[2]}]" if len(parts) >= 4 else ""


def _describe(exc: Any) -> str:
    if not isinstance(exc, dict):
        return _value(exc)
    kind = str(exc.get("type", "?")).removeprefix("builtins.")
    args = exc.get("args")
    if isinstance(args, list) and args:
        first = _text(args[0])
        if first is None:
            first = _value(args[0])
        message = first.splitlines()[0] if first else ""
        return f"{kind}: {message}" if message else kind
    return kind


def _text(value: Any) -> str | None:
    """A string, or what was kept of a long one (pytest's messages under CI are long)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("$truncated") == "str":
        kept = value.get("kept")
        if isinstance(kept, str):
            return kept + "..."
    return None


def _value(value: Any) -> str:
    if isinstance(value, dict) and "$ref" in value:  # an object by reference
        size = f" len={value['len']}" if "len" in value else ""
        return f"<{value['$ref']}{size}>"
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 3] + "..."
