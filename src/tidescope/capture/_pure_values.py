"""Value reports by site: a module's reporting nodes registered once, reported by a small int.

The import hook's rewrite (level ``values`` and ``lines``) registers every node that
reports a value (an assignment's snapshot, a branch, a loop, a ``match`` case, a line) in
one table per module, at import, and binds what :func:`value_sites` returns as the
module's ``__tidescope_value__``. A report is then ``__tidescope_value__(call, k, *values)``:
the call token, the node's index ``k`` in the table (a constant) and the values, in the
order of the site's names: no dict, keyword or string per event. The event is the one the
``report_ast_*`` reporter of the same kind writes (``tidescope.capture.runtime.ast``):
same type, data, ids and ``ast_node_id``.

A site is ``(kind, ast_node_id, line, names, detail)``:

========== ======================================= =========================================
kind       detail                                  values
========== ======================================= =========================================
``snap``   ``()``                                  the names' values (``variables``)
``line``   ``()``                                  none
``branch`` ``(branch_type, condition, taken)``     none
``match``  ``(pattern, success)``                  the subject
``loop``   ``(loop_type,)``                        the count so far, then the names' values
========== ======================================= =========================================

A loop's report counts the iteration and returns the new count (it reports the first
:data:`LOOP_FIRST` iterations of each run of the loop, then every :data:`LOOP_EVERY`\\ th);
every other report returns None (a conditional expression's ``report(...) or operand``).

This is the pure twin of ``_speedups.value_sites`` (``_vreport.c``): same names, same
events, same errors (each counted, none raised).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from tidescope.capture import _pure
from tidescope.capture._snapshot import Snapper
from tidescope.events import EventType

__all__ = [
    "KINDS",
    "LOOP_EVERY",
    "LOOP_FIRST",
    "c_namespace",
    "check_sites",
    "token_call_id",
    "value_payload",
    "value_sites",
]

KINDS: Final = ("snap", "line", "branch", "match", "loop")
"""The kinds of value site, by code (the C core switches on the index)."""
SNAP, LINE, BRANCH, MATCH, LOOP = range(5)
_DETAIL: Final = (0, 0, 3, 2, 1)  # how many detail items each kind has
EVENT_TYPES: Final = (
    EventType.LOCAL_VARIABLE_SNAPSHOT,
    EventType.LINE_EXECUTION,
    EventType.BRANCH_EXECUTION,
    EventType.PATTERN_MATCH,
    EventType.LOOP_ITERATION,
)

LOOP_FIRST: Final = 10
"""Every run of a loop reports its first 10 iterations..."""
LOOP_EVERY: Final = 100
"""...then every 100th (100, 200, 300...)."""

Site = tuple[int, str, int, tuple[str, ...], tuple[Any, ...]]


def check_sites(table: Iterable[Any]) -> tuple[Site, ...]:
    """The sites of ``table`` checked, their kinds as codes (both cores build on this).

    Raises:
        TypeError, ValueError: a site that is not ``(kind, ast_node_id, line, names,
            detail)`` as the module docstring says.
    """
    out: list[Site] = []
    for site in table:
        kind, node, line, names, detail = site
        if kind not in KINDS:
            raise ValueError(f"unknown value site kind {kind!r}")
        code = KINDS.index(kind)
        names = tuple(names)
        detail = tuple(detail)
        if type(node) is not str or type(line) is not int:
            raise TypeError(f"a value site's node id is a str and its line an int: {site!r}")
        if not all(type(n) is str for n in names) or len(detail) != _DETAIL[code]:
            raise TypeError(f"bad names or detail for a {kind} site: {site!r}")
        out.append((code, node, line, names, detail))
    return tuple(out)


def token_call_id(token: Any) -> Any:
    """The call id behind a call token (what ``__tidescope_enter__`` returned)."""
    return token


def value_payload(data: dict[str, Any]) -> dict[str, Any]:
    """A value event's data snapshotted, as ``runtime.ast``'s reporters take it (the C core
    calls this when its flat copy would not do)."""
    return Snapper(_pure.get_limits()).payload(data)


def _data(site: Site, values: tuple[Any, ...], count: Any) -> dict[str, Any]:
    """The data a site's event carries, before the snapshot (key order as ``runtime.ast``)."""
    kind, _, line, names, detail = site
    if kind == SNAP:
        return {"variables": dict(zip(names, values)), "line": line, "source": "ast"}  # noqa: B905
    if kind == LINE:
        return {"line": line, "context": None, "source": "ast"}
    if kind == BRANCH:
        return {
            "branch_type": detail[0], "condition": detail[1], "branch_taken": detail[2],
            "line": line,
        }  # fmt: skip
    if kind == MATCH:
        return {"pattern": detail[0], "value": values[0], "match_success": detail[1], "line": line}
    current = dict(zip(names, values)) if names else None  # noqa: B905
    return {
        "loop_type": detail[0], "iteration_count": count, "current_value": current, "line": line,
    }  # fmt: skip


def _report(site: Site, token: Any, values: tuple[Any, ...], count: Any) -> None:
    buf = _pure.active_buffer()
    if buf is None:
        return
    call_id, parent_id, corr = _pure.frame_ids()
    # the token names the call the value belongs to; the context gives the parent and the
    # correlation when it is the innermost call here
    if token is not None:
        cid = token_call_id(token)
        if cid != call_id:
            call_id, parent_id = cid, None
    payload = value_payload(_data(site, values, count))
    _pure.write_event(
        buf, EVENT_TYPES[site[0]], payload,
        call_id=call_id, parent_id=parent_id, correlation_id=corr, ast_node_id=site[1],
    )  # fmt: skip


def value_sites(table: Iterable[Any]) -> Callable[..., Any]:
    """Register a module's value sites; returns its reporter, ``report(token, k, *values)``.

    Raises:
        TypeError, ValueError: a malformed site (see :func:`check_sites`).
    """
    sites = check_sites(table)

    def report(token: Any, k: int, *values: Any) -> Any:
        """Report value site ``k``; returns the loop count of a loop site, else None."""
        try:
            if type(k) is not int or k < 0:
                raise IndexError(f"no value site {k!r}")
            site = sites[k]
            names = site[3]
            count = None
            if site[0] == LOOP:
                if len(values) != len(names) + 1:
                    raise TypeError(
                        f"value site {k} takes {len(names) + 1} values, got {len(values)}"
                    )
                count, values = values[0], values[1:]
                if type(count) is not int:
                    raise TypeError(f"a loop count is an int, got {type(count).__name__}")
                count += 1
                if count > LOOP_FIRST and count % LOOP_EVERY:
                    return count
            elif len(values) != (1 if site[0] == MATCH else len(names)):
                want = 1 if site[0] == MATCH else len(names)
                raise TypeError(f"value site {k} takes {want} values, got {len(values)}")
        except Exception as exc:
            _pure.count_error(exc)
            return None
        try:
            _report(site, token, values, count)
        except Exception as exc:  # the count goes on: the loop's next report is kept
            _pure.count_error(exc)
        return count

    return report


def c_namespace() -> dict[str, Any]:
    """What the C twin reads (``_speedups.values_init``)."""
    return {
        "event_types": EVENT_TYPES,
        "value_payload": value_payload,
        "check_sites": check_sites,
        "loop_first": LOOP_FIRST,
        "loop_every": LOOP_EVERY,
    }
