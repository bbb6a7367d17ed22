"""Database reporters (the seed's Ecto reporting): query start and complete.

Each takes the surrounding request's ``correlation_id``, which becomes the envelope
correlation (None: this context's correlation). The query text and bound parameters pass
through the bounded snapshot like every other value.
"""

from __future__ import annotations

from typing import Any

from tidescope.capture.runtime._domain import emit
from tidescope.events import EventType

__all__ = ["report_db_query_complete", "report_db_query_start"]


def report_db_query_start(
    correlation_id: Any, query: Any, params: Any, metadata: Any, repo: Any
) -> bool:
    """Record that a query is sent (``repo``: the engine, connection or database name);
    True if recorded.

    Ports ``EctoReporting.report_ecto_query_start/5``.
    """
    return emit(
        EventType.DB_QUERY_START, correlation_id,
        query=query, params=params, metadata=metadata, repo=repo,
    )  # fmt: skip


def report_db_query_complete(
    correlation_id: Any, query: Any, params: Any, result: Any, duration_us: Any
) -> bool:
    """Record a query's result (a row count, rows, an error) and duration in microseconds;
    True if recorded.

    Ports ``EctoReporting.report_ecto_query_complete/5``.
    """
    return emit(
        EventType.DB_QUERY_COMPLETE, correlation_id,
        query=query, params=params, result=result, duration_us=duration_us,
    )  # fmt: skip
