"""``tidescope export DIR --format otlp --endpoint URL``: a finished trace sent as spans."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

from tidescope.config import Config, ConfigError

__all__ = ["export_otlp"]


def export_otlp(
    directory: str,
    endpoint: str | None,
    cfg: Config,
    fail: Callable[[str], NoReturn],
    reading: Callable[[Callable[[], Any]], Any],
) -> int:
    """Send ``directory``'s spans to ``endpoint`` (or the ``otlp_endpoint`` setting) with the
    settings' limits; one line on stderr says what went and what was lost. Returns 0, or 1
    if requests failed (the spans they held are counted as dropped)."""
    from tidescope.export.otlp import export_trace, limits_of, require_otlp  # noqa: PLC0415

    url = endpoint or cfg.otlp_endpoint
    if url is None:
        fail("--format otlp needs --endpoint URL (or TIDESCOPE_OTLP_ENDPOINT)")
    try:
        cfg = cfg.replace(otlp_endpoint=url)
    except ConfigError as exc:
        fail(str(exc).replace("otlp_endpoint=", "--endpoint ", 1))
    try:
        require_otlp()
    except ImportError as exc:
        fail(str(exc))
    damage: list[str] = []
    result = reading(
        lambda: export_trace(
            directory, url, limits=limits_of(cfg), timeout=cfg.otlp_timeout, damage=damage
        )
    )
    for line in damage:
        print(f"tidescope: {line}", file=sys.stderr)
    lost = []
    if result.spans_dropped:
        lost.append(
            f"{result.spans_dropped} spans dropped in {result.requests_failed} failed"
            f" request(s) ({result.last_error})"
        )
    if result.spans_over_budget:
        lost.append(f"{result.spans_over_budget} spans over the per-trace budget")
    tail = f", {', '.join(lost)}" if lost else ""
    print(f"tidescope: {result.spans_exported} spans -> {url}{tail}", file=sys.stderr)
    return 1 if result.requests_failed else 0
