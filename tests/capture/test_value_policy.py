"""The value policy of call reports: scalars by value and objects by reference ("ref"),
or the bounded snapshot ("deep"); chosen by level, by setting and by module pattern.

Runs on each core (``TIDESCOPE_CORE=python`` for the pure one); on the C core every
recorded value is also checked against the pure specification (``Snapper(refs=True)``).
"""

from __future__ import annotations

import collections
import enum
from pathlib import Path
from typing import Any

import pytest

import tidescope
from tidescope.capture import _core, _pure
from tidescope.capture._snapshot import Limits, Snapper
from tidescope.config import Config, ConfigError
from tidescope.events import Event, ObjectRef, ObjectSnapshot, Redacted, Truncated, jsonable


class Point:
    def __init__(self) -> None:
        self.x = 1
        self.items = [1, 2, 3]


class Touchy(Point):
    def __getattribute__(self, name: str) -> Any:
        raise AssertionError("the ref policy ran the object's code")


class Color(enum.Enum):
    RED = 1


class MyList(list[int]):
    def __len__(self) -> int:
        raise AssertionError("the ref policy ran the object's code")


NODE = "app.models:Point.move:3:4:FunctionDef"


def record(module: str, args: Any, rv: Any, **settings: Any) -> tuple[Event, Event]:
    errors = _core.internal_errors()[0]
    session = tidescope.start(**settings)
    cid = _core.report_function_entry(module, "f", args, ast_node_id=module + ":f:1:0:X")
    _core.report_function_exit(cid, rv, ast_node_id=module + ":f:1:0:X")
    events, _ = session.buffer.read_batch(0, 10)  # type: ignore[union-attr]
    tidescope.stop()
    assert _core.internal_errors()[0] == errors
    entry, exit_ = events
    return entry, exit_


def test_ref_keeps_scalars_by_value_and_everything_else_by_reference() -> None:
    p, items, ml = Touchy(), [1, [2]], MyList([1, 2])
    args = {
        "self": p, "n": 3, "f": 1.5, "ok": True, "none": None, "s": "hi", "b": b"ab",
        "items": items, "d": {"a": 1}, "c": Color.RED, "ml": ml, "dq": collections.deque([1]),
        "password": Redacted("str"), "long": "x" * 300,
    }  # fmt: skip
    entry, exit_ = record("app.views", args, p, values="ref")
    got = entry.data["args"]
    assert got["self"] == ObjectRef(f"{__name__}.Touchy", id(p), None)
    assert (got["n"], got["f"], got["ok"], got["none"], got["s"]) == (3, 1.5, True, None, "hi")
    assert got["b"] == b"ab" and got["c"] is Color.RED and got["password"] == Redacted("str")
    assert got["items"] == ObjectRef("list", id(items), 2)
    assert got["d"] == ObjectRef("dict", id(args["d"]), 1)
    assert got["ml"] == ObjectRef(f"{__name__}.MyList", id(ml), 2)
    assert got["dq"] == ObjectRef("deque", id(args["dq"]), 1)
    assert got["long"] == Truncated("str", 300, "length", "x" * 256)
    assert exit_.data["return_value"] == ObjectRef(f"{__name__}.Touchy", id(p), None)
    assert jsonable(got["items"]) == {"$ref": "list", "id": id(items), "len": 2}
    assert jsonable(got["self"]) == {"$ref": f"{__name__}.Touchy", "id": id(p)}


@pytest.mark.parametrize(
    "args",
    [
        {"self": Point(), "n": 1},
        (Point(), 1, "a"),
        [Point(), 2],
        {"a": [1, 2], "b": {"k": Point()}},
        {f"k{i}": Point() for i in range(30)},  # past max_items
        {"k": "y" * 250, "j": "z" * 250},  # past the byte budget with a small limit
        Point(),
        None,
    ],
    ids=["dict", "tuple", "list", "nested", "many", "budget", "object", "none"],
)
def test_both_cores_give_what_the_pure_specification_gives(args: Any) -> None:
    limits = {"max_event_bytes": 300}
    entry, exit_ = record("m", args, args, values="ref", **limits)
    lim = Limits(max_event_bytes=300)
    t = type(args)
    if t is tuple or t is list or t is dict:
        want = Snapper(lim, refs=True).snap(args, 0)
    else:
        want = None if args is None else Snapper(lim, refs=True).snap(args, 1)
    assert entry.data["args"] == want
    assert exit_.data["return_value"] == (
        None if args is None else Snapper(lim, refs=True).snap(args, 1)
    )


def test_deep_takes_the_bounded_snapshot() -> None:
    class Plain:
        def __init__(self) -> None:
            self.x = 1

    p = Plain()
    entry, exit_ = record("m", {"self": p, "l": [1, 2]}, [p], values="deep")
    assert type(entry.data["args"]["self"]) is ObjectSnapshot
    assert entry.data["args"]["self"].attrs == {"x": 1}
    assert entry.data["args"]["l"] == [1, 2]
    assert type(exit_.data["return_value"][0]) is ObjectSnapshot


@pytest.mark.parametrize(
    ("level", "policy"), [("calls", "ref"), ("values", "deep"), ("lines", "deep"), (None, "deep")]
)
def test_auto_follows_the_import_hooks_level(level: str | None, policy: str) -> None:
    _core.set_level(level)
    entry, _ = record("m", {"l": [1]}, None)
    assert _core.value_policy() == policy
    assert (type(entry.data["args"]["l"]) is ObjectRef) == (policy == "ref")


def test_a_module_pattern_asks_for_the_deep_snapshot_there_only() -> None:
    for module, deep in (("app.models", True), ("app.models.user", True), ("app.views", False)):
        entry, exit_ = record(module, {"l": [1]}, [2], values="ref", deep_modules=["app.models.*"])
        assert (entry.data["args"]["l"] == [1]) is deep
        assert (exit_.data["return_value"] == [2]) is deep
        assert (type(exit_.data["return_value"]) is ObjectRef) is not deep


def test_the_policy_is_decided_once_per_module_and_site() -> None:
    tidescope.start(values="ref", deep_modules=("app.models.*",))
    try:
        _core.report_function_entry("app.models", "f", {"l": []})
        _core.report_function_entry("app.views", "f", {"l": []})
        assert _pure._policy == {"app.models": False, "app.views": True}
    finally:
        tidescope.stop()
    tidescope.start(values="ref")
    assert _pure._policy is None  # no pattern: no lookup per report
    tidescope.stop()


def test_settings_are_validated_and_read_from_the_environment(tmp_path: Path) -> None:
    assert Config().values == "auto" and Config().deep_modules == ()
    cfg = Config.load(env={"TIDESCOPE_VALUES": "deep", "TIDESCOPE_DEEP_MODULES": "a.*, b"})
    assert (cfg.values, cfg.deep_modules) == ("deep", ("a.*", "b"))
    assert Config(deep_modules=["x.*"]).deep_modules == ("x.*",)  # type: ignore[arg-type]
    toml = tmp_path / "pyproject.toml"
    toml.write_text('[tool.tidescope]\nvalues = "ref"\ndeep-modules = ["app.models.*"]\n')
    cfg = Config.load(pyproject=toml, env={})
    assert (cfg.values, cfg.deep_modules) == ("ref", ("app.models.*",))
    with pytest.raises(ConfigError, match=r"TIDESCOPE_VALUES='shallow' is invalid: values must"):
        Config.load(env={"TIDESCOPE_VALUES": "shallow"})
    with pytest.raises(ConfigError, match="deep_modules must be a list of module name patterns"):
        Config(deep_modules=("ok", ""))
