"""The instrumentation runtime: every ``report_*`` function instrumented code calls.

Python port of the seed's ``InstrumentationRuntime`` facade. One module per domain:
``core`` (calls, spawns, messages, state, errors), ``ast`` (values and calls tied to AST
nodes), ``performance`` (self-measurement); HTTP, live sessions, channels, databases,
actors and distributed reporters join them as their own modules.

Every reporter checks this thread's or task's context first and costs almost nothing when
capture is off; none of them ever raises into the caller (failures are counted, see
``tidescope.stats()["internal_errors"]``).
"""

from __future__ import annotations

from tidescope.capture.context import (
    bind_correlation_id,
    call_stack,
    clear_context,
    current_call_id,
    current_correlation_id,
    enabled,
    get_context,
    initialize_context,
    instrumentation_disabled,
    pop_call_stack,
    push_call_stack,
    with_instrumentation_disabled,
)
from tidescope.capture.runtime.ast import (
    AstNodeId,
    AstNodeIdError,
    get_ast_correlation_metadata,
    parse_ast_node_id,
    report_ast_branch_execution,
    report_ast_correlation_performance,
    report_ast_expression_value,
    report_ast_function_entry,
    report_ast_function_entry_with_node_id,
    report_ast_function_exit,
    report_ast_function_exit_with_node_id,
    report_ast_line_execution,
    report_ast_loop_iteration,
    report_ast_pattern_match,
    report_ast_variable_snapshot,
    report_expression_value,
    report_line_execution,
    report_local_variable_snapshot,
    validate_ast_node_id,
)
from tidescope.capture.runtime.core import (
    report_error,
    report_function_entry,
    report_function_exit,
    report_message_send,
    report_process_spawn,
    report_state_change,
)
from tidescope.capture.runtime.performance import measure_overhead

__all__ = [
    "AstNodeId",
    "AstNodeIdError",
    "bind_correlation_id",
    "call_stack",
    "clear_context",
    "current_call_id",
    "current_correlation_id",
    "enabled",
    "get_ast_correlation_metadata",
    "get_context",
    "initialize_context",
    "instrumentation_disabled",
    "measure_overhead",
    "parse_ast_node_id",
    "pop_call_stack",
    "push_call_stack",
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
    "report_error",
    "report_expression_value",
    "report_function_entry",
    "report_function_exit",
    "report_line_execution",
    "report_local_variable_snapshot",
    "report_message_send",
    "report_process_spawn",
    "report_state_change",
    "validate_ast_node_id",
    "with_instrumentation_disabled",
]
