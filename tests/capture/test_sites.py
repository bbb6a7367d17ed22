"""Sites: a function registered once, its calls reported by site id and positional values.

Runs on each core; the events must be the ones ``report_function_entry`` / ``_exit`` write
for the same call with the names and node id spelled out.
"""

from __future__ import annotations

import ast
from typing import Any

import pytest

import tidescope
from tidescope.capture import _core, _sites
from tidescope.events import Event, Redacted
from tidescope.instrument import rewrite_source

NODE = "shop.cart:Cart.add:12:4:FunctionDef"


class Point:
    def __init__(self) -> None:
        self.x = 1


def content(e: Event) -> tuple[Any, ...]:
    """What an event says apart from its ids and clocks."""
    data = {k: v for k, v in e.data.items() if k != "duration_ns"}
    return (e.event_type, e.ast_node_id, data, e.parent_id is None)


def record(enter: Any, leave: Any, policy: str) -> list[Event]:
    errors = _core.internal_errors()[0]
    session = tidescope.start(values=policy)
    outer = _core.report_function_entry("shop", "outer", {})
    token = enter()
    assert token is not None and _core.current_call_id() == _core.call_of(token)
    assert leave(token)
    assert _core.current_call_id() == outer
    _core.report_function_exit(outer, None)
    events, _ = session.buffer.read_batch(0, 10)  # type: ignore[union-attr]
    tidescope.stop()
    assert _core.internal_errors()[0] == errors
    return events[1:3]


@pytest.mark.parametrize(
    "values",
    [
        (3, "x"),
        ([1, [2, 3]], {"k": (1, 2)}),
        (Redacted("str"), "y" * 400),
        (Point(), [Point()]),
    ],
    ids=["scalars", "containers", "redacted-and-long", "objects"],
)
@pytest.mark.parametrize("policy", ["deep", "ref"])
def test_a_site_reports_what_the_spelled_out_call_reports(
    values: tuple[Any, Any], policy: str
) -> None:
    (site,) = _sites.register_sites([("shop.cart", "Cart.add", NODE, ("item", "qty"), "f", 12)])
    by_site = record(
        lambda: _core.report_site_entry(site, *values),
        lambda token: _core.report_site_exit(token, values[0], site),
        policy,
    )
    args = {"item": values[0], "qty": values[1]}
    by_name = record(
        lambda: _core.report_function_entry("shop.cart", "Cart.add", args, ast_node_id=NODE),
        lambda cid: _core.report_function_exit(cid, values[0], ast_node_id=NODE),
        policy,
    )
    assert [content(e) for e in by_site] == [content(e) for e in by_name]
    assert by_site[0].call_id == by_site[1].call_id


def test_a_site_return_records_the_exit_and_returns_the_value() -> None:
    (site,) = _sites.register_sites([("shop.cart", "Cart.add", NODE, ("item",), "f", 12)])
    value = [1, 2]
    by_return = record(
        lambda: _core.report_site_entry(site, 3),
        lambda cid: _core.report_site_return(cid, value, site) is value,
        "deep",
    )
    by_exit = record(
        lambda: _core.report_site_entry(site, 3),
        lambda cid: _core.report_site_exit(cid, value, site),
        "deep",
    )
    assert [content(e) for e in by_return] == [content(e) for e in by_exit]
    assert by_return[1].data["return_value"] == [1, 2]
    assert _core.report_site_return(None, value, site) is value  # the entry made no call


def test_a_site_snapshot_is_taken_at_the_call() -> None:
    (site,) = _sites.register_sites([("m", "f", "m:f:1:0:FunctionDef", ("xs",), "m.py", 1)])
    xs = [1, 2]
    session = tidescope.start(values="deep")
    cid = _core.report_site_entry(site, xs)
    xs.append(3)
    _core.report_site_exit(cid, xs, site)
    (entry, exit_), _ = session.buffer.read_batch(0, 10)  # type: ignore[union-attr]
    tidescope.stop()
    assert entry.data["args"] == {"xs": [1, 2]} and exit_.data["return_value"] == [1, 2, 3]


def test_a_bad_site_is_counted_never_raised_and_its_call_is_still_popped() -> None:
    (site,) = _sites.register_sites([("m", "f", "m:f:1:0:FunctionDef", ("a",), "m.py", 1)])
    errors = _core.internal_errors()[0]
    session = tidescope.start()
    assert _core.report_site_entry(len(_sites.table) + 5, 1) is None
    assert _core.report_site_entry(site, 1, 2) is None  # one value too many
    assert _core.report_site_entry("0", 1) is None
    cid = _core.report_site_entry(site, 1)
    assert _core.report_site_exit(cid, 2, -1)  # recorded without its node id
    assert _core.current_call_id() is None
    events, _ = session.buffer.read_batch(0, 10)  # type: ignore[union-attr]
    tidescope.stop()
    assert _core.internal_errors()[0] == errors + 4
    assert [e.ast_node_id for e in events] == ["m:f:1:0:FunctionDef", None]


def test_sites_register_in_order_and_answer_by_id() -> None:
    ids = _sites.register_sites(
        [("m", "f", "m:f:1:0:FunctionDef", ("a",), "m.py", 1), ("m", "g", "n", (), "m.py", 5)]
    )
    assert list(ids) == [ids[0], ids[0] + 1]
    assert _sites.site(ids[1]) == _sites.Site("m", "g", "n", (), "m.py", 5)
    with pytest.raises(IndexError):
        _sites.site(-1)


SOURCE = """
def add(item, qty=1, *more, password=None, **kw):
    return qty
"""


def test_rewritten_calls_pass_a_site_id_and_values_and_record_names_and_node_ids() -> None:
    tree, _ = rewrite_source(SOURCE, "cart.py", "shop.cart", "calls")
    code = ast.unparse(tree)
    assert "__tidescope_enter__(__tidescope_s0__, item, qty, more, " in code
    assert "ast_node_id=" not in code and "{" not in code.split("def add", 1)[1]
    ns: dict[str, Any] = {"__name__": "shop.cart"}
    session = tidescope.start()
    exec(compile(tree, "cart.py", "exec", dont_inherit=True), ns)
    ns["add"]("apple", 2, 3, password="pw", x=1)
    (entry, exit_), _ = session.buffer.read_batch(0, 10)  # type: ignore[union-attr]
    tidescope.stop()
    node = "shop.cart:add:2:0:FunctionDef"
    assert (entry.ast_node_id, exit_.ast_node_id) == (node, node)
    assert entry.data == {
        "module": "shop.cart",
        "function": "add",
        "arity": 5,
        "args": {
            "item": "apple",
            "qty": 2,
            "more": (3,),
            "password": Redacted("str"),
            "kw": {"x": 1},
        },
    }
    assert exit_.data["return_value"] == 2 and exit_.call_id == entry.call_id
