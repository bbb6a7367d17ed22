"""Top-level callables for the process integration tests (spawned children import them)."""

from __future__ import annotations

import os
from typing import Any

from tidescope.capture import runtime as rt

initialized: list[Any] = []


def remember(value: Any) -> None:
    """A user initializer: the integration must still run it."""
    initialized.append(value)


def context_here(tag: Any) -> dict[str, Any]:
    """What the child sees, with one traced call of its own inside."""
    cid = rt.report_function_entry("_proc_workers", "work", [tag])
    seen = {
        "pid": os.getpid(),
        "correlation": rt.current_correlation_id(),
        "call": rt.current_call_id(),
        "initialized": list(initialized),
        "tag": tag,
    }
    rt.report_function_exit(cid, tag)
    return seen


def square(x: int) -> int:
    cid = rt.report_function_entry("_proc_workers", "square", [x])
    rt.report_function_exit(cid, x * x)
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def huge(n: int) -> str:
    return "h" * n


class Hostile:
    """Picklable, but its repr, equality and attribute lookups all raise."""

    def __init__(self) -> None:
        self.payload = "p" * 100_000

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    __hash__ = None  # type: ignore[assignment]


def echo(value: Any) -> Any:
    return value
