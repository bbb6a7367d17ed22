"""What rewritten code calls: every rewritten module binds this module as ``__tidescope_rt__``.

The plain reporters are the capture core's own functions under short names (one attribute
load and one call per site). Code rewritten by this version reports values through
:func:`value_sites`'s reporter; ``snap``, ``loop``, ``branch``, ``xbranch``, ``match`` and
``line`` stay for code rewritten before it. The helpers below add what a single reporter
cannot do: an exception exit that tells cancellation apart, a lambda's entry and exit
around its body, and the suspension protocol of generators (see
``tidescope.instrument._rewrite``). Like every reporter, none of them raises into the
instrumented program: they only call the core, which counts its own failures.
"""

from __future__ import annotations

import builtins
import sys
import time
import types
from asyncio import CancelledError
from collections.abc import Callable, Generator, Iterable
from typing import Any, Final

from tidescope.capture import _core, _redact, _sites
from tidescope.capture.runtime import ast as _ast

__all__ = [
    "BaseException",
    "branch",
    "call",
    "delegate",
    "enter",
    "enter_site",
    "fail",
    "fail_site",
    "genter",
    "gfail",
    "gleave",
    "leave",
    "leave_site",
    "line",
    "loop",
    "match",
    "on",
    "redact",
    "resume",
    "site_return",
    "sites",
    "snap",
    "suspend",
    "track",
    "value_sites",
    "xbranch",
    "yield_",
]

# Rewritten handlers name the class through this module, so a user's global
# ``BaseException = ...`` can't change what the injected ``except`` catches.
BaseException = builtins.BaseException

on = False
"""True while capture is on globally: rewritten functions skip their reports without it."""

_tracked: list[dict[str, Any]] = []  # the globals of every rewritten module executed


def track(namespace: dict[str, Any]) -> bool:
    """Keep ``namespace["__tidescope_on__"]`` equal to :data:`on` from now on; returns it.

    Every rewritten module calls this first thing: its functions then test the flag with
    one global read (a module attribute load costs twice as much on a 50 ns function).
    """
    _tracked.append(namespace)
    return on


def _set_on(flag: bool) -> None:
    global on
    on = flag
    for namespace in _tracked:
        namespace["__tidescope_on__"] = flag


_core.on_enabled_change(_set_on)

enter: Final = _core.report_function_entry
leave: Final = _core.report_function_exit
enter_site: Final = _core.report_site_entry
leave_site: Final = _core.report_site_exit
site_return: Final = _core.report_site_return
snap: Final = _ast.report_ast_variable_snapshot
branch: Final = _ast.report_ast_branch_execution
match: Final = _ast.report_ast_pattern_match
line: Final = _ast.report_ast_line_execution
redact: Final = _redact.redacted

LOOP_FIRST: Final = 10
"""Every loop execution reports its first 10 iterations..."""
LOOP_EVERY: Final = 100
"""...then every 100th (100, 200, 300...)."""

_now = time.monotonic_ns  # the core's clock (``_clock.monotonic_ns``)


def _reason(exc: BaseException) -> str:
    t = type(exc)  # never isinstance: it could run a user's __class__ property
    return "cancelled" if issubclass(t, (CancelledError, GeneratorExit)) else "exception"


def fail(call_id: Any, ast_node_id: Any) -> None:
    """Report the exit of ``call_id`` by the exception being handled; returns None (the
    caller's new call id). Called in an ``except`` clause: an ``as`` name there would be
    one more local in every instrumented frame, set up and cleared on every call."""
    if call_id is not None:
        exc: Any = sys.exc_info()[1]
        try:
            reason = _reason(exc)
        except Exception:
            reason = "exception"
        leave(call_id, exc, None, exit_reason=reason, ast_node_id=ast_node_id)


def sites(
    table: tuple[tuple[str, str, str, tuple[str, ...], str, int], ...],
) -> tuple[Any, Any, range]:
    """Register a module's functions (see ``tidescope.capture._sites``); returns what its
    code binds: ``enter_site``, ``site_return`` and the site ids, in order."""
    return enter_site, site_return, _sites.register_sites(table)


def value_sites(table: tuple[tuple[Any, ...], ...]) -> Any:
    """Register a module's value-reporting nodes (see ``tidescope.capture._pure_values``);
    returns what its code binds as ``__tidescope_value__``: ``report(call, k, *values)``."""
    return _core.value_sites(table)


def fail_site(call_id: Any, site: int) -> None:
    """:func:`fail` for a registered site."""
    if call_id is not None:
        try:
            node = _sites.site(site).ast_node_id
        except Exception as exc:
            _core.count_error(exc)
            node = None
        fail(call_id, node)


def call(module: str, function: str, args: Any, ast_node_id: str, body: Callable[[], Any]) -> Any:
    """Run a lambda's body between its entry and exit reports; returns what the body returns."""
    cid = enter(module, function, args, ast_node_id=ast_node_id)
    try:
        value = body()
    except BaseException:
        fail(cid, ast_node_id)
        raise
    leave(cid, value, ast_node_id=ast_node_id)
    return value


def xbranch(call_id: Any, condition: str, taken: bool, line: int, ast_node_id: str) -> None:
    """Report a conditional expression's decision; returns None (``None or value``)."""
    branch(call_id, "conditional", condition, taken, line, ast_node_id)


def loop(call_id: Any, count: int, loop_type: str, value: Any, line: int, ast_node_id: str) -> int:
    """Count one iteration of a loop; report the first 10, then every 100th. Returns the count."""
    count += 1
    if count <= LOOP_FIRST or count % LOOP_EVERY == 0:
        _ast.report_ast_loop_iteration(call_id, loop_type, count, value, line, ast_node_id)
    return count


# ---------------------------------------------------------------------------------------
# generators: entry at the first step, off the stack while suspended, exit at the end


def genter(module: str, function: str, args: Any, ast_node_id: str) -> tuple[Any, int]:
    """A generator's entry: ``(call id, start ns)``; the id is pushed like a call's."""
    return enter(module, function, args, ast_node_id=ast_node_id), _now()


def gleave(call_id: Any, start_ns: int, value: Any, ast_node_id: str) -> None:
    """A generator's normal exit; its duration runs from the first step to now."""
    if call_id is not None:
        leave(call_id, value, _now() - start_ns, ast_node_id=ast_node_id)


def gfail(call_id: Any, start_ns: int, ast_node_id: str) -> None:
    """A generator's exit by the exception being handled (``GeneratorExit`` from
    ``close()`` is "cancelled"); called in an ``except`` clause, as :func:`fail`."""
    if call_id is not None:
        exc: Any = sys.exc_info()[1]
        try:
            reason = _reason(exc)
        except Exception:
            reason = "exception"
        leave(call_id, exc, _now() - start_ns, exit_reason=reason, ast_node_id=ast_node_id)


def suspend(call_id: Any, value: Any = None) -> Any:
    """Take ``call_id`` off this context's call stack before a yield; returns ``value``."""
    if call_id is not None:
        try:
            if _core.current_call_id() == call_id:
                _core.pop_call_stack()
            elif call_id in _core.call_stack():  # something above it never exited: drop it too
                while _core.pop_call_stack() not in (call_id, None):
                    pass
        except Exception as exc:
            _core.count_error(exc)
    return value


def resume(call_id: Any) -> None:
    """Put ``call_id`` back on the call stack of whoever resumed the generator.

    A no-op when it is already on top: the yielded expression raised before ``suspend``
    ran (a suspended generator's id is on no stack, so it can't be on top otherwise).
    """
    if call_id is not None:
        try:
            if _core.current_call_id() != call_id:
                _core.push_call_stack(call_id)
        except Exception as exc:
            _core.count_error(exc)


def yield_(call_id: Any, value: Any) -> Generator[Any, Any, Any]:
    """``yield value`` off the call stack (used as ``yield from``, where a plain yield
    sits inside an expression)."""
    suspend(call_id)
    try:
        return (yield value)
    finally:
        resume(call_id)


def delegate(call_id: Any, iterable: Iterable[Any]) -> Generator[Any, Any, Any]:
    """``yield from iterable`` with the generator off the call stack only while suspended.

    PEP 380's expansion of ``yield from``: the sub-iterator runs each step with this
    generator on the stack (so a sub-generator's calls are its children), and ``send``,
    ``throw`` and ``close`` are passed on as ``yield from`` passes them.
    """
    obj: Any = iterable
    # a coroutine is awaited through, as ``yield from`` does in a @types.coroutine generator
    it: Any = obj.__await__() if type(obj) is types.CoroutineType else iter(obj)
    try:
        y = next(it)
    except StopIteration as e:
        return e.value
    while True:
        suspend(call_id)
        try:
            s = yield y
        except GeneratorExit:
            resume(call_id)
            close = getattr(it, "close", None)
            if close is not None:
                close()
            raise
        except BaseException as exc:
            resume(call_id)
            throw = getattr(it, "throw", None)
            if throw is None:
                raise
            try:
                y = throw(exc)
            except StopIteration as e:
                return e.value
        else:
            resume(call_id)
            try:
                y = next(it) if s is None else it.send(s)
            except StopIteration as e:
                return e.value
