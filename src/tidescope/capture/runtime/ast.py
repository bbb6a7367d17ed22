"""AST reporters (the seed's ``ASTReporting``): values, lines, branches and calls tied to AST nodes.

Each takes the enclosing call's id as ``correlation_id`` (what ``report_function_entry``
returned, or None for "the innermost call here"), and the ``*_with_node_id`` and
``report_ast_*`` variants an ``ast_node_id`` that reaches the event's envelope.

AST node ids have the form ``module:qualname:line:column:node_type``, for example
``shop.cart:Cart.add:12:8:Assign``: deterministic, readable, unique within a module.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Final, NamedTuple

from tidescope.capture import _core
from tidescope.capture._snapshot import Snapper
from tidescope.capture.runtime.core import emit_in_context
from tidescope.events import EventType

__all__ = [
    "AstNodeId",
    "AstNodeIdError",
    "get_ast_correlation_metadata",
    "parse_ast_node_id",
    "report_ast_branch_execution",
    "report_ast_correlation_performance",
    "report_ast_expression_value",
    "report_ast_function_entry",
    "report_ast_function_entry_with_node_id",
    "report_ast_function_exit",
    "report_ast_function_exit_with_node_id",
    "report_ast_line_execution",
    "report_ast_loop_iteration",
    "report_ast_pattern_match",
    "report_ast_variable_snapshot",
    "report_expression_value",
    "report_line_execution",
    "report_local_variable_snapshot",
    "validate_ast_node_id",
]


def _value_event(
    buffer: Any,
    event_type: EventType,
    correlation_id: Any,
    ast_node_id: Any,
    data: dict[str, Any],
    *,
    call_id: Any,
    parent_id: Any,
    correlation: Any,
) -> bool:
    # The reporter's correlation_id names the call the value belongs to; the context gives
    # the parent and the correlation when it is the innermost call here.
    if correlation_id is not None and correlation_id != call_id:
        call_id, parent_id = correlation_id, None
    s = Snapper(_core.get_limits())
    payload = s.payload(data)
    if ast_node_id is not None and type(ast_node_id) is not str:
        ast_node_id = s.snap(ast_node_id)
    return _core.write_event(
        buffer,
        event_type,
        payload,
        call_id=call_id,
        parent_id=parent_id,
        correlation_id=correlation,
        ast_node_id=ast_node_id,
    )


def _report(event_type: EventType, correlation_id: Any, ast_node_id: Any, **data: Any) -> bool:
    def ingest(
        buffer: Any, *, call_id: Any, parent_id: Any, correlation_id: Any = None, **_: Any
    ) -> bool:
        return _value_event(
            buffer, event_type, cid, ast_node_id, data,
            call_id=call_id, parent_id=parent_id, correlation=correlation_id,
        )  # fmt: skip

    cid = _core.call_of(correlation_id)  # rewritten code passes its call's token
    return emit_in_context(ingest)


def report_local_variable_snapshot(
    correlation_id: Any, variables: Any, line: Any, source: Any = "ast"
) -> bool:
    """Record local variables' values at ``line``. Ports ``report_local_variable_snapshot/4``."""
    return _report(
        EventType.LOCAL_VARIABLE_SNAPSHOT, correlation_id, None,
        variables=variables, line=line, source=source,
    )  # fmt: skip


def report_ast_variable_snapshot(
    correlation_id: Any, variables: Any, line: Any, ast_node_id: Any
) -> bool:
    """Record local variables after a node. Ports ``report_ast_variable_snapshot/4``."""
    return _report(
        EventType.LOCAL_VARIABLE_SNAPSHOT, correlation_id, ast_node_id,
        variables=variables, line=line, source="ast",
    )  # fmt: skip


def report_expression_value(
    correlation_id: Any, expression: Any, value: Any, line: Any, source: Any = "ast"
) -> bool:
    """Record an expression's value. Ports ``report_expression_value/5``."""
    return _report(
        EventType.EXPRESSION_VALUE, correlation_id, None,
        expression=expression, value=value, line=line, source=source,
    )  # fmt: skip


def report_line_execution(
    correlation_id: Any, line: Any, context: Any = None, source: Any = "ast"
) -> bool:
    """Record that ``line`` ran. Ports ``report_line_execution/4``."""
    return _report(
        EventType.LINE_EXECUTION, correlation_id, None, line=line, context=context, source=source
    )


def report_ast_expression_value(
    correlation_id: Any, expression: Any, value: Any, line: Any, ast_node_id: Any
) -> bool:
    """Record an expression's value at its node. Ports ``report_ast_expression_value/5``."""
    return _report(
        EventType.EXPRESSION_VALUE, correlation_id, ast_node_id,
        expression=expression, value=value, line=line, source="ast",
    )  # fmt: skip


def report_ast_line_execution(
    correlation_id: Any, line: Any, context: Any, ast_node_id: Any
) -> bool:
    """Record that a line ran, at its node. Ports ``report_ast_line_execution/4``."""
    return _report(
        EventType.LINE_EXECUTION, correlation_id, ast_node_id,
        line=line, context=context, source="ast",
    )  # fmt: skip


def report_ast_pattern_match(
    correlation_id: Any,
    pattern: Any,
    value: Any,
    match_success: Any,
    line: Any,
    ast_node_id: Any,
) -> bool:
    """Record a ``match``/``case`` attempt. Ports ``report_ast_pattern_match/6``."""
    return _report(
        EventType.PATTERN_MATCH, correlation_id, ast_node_id,
        pattern=pattern, value=value, match_success=match_success, line=line,
    )  # fmt: skip


def report_ast_branch_execution(
    correlation_id: Any,
    branch_type: Any,
    condition: Any,
    branch_taken: Any,
    line: Any,
    ast_node_id: Any,
) -> bool:
    """Record a branch decision (if/elif/else, conditional expression). Ports
    ``report_ast_branch_execution/6``."""
    return _report(
        EventType.BRANCH_EXECUTION, correlation_id, ast_node_id,
        branch_type=branch_type, condition=condition, branch_taken=branch_taken, line=line,
    )  # fmt: skip


def report_ast_loop_iteration(
    correlation_id: Any,
    loop_type: Any,
    iteration_count: Any,
    current_value: Any,
    line: Any,
    ast_node_id: Any,
) -> bool:
    """Record one loop iteration. Ports ``report_ast_loop_iteration/6``."""
    return _report(
        EventType.LOOP_ITERATION, correlation_id, ast_node_id,
        loop_type=loop_type, iteration_count=iteration_count, current_value=current_value,
        line=line,
    )  # fmt: skip


def report_ast_correlation_performance(
    correlation_id: Any, operation: Any, duration_ns: Any
) -> bool:
    """Record an AST-correlation step's cost. Ports ``report_ast_correlation_performance/3``."""
    return _report(
        EventType.AST_CORRELATION_PERFORMANCE, correlation_id, None,
        operation=operation, duration_ns=duration_ns, source="ast_correlation",
        performance_metric=True,
    )  # fmt: skip


def report_ast_function_entry(module: Any, function: Any, args: Any, correlation_id: Any) -> Any:
    """Record a call's entry under the id ``correlation_id`` (a new id if None); returns the
    call id, or None when capture is off. Ports ``report_ast_function_entry/4``."""
    return _core.report_function_entry(module, function, args, call_id=correlation_id)


def report_ast_function_entry_with_node_id(
    module: Any, function: Any, args: Any, correlation_id: Any, ast_node_id: Any
) -> Any:
    """:func:`report_ast_function_entry` with the function's node id on the event (the seed
    dropped it). Ports ``report_ast_function_entry_with_node_id/5``."""
    return _core.report_function_entry(
        module, function, args, call_id=correlation_id, ast_node_id=ast_node_id
    )


def report_ast_function_exit(
    correlation_id: Any, return_value: Any, duration_ns: Any = None
) -> bool:
    """Record a call's exit (the innermost call here if ``correlation_id`` is None) and pop it.
    Ports ``report_ast_function_exit/3``."""
    cid = _core.current_call_id() if correlation_id is None else correlation_id
    return _core.report_function_exit(cid, return_value, duration_ns)


def report_ast_function_exit_with_node_id(
    correlation_id: Any, return_value: Any, duration_ns: Any, ast_node_id: Any
) -> bool:
    """:func:`report_ast_function_exit` with the node id on the event. Ports
    ``report_ast_function_exit_with_node_id/4``."""
    cid = _core.current_call_id() if correlation_id is None else correlation_id
    return _core.report_function_exit(cid, return_value, duration_ns, ast_node_id=ast_node_id)


def get_ast_correlation_metadata() -> dict[str, Any]:
    """What an AST correlator needs to know about here and now (no event is written)."""
    return {
        "process_id": _core.pid(),
        "thread_id": threading.get_ident(),
        "task_id": _core.current_task_id(),
        "correlation_id": _core.current_correlation_id(),
        "call_id": _core.current_call_id(),
        "timestamp_mono": time.monotonic_ns(),
        "timestamp_system": time.time_ns(),
        "enabled": _core.enabled(),
    }


class AstNodeIdError(ValueError):
    """Not an AST node id; ``reason`` is ``"not_string"`` or ``"invalid_format"``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AstNodeId(NamedTuple):
    """The parts of an AST node id."""

    module: str
    qualname: str
    line: int
    column: int
    node_type: str

    def __str__(self) -> str:
        return f"{self.module}:{self.qualname}:{self.line}:{self.column}:{self.node_type}"


_IDENT = r"[^\W\d]\w*"
_QUAL_PART = rf"(?:{_IDENT}|<{_IDENT}>)"
_NODE_ID: Final = re.compile(
    rf"({_IDENT}(?:\.{_IDENT})*):({_QUAL_PART}(?:\.{_QUAL_PART})*):(\d+):(\d+):({_IDENT})"
)


def parse_ast_node_id(ast_node_id: Any) -> AstNodeId:
    """Split a node id into its parts.

    Raises:
        AstNodeIdError: not a string, or not ``module:qualname:line:column:node_type``.
    """
    if type(ast_node_id) is not str:
        raise AstNodeIdError(
            "not_string", f"an AST node id is a str, got {type(ast_node_id).__name__}"
        )
    m = _NODE_ID.fullmatch(ast_node_id)
    if m is None:
        raise AstNodeIdError(
            "invalid_format",
            f"{ast_node_id[:200]!r} is not an AST node id of the form "
            "module:qualname:line:column:node_type (e.g. 'shop.cart:Cart.add:12:8:Assign')",
        )
    return AstNodeId(m[1], m[2], int(m[3]), int(m[4]), m[5])


def validate_ast_node_id(ast_node_id: Any) -> str:
    """Return ``ast_node_id`` if it is a well-formed node id. Ports ``validate_ast_node_id/1``.

    Raises:
        AstNodeIdError: ``reason`` ``"not_string"`` or ``"invalid_format"`` (the seed's errors).
    """
    parse_ast_node_id(ast_node_id)
    return ast_node_id  # type: ignore[no-any-return]
