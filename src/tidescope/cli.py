"""The ``tidescope`` command: ``demo`` records a small program, ``debug`` says which core runs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _demo_program() -> None:
    from tidescope.capture import runtime  # noqa: PLC0415

    def add(cart: dict[str, int], item: str, qty: int) -> int:
        cid = runtime.report_function_entry("demo.shop", "add", [cart, item, qty])
        try:
            cart[item] = cart.get(item, 0) + qty
            runtime.report_ast_variable_snapshot(cid, {"cart": cart}, 3, "demo.shop:add:3:8:Assign")
            if qty <= 0:
                raise ValueError(f"quantity must be positive, got {qty}")
            total = sum(cart.values())
        except Exception as exc:
            runtime.report_function_exit(cid, exc, exit_reason="exception")
            raise
        runtime.report_function_exit(cid, total)
        return total

    def checkout(items: list[tuple[str, int]]) -> dict[str, int]:
        cid = runtime.report_function_entry("demo.shop", "checkout", [items])
        cart: dict[str, int] = {}
        for item, qty in items:
            try:
                add(cart, item, qty)
            except ValueError as exc:
                runtime.report_error(exc)
        runtime.report_function_exit(cid, cart)
        return cart

    checkout([("apple", 2), ("pear", 0), ("plum", 5)])


def _demo(args: argparse.Namespace) -> int:
    from tidescope.testing import capture  # noqa: PLC0415

    with capture(buffer_size=1024) as cap:
        _demo_program()
    for ev in cap.events():
        if args.json:
            print(json.dumps(ev.to_dict()))
        else:
            d = ev.to_dict()
            print(
                f"{d['event_type']:<24} call={d['call_id']:<10} parent={d['parent_id']!s:<10} "
                f"{json.dumps(d['data'])[:110]}"
            )
    stats = cap.stats()
    print(
        f"-- {stats['total_writes']} events captured, {stats['dropped_events']} dropped, "
        f"{stats['internal_errors']} internal errors, core: {stats['core']}"
    )
    return 0


def _debug(args: argparse.Namespace) -> int:
    import tidescope  # noqa: PLC0415
    from tidescope.config import Config  # noqa: PLC0415

    info: dict[str, Any] = {
        "version": tidescope.__version__,
        "python": sys.version.split()[0],
        **tidescope.core_info(),
    }
    try:
        info["config"] = {k: v for k, v in vars_of(Config.load()).items()}
    except Exception as exc:
        info["config_error"] = str(exc)
    print(json.dumps(info, indent=2))
    return 0


def vars_of(cfg: Any) -> dict[str, Any]:
    """A Config's settings as a dict."""
    import dataclasses  # noqa: PLC0415

    return dataclasses.asdict(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="tidescope", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="record a small program and print its events")
    demo.add_argument("--json", action="store_true", help="one JSON event per line")
    demo.set_defaults(func=_demo)
    debug = sub.add_parser("debug", help="show the version, the core in use and why")
    debug.set_defaults(func=_debug)
    args = parser.parse_args(argv)
    return int(args.func(args))
