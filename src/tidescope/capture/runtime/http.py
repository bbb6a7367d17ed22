"""HTTP reporters (the seed's Phoenix request, controller and action reporting).

The request and controller reporters take the request's ``correlation_id``, which becomes
the events' envelope correlation (None: this context's correlation). The action reporters
take none and carry this context's correlation (the seed's carried none). As in the seed,
``report_action_params``, ``report_action_start`` and ``report_action_complete`` record only
when their flag is exactly ``True``: a truthy ``1`` or ``"yes"`` records nothing.
"""

from __future__ import annotations

from typing import Any

from tidescope.capture._redact import strip_url
from tidescope.capture.runtime._domain import emit
from tidescope.events import EventType

__all__ = [
    "report_action_complete",
    "report_action_error",
    "report_action_params",
    "report_action_start",
    "report_action_success",
    "report_controller_entry",
    "report_controller_exit",
    "report_http_request_complete",
    "report_http_request_start",
]


def report_http_request_start(
    correlation_id: Any, method: Any, path: Any, params: Any, remote_ip: Any
) -> bool:
    """Record that a request arrived; True if recorded.

    Ports ``PhoenixReporting.report_phoenix_request_start/5``. A path given with its query
    string or as a URL loses its credentials; ``params`` (a dict) is redacted by name.
    """
    if type(path) is str and ("?" in path or "@" in path):
        path = strip_url(path)
    return emit(
        EventType.HTTP_REQUEST_START, correlation_id,
        method=method, path=path, params=params, remote_ip=remote_ip,
    )  # fmt: skip


def report_http_request_complete(
    correlation_id: Any, status_code: Any, content_type: Any, duration_ms: Any
) -> bool:
    """Record that a response was sent; True if recorded.

    Ports ``PhoenixReporting.report_phoenix_request_complete/4``.
    """
    return emit(
        EventType.HTTP_REQUEST_COMPLETE, correlation_id,
        status_code=status_code, content_type=content_type, duration_ms=duration_ms,
    )  # fmt: skip


def report_controller_entry(
    correlation_id: Any, controller: Any, action: Any, metadata: Any
) -> bool:
    """Record that a handler (controller action, view, endpoint) was entered; True if recorded.

    Ports ``PhoenixReporting.report_phoenix_controller_entry/4``.
    """
    return emit(
        EventType.CONTROLLER_ENTRY, correlation_id,
        controller=controller, action=action, metadata=metadata,
    )  # fmt: skip


def report_controller_exit(correlation_id: Any, controller: Any, action: Any, result: Any) -> bool:
    """Record that a handler returned ``result``; True if recorded.

    Ports ``PhoenixReporting.report_phoenix_controller_exit/4``.
    """
    return emit(
        EventType.CONTROLLER_EXIT, correlation_id,
        controller=controller, action=action, result=result,
    )  # fmt: skip


def report_action_params(action_name: Any, request: Any, params: Any, should_capture: Any) -> bool:
    """Record an action's parameters if ``should_capture`` is exactly True; True if recorded.

    Ports ``PhoenixReporting.report_phoenix_action_params/4`` (``conn`` is ``request``).
    """
    if should_capture is not True:
        return False
    return emit(
        EventType.ACTION_PARAMS, None, action_name=action_name, request=request, params=params
    )


def report_action_start(action_name: Any, request: Any, should_capture_state: Any) -> bool:
    """Record an action's start if ``should_capture_state`` is exactly True; True if recorded.

    Ports ``PhoenixReporting.report_phoenix_action_start/3``.
    """
    if should_capture_state is not True:
        return False
    return emit(EventType.ACTION_START, None, action_name=action_name, request=request)


def report_action_success(action_name: Any, request: Any, result: Any) -> bool:
    """Record an action's result; True if recorded.

    Ports ``PhoenixReporting.report_phoenix_action_success/3``.
    """
    return emit(
        EventType.ACTION_SUCCESS, None, action_name=action_name, request=request, result=result
    )


def report_action_error(action_name: Any, request: Any, kind: Any, reason: Any) -> bool:
    """Record an action's failure (``kind``: an exception class or a label; ``reason``: the
    exception or a value); True if recorded.

    Ports ``PhoenixReporting.report_phoenix_action_error/4``.
    """
    return emit(
        EventType.ACTION_ERROR, None,
        action_name=action_name, request=request, kind=kind, reason=reason,
    )  # fmt: skip


def report_action_complete(action_name: Any, request: Any, should_capture_response: Any) -> bool:
    """Record an action's end if ``should_capture_response`` is exactly True; True if recorded.

    Ports ``PhoenixReporting.report_phoenix_action_complete/3``.
    """
    if should_capture_response is not True:
        return False
    return emit(EventType.ACTION_COMPLETE, None, action_name=action_name, request=request)
