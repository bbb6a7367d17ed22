"""The rewrite keeps the program's semantics and its injected calls join up.

Each semantic test runs the same sample plain and rewritten at every level, compares what
it returns, raises and prints, and checks the events: every entry has one exit with its
call id and node id, and parents are calls that were entered before.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import itertools
import sys
import textwrap
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import tidescope
from tidescope import EventType
from tidescope.capture.runtime import call_stack, validate_ast_node_id
from tidescope.events import Event
from tidescope.instrument import LEVELS, rewrite_source

ENTRY = EventType.FUNCTION_ENTRY
EXIT = EventType.FUNCTION_EXIT
FILENAME = "<sample>"


def compile_sample(source: str, level: str | None, module: str = "sample") -> Any:
    src = textwrap.dedent(source)
    if level is None:
        return compile(src, FILENAME, "exec", dont_inherit=True)
    tree, _ = rewrite_source(src, FILENAME, module, level)
    return compile(tree, FILENAME, "exec", dont_inherit=True)


def load(source: str, level: str | None, module: str = "sample") -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": module}
    exec(compile_sample(source, level, module), ns)
    return ns


def outcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            value = fn()
    except BaseException as exc:
        return ("raised", type(exc).__name__, str(exc), out.getvalue())
    return ("returned", value, out.getvalue())


def assert_joined(events: list[Event]) -> None:
    """Entries and exits pair by call id and node id; parents were entered first."""
    entries: dict[Any, Event] = {}
    exits: dict[Any, Event] = {}
    for e in events:
        if e.event_type == ENTRY:
            assert e.call_id not in entries, "call id reused"
            if e.parent_id is not None:
                assert e.parent_id in entries, f"parent {e.parent_id} of {e.data} not entered"
            entries[e.call_id] = e
        elif e.event_type == EXIT:
            assert e.call_id in entries, f"exit without entry: {e.data}"
            assert e.call_id not in exits, "two exits for one call"
            exits[e.call_id] = e
    assert set(entries) == set(exits), "calls left open"
    for cid, entry in entries.items():
        assert exits[cid].ast_node_id == entry.ast_node_id
        validate_ast_node_id(entry.ast_node_id)


def same_everywhere(
    source: str, run: Callable[[dict[str, Any]], Any], levels: tuple[str, ...] = LEVELS
) -> dict[str, list[Event]]:
    """Run ``run(namespace)`` plain and at each level: same outcome; returns each level's
    events, already checked to join up, with no internal error and no drop."""
    expected = outcome(lambda: run(load(source, None)))
    events: dict[str, list[Event]] = {}
    for level in levels:
        with tidescope.capture(buffer_size=65536) as cap:
            errors_before = cap.stats()["internal_errors"]  # the counter is per process
            got = outcome(lambda level=level: run(load(source, level)))  # type: ignore[misc]
            assert call_stack() == [], "a call was left on the call stack"
        assert got == expected, f"level {level}"
        stats = cap.stats()
        assert stats["internal_errors"] == errors_before, stats["last_internal_error"]
        assert stats["dropped_events"] == 0
        events[level] = cap.events()
        assert_joined(events[level])
        # and with capture off: the calls level then runs the unreported copy of each body
        assert outcome(lambda level=level: run(load(source, level))) == expected, (
            f"level {level}, capture off"
        )
    return events


def calls(events: list[Event], function: str) -> list[tuple[Event, Event]]:
    """(entry, exit) of every call of ``function``, in entry order."""
    exits = {e.call_id: e for e in events if e.event_type == EXIT}
    return [
        (e, exits[e.call_id])
        for e in events
        if e.event_type == ENTRY and e.data["function"] == function
    ]


def one_call(events: list[Event], function: str) -> tuple[Event, Event]:
    found = calls(events, function)
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------------------------------
# calls: functions, methods, lambdas


def test_function_entry_binds_every_parameter_kind_and_exit_shares_the_call_id() -> None:
    src = """
    def add(a, /, b=2, *rest, scale=1, **opts):
        return (a + b + sum(rest)) * scale

    def main():
        return add(1, 2, 3, 4, scale=2, tag="x")
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["calls"]
    (main_in, main_out), (add_in, add_out) = one_call(events, "main"), one_call(events, "add")
    assert add_in.data["module"] == "sample"
    assert add_in.data["args"] == {
        "a": 1, "b": 2, "rest": (3, 4), "scale": 2, "opts": {"tag": "x"},
    }  # fmt: skip
    assert add_in.call_id == add_out.call_id
    assert add_out.data["return_value"] == 20
    assert add_out.data["exit_reason"] == "normal"
    assert add_in.parent_id == main_in.call_id
    assert main_in.parent_id is None
    assert main_out.data["return_value"] == 20
    assert add_in.ast_node_id == "sample:add:2:0:FunctionDef"


def test_methods_static_class_methods_and_properties_report_their_qualnames() -> None:
    src = """
    class Cart:
        def __init__(self):
            self.items = []

        def add(self, item):
            self.items.append(item)
            return self

        @staticmethod
        def tax(x):
            return x * 2

        @classmethod
        def empty(cls):
            return cls()

        @property
        def size(self):
            return len(self.items)

    def main():
        c = Cart.empty().add("a").add("b")
        return c.size, Cart.tax(3)
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["calls"]
    names = [e.data["function"] for e in events if e.event_type == ENTRY]
    assert names == [
        "main", "Cart.empty", "Cart.__init__", "Cart.add", "Cart.add", "Cart.size", "Cart.tax",
    ]  # fmt: skip
    main_in, _ = one_call(events, "main")
    assert all(
        e.parent_id == main_in.call_id
        for e in events
        if e.event_type == ENTRY and e.data["function"] in ("Cart.empty", "Cart.tax")
    )
    init_in, _ = one_call(events, "Cart.__init__")
    empty_in, _ = one_call(events, "Cart.empty")
    assert init_in.parent_id == empty_in.call_id


def test_exceptions_propagate_unchanged_and_exit_with_the_exception() -> None:
    src = """
    def inner(x):
        if x:
            raise ValueError("bad " + str(x))
        return 0

    def outer(x):
        try:
            return inner(x)
        except ValueError as e:
            raise KeyError("wrapped") from e

    def main():
        try:
            outer(3)
        except KeyError as e:
            return repr(e), repr(e.__cause__), e.__cause__.__context__ is None
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["calls"]
    _, inner_out = one_call(events, "inner")
    assert inner_out.data["exit_reason"] == "exception"
    assert inner_out.data["exception"]["type"] == "builtins.ValueError"
    assert inner_out.data["exception"]["args"] == ("bad 3",)
    _, outer_out = one_call(events, "outer")
    assert outer_out.data["exception"]["type"] == "builtins.KeyError"
    _, main_out = one_call(events, "main")
    assert main_out.data["exit_reason"] == "normal"


def test_uncaught_exception_raises_the_same_error_at_every_level() -> None:
    src = """
    def main():
        return {}["missing"]
    """
    events = same_everywhere(src, lambda ns: ns["main"]())
    _, out = one_call(events["calls"], "main")
    assert out.data["exception"]["type"] == "builtins.KeyError"


def test_lambdas_report_entry_and_exit_and_keep_signature_and_defaults() -> None:
    src = """
    import inspect
    scale = 3
    mul = lambda x, *more, k=2, **kw: x * k * scale + len(more) + len(kw)
    nested = lambda a: (lambda b: a + b)(1)
    boom = lambda: 1 // 0

    def main():
        try:
            boom()
        except ZeroDivisionError:
            pass
        return (mul(2, 9, k=4, z=1), nested(5), str(inspect.signature(mul)),
                mul.__defaults__, mul.__kwdefaults__, mul.__name__)
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["calls"]
    lams = calls(events, "<lambda>")
    assert [entry.data["args"] for entry, _ in lams] == [
        {},
        {"x": 2, "more": (9,), "k": 4, "kw": {"z": 1}},
        {"a": 5},
    ]
    assert lams[0][1].data["exit_reason"] == "exception"
    assert lams[1][1].data["return_value"] == 2 * 4 * 3 + 1 + 1
    inner = calls(events, "<lambda>.<locals>.<lambda>")
    assert len(inner) == 1
    assert inner[0][0].parent_id == lams[2][0].call_id


def test_lambdas_needing_their_own_frame_are_left_alone_and_still_work() -> None:
    src = """
    class Base:
        def who(self):
            return "base"

    class Child(Base):
        who = lambda self: "child+" + super().who()
        names = lambda self, x=1: sorted(locals())
        ev = lambda self, y=2: eval("y")

    def main():
        c = Child()
        return c.who(), c.names(), c.ev()
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["calls"]
    assert calls(events, "Child.<lambda>") == []


def test_recursion_nests_each_call_under_its_caller() -> None:
    src = """
    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)
    """
    events = same_everywhere(src, lambda ns: ns["fact"](6))["calls"]
    facts = calls(events, "fact")
    assert [e.data["args"]["n"] for e, _ in facts] == [6, 5, 4, 3, 2, 1]
    for (outer, _), (inner, _) in itertools.pairwise(facts):
        assert inner.parent_id == outer.call_id
    assert facts[0][1].data["return_value"] == 720


def test_code_runs_unchanged_when_capture_is_off() -> None:
    src = """
    def gen():
        yield 1
        yield 2

    def main():
        return [x * 2 for x in gen()], (lambda: 5)()
    """
    for level in LEVELS:
        assert load(src, level)["main"]() == ([2, 4], 5)


# ---------------------------------------------------------------------------------------
# semantics the rewrite must not change


def test_return_in_finally_overrides_and_the_exit_records_the_value_really_returned() -> None:
    src = """
    def overrides():
        try:
            return "try"
        finally:
            return "finally"

    def swallows():
        try:
            raise ValueError("lost")
        finally:
            return "swallowed"

    def loop_exit():
        for i in range(3):
            try:
                continue
            finally:
                if i == 2:
                    return i

    def bare():
        try:
            return 1
        finally:
            return

    def main():
        return overrides(), swallows(), loop_exit(), bare()
    """
    with warnings.catch_warnings():
        # 3.14 warns of each (PEP 765); the hook shows it as Python does (test_hook)
        warnings.simplefilter("ignore", SyntaxWarning)
        events = same_everywhere(src, lambda ns: ns["main"]())["calls"]
    for fn, value in [("overrides", "finally"), ("swallows", "swallowed"), ("loop_exit", 2)]:
        _, out = one_call(events, fn)
        assert out.data["exit_reason"] == "normal"
        assert out.data["return_value"] == value
    assert one_call(events, "bare")[1].data["return_value"] is None


def test_code_run_after_a_return_value_is_the_callers_and_the_exit_comes_last() -> None:
    # A return in a with, a for, a try with a finally or an except: the program runs code
    # after the value (__exit__, a generator closed as its loop's iterator is dropped, the
    # finally): calls made there are children of the returning call, its exit is after them.
    src = """
    log = []

    def note(what):
        log.append(what)

    class Ctx:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            note("exit")

    def gen():
        try:
            yield 1
            yield 2
        finally:
            note("closed")

    def in_with():
        with Ctx():
            return "w"

    def in_for():
        for x in gen():
            return x

    def in_finally():
        try:
            return "t"
        finally:
            note("finally")

    def in_except():
        try:
            raise KeyError
        except KeyError:
            return "e"

    def falls_off(x):
        if x:
            return "early"

    def main():
        return in_with(), in_for(), in_finally(), in_except(), falls_off(0), falls_off(1), log
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["calls"]
    for fn, value, inner in [
        ("in_with", "w", "Ctx.__exit__"), ("in_for", 1, "gen"), ("in_finally", "t", "note"),
    ]:  # fmt: skip
        enter, out = one_call(events, fn)
        assert out.data["return_value"] == value
        children = [e for e in events if e.event_type == ENTRY and e.parent_id == enter.call_id]
        assert inner in [e.data["function"] for e in children], fn
        last = max(events.index(e) for e in events if e.call_id in {c.call_id for c in children})
        assert events.index(out) > last, fn
    assert one_call(events, "in_except")[1].data["return_value"] == "e"
    outs = [out.data["return_value"] for _, out in calls(events, "falls_off")]
    assert outs == [None, "early"]


def test_evaluation_order_and_short_circuiting_are_unchanged() -> None:
    src = """
    log = []

    def t(v):
        log.append(v)
        return v

    def main():
        a = t(1) and t(0) and t(2)
        b = t(0) or t(3) or t(4)
        c = t("x") if t(0) else t("y")
        d = [t(i) for i in range(3) if t(i % 2)]
        if t(1) or t(5):
            e = t("then")
        elif t(6):
            e = None
        while t(0):
            pass
        f = {t("k1"): t("v1"), t("k2"): t("v2")}
        g = t(10) < t(20) < t(5) < t(99)
        return a, b, c, d, e, f, g, log
    """
    same_everywhere(src, lambda ns: ns["main"]())


def test_decorators_are_evaluated_and_applied_once_in_order() -> None:
    src = """
    import functools
    log = []

    def deco(tag):
        log.append(("make", tag))
        def wrap(fn):
            log.append(("apply", tag, fn.__name__))
            @functools.wraps(fn)
            def inner(*a, **k):
                log.append(("call", tag))
                return fn(*a, **k)
            return inner
        return wrap

    @deco("outer")
    @deco("inner")
    def f(x):
        return x + 1

    def main():
        return f(1), f.__name__, f.__wrapped__.__name__, log
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["calls"]
    f_in, _ = one_call(events, "f")
    (outer_inner, _), (inner_inner, _) = calls(events, "deco.<locals>.wrap.<locals>.inner")
    assert inner_inner.parent_id == outer_inner.call_id
    assert f_in.parent_id == inner_inner.call_id


def test_class_bodies_keep_their_namespace_order_and_qualnames() -> None:
    src = """
    order = []

    class Meta(type):
        @classmethod
        def __prepare__(mcs, name, bases):
            order.append(("prepare", name))
            return {}

    class C(metaclass=Meta):
        \"\"\"doc of C\"\"\"
        x = 1
        y = x + 1
        for_items = [1, 2]
        if y > 1:
            big = True
        class Inner:
            def m(self):
                return type(self).__qualname__
        def method(self):
            return self.y

    def main():
        names = [k for k in vars(C) if not k.startswith("__")]
        return (names, C.__doc__, C.Inner().m(), C.Inner.m.__qualname__,
                C.method.__qualname__, C().method(), order)
    """
    events = same_everywhere(src, lambda ns: ns["main"]())
    assert len(calls(events["calls"], "C.Inner.m")) == 1


def test_enum_dataclass_and_namedtuple_bodies_define_the_same_members() -> None:
    src = """
    import dataclasses
    import enum
    import typing

    class Color(enum.Enum):
        RED = 1
        GREEN = RED + 1
        for _unused in ():
            pass

    @dataclasses.dataclass
    class Point:
        x: int = 0
        y: int = dataclasses.field(default=5)
        label: str = "p" if x == 0 else "q"

    class Pair(typing.NamedTuple):
        a: int
        b: str = "b"

    def main():
        return ([(c.name, c.value) for c in Color], dataclasses.astuple(Point(1)),
                [f.name for f in dataclasses.fields(Point)], Pair(1), Pair._fields)
    """
    same_everywhere(src, lambda ns: ns["main"]())


def test_global_and_nonlocal_bindings_are_unchanged() -> None:
    src = """
    counter = 0

    def bump():
        global counter
        counter += 1
        return counter

    def make():
        n = 0
        def inc(by=1):
            nonlocal n
            n += by
            return n
        return inc

    def main():
        inc = make()
        return bump(), bump(), inc(), inc(5), counter
    """
    events = same_everywhere(src, lambda ns: ns["main"]())
    snaps = [
        e.data["variables"]
        for e in events["values"]
        if e.event_type == EventType.LOCAL_VARIABLE_SNAPSHOT
    ]
    assert {"counter": 2} in snaps
    assert {"n": 6} in snaps


def test_zero_argument_super_and_the_class_cell_still_work() -> None:
    src = """
    class Base:
        def hello(self):
            return "base"

        def __init_subclass__(cls, **kw):
            super().__init_subclass__(**kw)
            cls.registered = True

    class Child(Base):
        def hello(self):
            return "child+" + super().hello()

        def cls_name(self):
            return __class__.__name__

        @classmethod
        def make(cls):
            return super().__new__(cls)

    def main():
        c = Child.make()
        return c.hello(), c.cls_name(), Child.registered, Child.hello.__closure__ is not None
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["calls"]
    hello_in, _ = one_call(events, "Child.hello")
    base_in, _ = one_call(events, "Base.hello")
    assert base_in.parent_id == hello_in.call_id


def test_walrus_binds_in_the_enclosing_function_as_before() -> None:
    src = """
    def f(data):
        if (n := len(data)) > 2:
            doubled = [y for x in data if (y := x * 2) > 2]
            return n, doubled, y
        return n

    def main():
        return f([1, 2, 3]), f([1])
    """
    same_everywhere(src, lambda ns: ns["main"]())


def test_star_args_and_keyword_only_calls_are_unchanged() -> None:
    src = """
    def f(a, /, b, *args, c, d=4, **kw):
        return a, b, args, c, d, kw

    def main():
        args = (1, 2, 3)
        kw = {"c": 5, "e": 6}
        return f(*args, **kw), f(0, *[], b=1, **{"c": 2}), f(*range(4), c=0, d=1)
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["calls"]
    first, _ = calls(events, "f")[0]
    assert first.data["args"] == {"a": 1, "b": 2, "args": (3,), "c": 5, "d": 4, "kw": {"e": 6}}


def test_default_arguments_are_evaluated_once() -> None:
    src = """
    made = []

    def make_default():
        made.append(1)
        return []

    def f(x, acc=make_default()):
        acc.append(x)
        return list(acc)

    def main():
        return f(1), f(2), f(3, []), len(made)
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["calls"]
    assert [out.data["return_value"] for _, out in calls(events, "f")] == [[1], [1, 2], [3]]


def test_module_docstring_and_future_imports_stay_first() -> None:
    src = '''
    """The module's doc."""
    from __future__ import annotations

    def f(x: UndefinedName) -> int:
        """f's doc."""
        return 1

    def main():
        return __doc__, f.__doc__, f.__annotations__, f(0)
    '''
    same_everywhere(src, lambda ns: ns["main"]())
    tree, _ = rewrite_source(textwrap.dedent(src), FILENAME, "sample", "lines")
    assert isinstance(tree.body[0].value, __import__("ast").Constant)  # type: ignore[attr-defined]
    assert tree.body[1].module == "__future__"  # type: ignore[attr-defined]
    assert tree.body[2].names[0].asname == "__tidescope_rt__"  # type: ignore[attr-defined]


def test_rewritten_code_does_not_inherit_the_callers_future_flags() -> None:
    # this test module uses ``from __future__ import annotations``; the sample must not
    src = """
    def f(x: int) -> str:
        return str(x)

    def main():
        return f.__annotations__
    """
    for level in LEVELS:
        assert load(src, level)["main"]() == {"x": int, "return": str}


def test_user_names_and_a_shadowed_baseexception_do_not_break_the_injected_code() -> None:
    src = """
    BaseException = None
    rt = call = enter = "user"

    class K:
        def __private(self):
            return self.__x

        def run(self):
            self.__x = rt + call + enter
            return self.__private()

    def fails():
        raise RuntimeError("still caught by the wrapper")

    def main():
        try:
            fails()
        except RuntimeError as e:
            return K().run(), str(e)
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["calls"]
    assert one_call(events, "fails")[1].data["exit_reason"] == "exception"
    assert len(calls(events, "K.__private")) == 1


def test_locals_of_an_instrumented_function_gain_only_tidescope_dunder_names() -> None:
    src = """
    def f(a):
        b = 2
        return sorted(locals())
    """
    for level in LEVELS:
        f = load(src, level)["f"]
        # capture off: the unreported copy of the body runs and binds nothing of ours
        assert f(1) == ["a", "b"]
        with tidescope.capture(buffer_size=64):
            extra = set(f(1)) - {"a", "b"}
        assert extra and all(n.startswith("__tidescope_") and n.endswith("__") for n in extra)


# ---------------------------------------------------------------------------------------
# generators


GENERATOR = """
def echo(log):
    total = 0
    try:
        while True:
            try:
                got = yield total
            except ValueError as e:
                log.append(("caught", str(e)))
                got = 100
            if got is None:
                break
            total += helper(got)
    finally:
        log.append("cleanup")
    return total

def helper(x):
    return x

def probe():
    return "probe"

def drive():
    log = []
    g = echo(log)
    out = [next(g)]
    probe()
    out += [g.send(5), g.throw(ValueError("x")), g.send(1)]
    try:
        g.send(None)
    except StopIteration as stop:
        out.append(("stop", stop.value))
    return out, log

def closed():
    log = []
    g = echo(log)
    next(g)
    g.close()
    return log

def thrown():
    log = []
    g = echo(log)
    next(g)
    try:
        g.throw(KeyError("k"))
    except KeyError:
        return log

def never_started():
    g = echo([])
    g.close()
    return "ok"
"""


def test_generator_send_throw_and_exhaustion_share_one_call_id() -> None:
    events = same_everywhere(GENERATOR, lambda ns: ns["drive"]())["calls"]
    drive_in, _ = one_call(events, "drive")
    echo_in, echo_out = one_call(events, "echo")
    assert echo_in.call_id == echo_out.call_id
    assert echo_in.parent_id == drive_in.call_id
    assert echo_out.data["exit_reason"] == "normal"
    assert echo_out.data["return_value"] == 5 + 100 + 1
    assert echo_out.data["duration_ns"] > 0
    for h_in, _ in calls(events, "helper"):
        assert h_in.parent_id == echo_in.call_id


def test_a_suspended_generator_is_not_on_the_callers_call_stack() -> None:
    events = same_everywhere(GENERATOR, lambda ns: ns["drive"]())["calls"]
    drive_in, _ = one_call(events, "drive")
    probe_in, _ = one_call(events, "probe")
    assert probe_in.parent_id == drive_in.call_id


def test_generator_close_exits_as_cancelled_and_throw_as_exception() -> None:
    events = same_everywhere(GENERATOR, lambda ns: (ns["closed"](), ns["thrown"]()))["calls"]
    (closed_in, closed_out), (thrown_in, thrown_out) = calls(events, "echo")
    assert closed_out.data["exit_reason"] == "cancelled"
    assert closed_out.data["exception"]["type"] == "builtins.GeneratorExit"
    assert thrown_out.data["exit_reason"] == "exception"
    assert thrown_out.data["exception"]["type"] == "builtins.KeyError"
    assert closed_in.call_id == closed_out.call_id
    assert thrown_in.call_id == thrown_out.call_id


def test_a_generator_closed_before_its_first_step_reports_nothing() -> None:
    events = same_everywhere(GENERATOR, lambda ns: ns["never_started"]())["calls"]
    assert calls(events, "echo") == []


def test_a_yielded_expression_that_raises_leaves_the_call_stack_balanced() -> None:
    src = """
    def pop_all(items):
        try:
            while True:
                yield items.pop()
        except IndexError:
            pass
        try:
            yield from_expr(items)
        except IndexError:
            return "done"

    def from_expr(items):
        return items.pop()
    """
    # driven from plain code: no enclosing instrumented exit unwinds a stray frame
    events = same_everywhere(src, lambda ns: list(ns["pop_all"]([1, 2, 3])))["calls"]
    _, out = one_call(events, "pop_all")
    assert out.data["return_value"] == "done"


def test_yield_from_passes_send_throw_and_close_to_the_subgenerator() -> None:
    src = """
    log = []

    def inner():
        try:
            x = yield 1
            try:
                y = yield x
            except ValueError:
                y = "handled"
            return (x, y)
        finally:
            log.append("inner done")

    def outer():
        r = yield from inner()
        yield r
        yield from [7, 8]
        yield from inner()

    def main():
        g = outer()
        out = [next(g), g.send("a"), g.throw(ValueError), next(g), next(g), next(g)]
        g.close()
        return out, log
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["calls"]
    outer_in, outer_out = calls(events, "outer")[0]
    (first_in, first_out), (second_in, second_out) = calls(events, "inner")[:2]
    assert first_in.parent_id == second_in.parent_id == outer_in.call_id
    assert first_out.data["return_value"] == ("a", "handled")
    assert second_out.data["exit_reason"] == "cancelled"
    assert outer_out.data["exit_reason"] == "cancelled"


def test_yields_inside_expressions_of_a_generator_keep_their_values() -> None:
    src = """
    class Box:
        pass

    def gen(box):
        print("got", (yield 1))
        box.value = yield 2
        a, b = yield 3
        return [(yield 4), (yield)]

    def main():
        box = Box()
        g = gen(box)
        out = [next(g), g.send("s1"), g.send("s2"), g.send((5, 6)), g.send("s4")]
        try:
            g.send("s5")
        except StopIteration as stop:
            out.append(stop.value)
        return out, box.value
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["calls"]
    _, out = one_call(events, "gen")
    assert out.data["return_value"] == ["s4", "s5"]


def test_generator_expressions_and_comprehensions_are_not_calls() -> None:
    src = """
    def main():
        return sum(x for x in range(4)), [y for y in range(2)], {k: 1 for k in "ab"}
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["calls"]
    assert [e.data["function"] for e in events if e.event_type == ENTRY] == ["main"]


# ---------------------------------------------------------------------------------------
# async


def test_coroutines_await_and_gather_nest_under_their_callers() -> None:
    src = """
    import asyncio

    async def leaf(n):
        await asyncio.sleep(0)
        return n * 2

    async def main():
        a = await leaf(1)
        b, c = await asyncio.gather(leaf(2), leaf(3))
        return a + b + c
    """
    events = same_everywhere(src, lambda ns: asyncio.run(ns["main"]()))["calls"]
    main_in, main_out = one_call(events, "main")
    assert main_out.data["return_value"] == 12
    leaves = calls(events, "leaf")
    assert len(leaves) == 3
    for entry, out in leaves:
        assert entry.parent_id == main_in.call_id
        assert out.data["return_value"] == entry.data["args"]["n"] * 2


def test_a_cancelled_coroutine_exits_as_cancelled() -> None:
    src = """
    import asyncio

    async def sleeper():
        await asyncio.sleep(10)

    async def main():
        t = asyncio.create_task(sleeper())
        await asyncio.sleep(0)
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            return "cancelled"
    """
    events = same_everywhere(src, lambda ns: asyncio.run(ns["main"]()))["calls"]
    _, out = one_call(events, "sleeper")
    assert out.data["exit_reason"] == "cancelled"
    assert out.data["exception"]["type"] == "asyncio.exceptions.CancelledError"


def test_interleaved_tasks_each_see_only_their_own_coroutine_as_parent() -> None:
    src = """
    import asyncio

    def work(tag):
        return tag

    async def worker(tag, n):
        out = []
        for _ in range(n):
            await asyncio.sleep(0)  # every await lets the other task run
            out.append(work(tag))
        return out

    async def main():
        return await asyncio.gather(worker("a", 3), worker("b", 3))
    """
    events = same_everywhere(src, lambda ns: asyncio.run(ns["main"]()))["calls"]
    workers = {entry.call_id: entry.data["args"]["tag"] for entry, _ in calls(events, "worker")}
    works = calls(events, "work")
    assert len(works) == 6
    for entry, _ in works:
        assert workers[entry.parent_id] == entry.data["args"]["tag"]


def test_threads_keep_their_own_call_stacks() -> None:
    src = """
    import threading

    def leaf(n):
        return n

    def branch(n):
        return sum(leaf(i) for i in range(n))

    def main():
        results = {}
        def run(k):
            results[k] = branch(k)
        threads = [threading.Thread(target=run, args=(k,)) for k in (3, 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sorted(results.items())
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["calls"]
    branches = {entry.call_id: entry for entry, _ in calls(events, "branch")}
    assert len(branches) == 2
    main_in, _ = one_call(events, "main")
    thread_of_main = main_in.thread_id
    runs = {entry.call_id: entry for entry, _ in calls(events, "main.<locals>.run")}
    # a new thread has a stack of its own, under the call that started it
    assert [r.parent_id for r in runs.values()] == [main_in.call_id] * 2
    for entry in branches.values():
        assert entry.thread_id != thread_of_main
        assert runs[entry.parent_id].thread_id == entry.thread_id
    for entry, _ in calls(events, "leaf"):
        parent = branches[entry.parent_id]
        assert parent.thread_id == entry.thread_id


ASYNC_GEN = """
import ast
import asyncio

class Resource:
    def __init__(self, log):
        self.log = log

    async def __aenter__(self):
        self.log.append("enter")
        return self

    async def __aexit__(self, *exc):
        self.log.append(("exit", exc[0] is not None))
        return False

async def ticks(n, log):
    try:
        for i in range(n):
            await asyncio.sleep(0)
            got = yield i
            if got:
                log.append(("sent", got))
    finally:
        log.append("ticks done")

def probe():
    return 1

async def main():
    log = []
    async with Resource(log) as res:
        async for v in ticks(3, log):
            probe()
            log.append(v)
    g = ticks(5, log)
    log.append(await g.asend(None))
    log.append(await g.asend("hello"))
    try:
        await g.athrow(KeyError("stop"))
    except KeyError:
        log.append("thrown")
    g2 = ticks(5, log)
    await g2.__anext__()
    await g2.aclose()
    return log
"""


def test_async_with_async_for_and_async_generators_keep_their_semantics() -> None:
    events = same_everywhere(ASYNC_GEN, lambda ns: asyncio.run(ns["main"]()))["calls"]
    main_in, _ = one_call(events, "main")
    ticks = calls(events, "ticks")
    assert [out.data["exit_reason"] for _, out in ticks] == ["normal", "exception", "cancelled"]
    for entry, out in ticks:
        assert entry.parent_id == main_in.call_id
        assert entry.call_id == out.call_id
    # between iterations the async generator is not on the consumer's stack
    for p_in, _ in calls(events, "probe"):
        assert p_in.parent_id == main_in.call_id
    assert len(calls(events, "Resource.__aenter__")) == 1


def test_an_async_generator_with_a_yield_inside_an_expression_runs_uninstrumented() -> None:
    src = """
    import asyncio

    async def odd():
        print("sent", (yield 1))
        yield 2

    async def main():
        g = odd()
        return [await g.asend(None), await g.asend("x")]
    """
    events = same_everywhere(src, lambda ns: asyncio.run(ns["main"]()))["calls"]
    assert calls(events, "odd") == []
    assert len(calls(events, "main")) == 1


# ---------------------------------------------------------------------------------------
# values and lines


def test_values_level_snapshots_assignments_augmented_annotated_and_with_targets() -> None:
    src = """
    import contextlib

    def f(seq):
        a, (b, *rest) = seq[0], seq[1:]
        total: int = a + b
        total += len(rest)
        seq[0] = "not a name: no snapshot"
        with contextlib.nullcontext(total) as ctx:
            pass
        return ctx
    """
    events = same_everywhere(src, lambda ns: ns["f"]([1, 2, 3, 4]))["values"]
    f_in, _ = one_call(events, "f")
    snaps = [e for e in events if e.event_type == EventType.LOCAL_VARIABLE_SNAPSHOT]
    assert [s.data["variables"] for s in snaps] == [
        {"a": 1, "b": 2, "rest": [3, 4]},
        {"total": 3},
        {"total": 5},
        {"ctx": 5},
    ]
    assert all(s.call_id == f_in.call_id for s in snaps)
    assert [s.data["line"] for s in snaps] == [5, 6, 7, 9]
    assert snaps[0].ast_node_id == "sample:f:5:4:Assign"


def test_values_level_reports_the_branch_taken_without_reevaluating_the_test() -> None:
    src = """
    tested = []

    class Flag:
        def __init__(self, v):
            self.v = v
        def __bool__(self):
            tested.append(self.v)
            return self.v

    def pick(x):
        if Flag(x == 1):
            r = "one"
        elif Flag(x == 2):
            r = "two"
        else:
            r = "many"
        s = "yes" if Flag(x > 1) else "no"
        return r, s

    def main():
        return [pick(i) for i in (1, 2, 3)], tested
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["values"]
    branches = [
        (e.data["branch_type"], e.data["condition"], e.data["branch_taken"])
        for e in events
        if e.event_type == EventType.BRANCH_EXECUTION
    ]
    assert branches == [
        ("if", "Flag(x == 1)", True), ("conditional", "Flag(x > 1)", False),
        ("if", "Flag(x == 1)", False), ("elif", "Flag(x == 2)", True),
        ("conditional", "Flag(x > 1)", True),
        ("if", "Flag(x == 1)", False), ("elif", "Flag(x == 2)", False),
        ("conditional", "Flag(x > 1)", True),
    ]  # fmt: skip


def test_loop_iterations_are_reported_for_the_first_ten_then_every_hundredth() -> None:
    src = """
    def f(n):
        total = 0
        for i in range(n):
            total += i
        k = 0
        while k < 3:
            k += 1
        return total
    """
    events = same_everywhere(src, lambda ns: (ns["f"](250), ns["f"](2)))["values"]
    loops = [e.data for e in events if e.event_type == EventType.LOOP_ITERATION]
    fors = [d for d in loops if d["loop_type"] == "for"]
    assert [d["iteration_count"] for d in fors] == [*range(1, 11), 100, 200, 1, 2]
    assert fors[10]["current_value"] == {"i": 99}
    whiles = [d["iteration_count"] for d in loops if d["loop_type"] == "while"]
    assert whiles == [1, 2, 3, 1, 2, 3]


def test_match_reports_the_case_taken_and_a_miss() -> None:
    src = """
    def classify(p):
        match p:
            case (0, 0):
                return "origin"
            case (x, 0) if x > 0:
                return "positive x axis"
            case {"kind": k}:
                return k

    def main():
        return [classify(p) for p in [(0, 0), (3, 0), {"kind": "map"}, "nothing"]]
    """
    events = same_everywhere(src, lambda ns: ns["main"]())["values"]
    matches = [
        (e.data["pattern"], e.data["value"], e.data["match_success"])
        for e in events
        if e.event_type == EventType.PATTERN_MATCH
    ]
    assert matches == [
        ("(0, 0)", (0, 0), True),
        ("(x, 0)", (3, 0), True),
        ('{"kind": k}', {"kind": "map"}, True),
        (None, "nothing", False),
    ]


def test_match_with_an_irrefutable_last_case_gets_no_extra_case() -> None:
    src = """
    def f(v):
        match v:
            case 1:
                return "one"
            case other:
                return other
    """
    events = same_everywhere(src, lambda ns: (ns["f"](1), ns["f"](2)))["values"]
    assert [e.data["match_success"] for e in events if e.event_type == EventType.PATTERN_MATCH] == [
        True,
        True,
    ]


def test_lines_level_reports_each_statement_run_in_order() -> None:
    src = """
    def f(x):
        \"\"\"doc\"\"\"
        y = x + 1
        if y > 1:
            y = 0
        return y
    """
    events = same_everywhere(src, lambda ns: ns["f"](3))
    f_in, _ = one_call(events["lines"], "f")
    lines = [
        (e.data["line"], e.ast_node_id)
        for e in events["lines"]
        if e.event_type == EventType.LINE_EXECUTION and e.call_id == f_in.call_id
    ]
    assert lines == [
        (4, "sample:f:4:4:Assign"),
        (5, "sample:f:5:4:If"),
        (6, "sample:f:6:8:Assign"),
        (7, "sample:f:7:4:Return"),
    ]
    assert not any(e.event_type == EventType.LINE_EXECUTION for e in events["values"])


def test_module_level_code_reports_with_the_innermost_call() -> None:
    src = """
    x = 1
    for i in range(2):
        x += i
    """
    events = same_everywhere(src, lambda ns: ns["x"])["lines"]
    lines = [e.data["line"] for e in events if e.event_type == EventType.LINE_EXECUTION]
    assert lines == [2, 3, 4, 4]


# ---------------------------------------------------------------------------------------
# node ids and records


NODES_SAMPLE = """
class Shop:
    def add(self, item):
        check = lambda v: v if v else None
        for x in [item]:
            try:
                pass
            except Exception:
                pass
        match item:
            case 1:
                pass
        return check(item)

def outer():
    def inner():
        return 1
    return inner
"""


def test_node_ids_are_valid_unique_and_deterministic() -> None:
    _, first = rewrite_source(NODES_SAMPLE, "a/shop.py", "pkg.shop", "lines")
    _, second = rewrite_source(NODES_SAMPLE, "elsewhere/shop.py", "pkg.shop", "lines")
    ids = [r.id for r in first]
    assert ids == [r.id for r in second]
    assert len(ids) == len(set(ids))
    for nid in ids:
        validate_ast_node_id(nid)
    assert "pkg.shop:Shop:2:0:ClassDef" in ids
    assert "pkg.shop:Shop.add:3:4:FunctionDef" in ids
    assert "pkg.shop:Shop.add.<locals>.<lambda>:4:16:Lambda" in ids
    assert "pkg.shop:Shop.add.<locals>.<lambda>:4:26:IfExp" in ids
    assert "pkg.shop:Shop.add:8:12:ExceptHandler" in ids
    assert "pkg.shop:Shop.add:11:17:match_case" in ids
    assert "pkg.shop:outer.<locals>.inner:16:4:FunctionDef" in ids


def test_node_records_carry_span_type_parent_and_source() -> None:
    _, records = rewrite_source(NODES_SAMPLE, "a/shop.py", "pkg.shop", "calls")
    by_id = {r.id: r for r in records}
    ret = by_id["pkg.shop:Shop.add:13:8:Return"]
    assert (ret.module, ret.file, ret.line, ret.column, ret.end_line, ret.end_column) == (
        "pkg.shop", "a/shop.py", 13, 8, 13, 26,
    )  # fmt: skip
    assert ret.node_type == "Return"
    assert ret.source == "return check(item)"
    assert ret.parent_id == "pkg.shop:Shop.add:3:4:FunctionDef"
    assert by_id[ret.parent_id].parent_id == "pkg.shop:Shop:2:0:ClassDef"
    assert by_id["pkg.shop:Shop:2:0:ClassDef"].parent_id is None
    for r in records:
        assert r.parent_id is None or r.parent_id in by_id
        assert len(r.source) <= 200


def test_long_node_source_is_cut_to_200_characters() -> None:
    body = "\n".join(f"    v{i} = {i}" for i in range(100))
    _, records = rewrite_source(f"def big():\n{body}\n", "big.py", "big", "calls")
    assert len(records[0].source) == 200
    assert records[0].source.startswith("def big():\n    v0 = 0")
    assert records[0].end_line == 101


def test_colliding_node_ids_get_a_numbered_suffix_that_still_validates() -> None:
    import ast

    from tidescope.instrument._nodes import NodeIds, SourceText

    ids = NodeIds("my-app.main", "f.py", SourceText("x = 1\n"))
    node = ast.parse("x = 1").body[0]
    first, second, third = (ids.add(node, "f", "Assign", None) for _ in range(3))
    assert (first, second, third) == (
        "my_app.main:f:1:0:Assign", "my_app.main:f:1:0:Assign_2", "my_app.main:f:1:0:Assign_3",
    )  # fmt: skip
    for nid in (first, second, third):
        validate_ast_node_id(nid)


def test_node_source_columns_are_utf8_offsets_and_text_is_recovered() -> None:
    src = 'def f():\n    s = "é"; t = s\n    return t\n'
    _, records = rewrite_source(src, "u.py", "u", "calls")
    assigns = [r for r in records if r.node_type == "Assign"]
    assert [r.source for r in assigns] == ['s = "é"', "t = s"]


@pytest.mark.parametrize("level", LEVELS)
def test_every_line_of_the_rewritten_code_is_a_line_of_the_source(level: str) -> None:
    src = textwrap.dedent(ASYNC_GEN) + textwrap.dedent(GENERATOR) + NODES_SAMPLE
    n_lines = src.count("\n") + 1
    code = compile(rewrite_source(src, FILENAME, "s", level)[0], FILENAME, "exec")
    stack = [code]
    while stack:
        co = stack.pop()
        for _, _, line in co.co_lines():
            # line 0 is CPython's own RESUME at the top of a module
            assert line is None or 0 <= line <= n_lines
            assert line != 0 or co is code
        stack.extend(c for c in co.co_consts if hasattr(c, "co_lines"))


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="calls, values, lines"):
        rewrite_source("x = 1", FILENAME, "m", "everything")


def test_syntax_errors_come_from_the_users_source() -> None:
    with pytest.raises(SyntaxError) as info:
        rewrite_source("def f(:\n    pass\n", "bad.py", "bad", "calls")
    assert info.value.filename == "bad.py"
    assert info.value.lineno == 1


def test_a_rewritten_module_keeps_its_own_capture_flag_current() -> None:
    src = """
    def f(x):
        return x + 1
    """
    ns = load(src, "calls")
    assert ns["__tidescope_on__"] is False
    with tidescope.capture(buffer_size=64) as cap:
        assert ns["__tidescope_on__"] is True
        assert ns["f"](1) == 2
    assert ns["__tidescope_on__"] is False
    assert ns["f"](2) == 3  # the unreported copy: nothing recorded, same result
    [(entry, exit_)] = calls(cap.events(), "f")
    assert entry.data["args"] == {"x": 1} and exit_.data["return_value"] == 2


CAPTURE_OFF = """
count = 0

def bump(k):
    if k:
        global count
    count += k
    return count

def outer():
    n = 0
    def inner():
        nonlocal n
        n += 1
        return n
    return inner() + inner() + (lambda: n)()

def gen(n):
    total = 0
    for i in range(n):
        got = yield i if i % 2 else -i
        total += got or 0
    yield from range(2)
    match total:
        case 0:
            return "none"
        case [x]:
            return x
    return total

def work(xs):
    out = []
    while xs:
        x = xs.pop()
        with open(__file__) if False else nullcontext(x) as y:
            out.append(y)
    g = gen(3)
    out += [next(g), g.send(5), *g]
    return out, bump(2), bump(0), outer()

async def coro(x):
    return x * 2
"""


def run_capture_off(ns: dict[str, Any]) -> list[Any]:
    """``work`` and ``coro`` of :data:`CAPTURE_OFF`, with what each frame of the sample held
    as it returned or suspended, and every call made into tidescope on the way."""
    seen: list[Any] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "return" and frame.f_code.co_filename == FILENAME:
            seen.extend(n for n in frame.f_locals if n.startswith("__tidescope_"))
        elif event == "call" and frame.f_globals.get("__name__", "").startswith("tidescope"):
            seen.append(frame.f_code.co_name)
        elif event == "c_call" and (getattr(arg, "__module__", None) or "").startswith("tidescope"):
            seen.append(arg.__name__)

    sys.setprofile(profile)
    try:
        result = [ns["work"]([1, 2]), asyncio.run(ns["coro"](4))]
    finally:
        sys.setprofile(None)
    return [result, seen]


def test_capture_off_runs_an_unreported_copy_at_every_level() -> None:
    # generators, global and nonlocal included: no report is called and no local of ours
    # bound, and capture on still records every call
    prelude = "from contextlib import nullcontext\n"
    expected = run_capture_off(load(prelude + CAPTURE_OFF, None))
    assert expected[1] == []
    for level in LEVELS:
        assert run_capture_off(load(prelude + CAPTURE_OFF, level)) == expected, level
    events = same_everywhere(prelude + CAPTURE_OFF, lambda ns: ns["work"]([1, 2]))
    for level in LEVELS:
        names = [e.data["function"] for e in events[level] if e.event_type == ENTRY]
        assert names.count("outer.<locals>.inner") == 2 and names.count("gen") == 1, level
        assert "bump" in names and "outer.<locals>.<lambda>" in names


def test_deeply_nested_functions_are_not_copied_exponentially() -> None:
    # each enclosing function's unreported copy holds its nested functions again: past a
    # few levels a function gets no copy, so the code stays bounded (was 2**depth copies)
    depth = 10
    lines = []
    for k in range(depth):
        lines.append("    " * k + f"def f{k}(x):")
    lines.append("    " * depth + "return x + 1")
    for k in range(depth - 1, 0, -1):
        lines.append("    " * k + f"return f{k}(x) * 2")
    source = "\n".join(lines) + "\n"
    for level in LEVELS:
        tree, _ = rewrite_source(source, FILENAME, "sample", level)
        innermost = sum(
            1
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef) and n.name == f"f{depth - 1}"
        )
        assert innermost <= 8, (level, innermost)
    events = same_everywhere(source, lambda ns: ns["f0"](1))
    for level in LEVELS:
        names = {
            e.data["function"].rsplit(".", 1)[-1] for e in events[level] if e.event_type == ENTRY
        }
        assert names == {f"f{k}" for k in range(depth)}, level
