"""The bounded value snapshot (DESIGN invariant 5): copies taken at the event, cut and marked."""

from __future__ import annotations

import collections
import json
import sys
from typing import Any, NamedTuple
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tidescope
from tidescope import Limits, ObjectSnapshot, Truncated
from tidescope.capture import _core
from tidescope.capture.runtime import report_function_entry
from tidescope.events import jsonable

snapshot = _core.snapshot
snapshot_many = _core.snapshot_many

DEFAULT = Limits()


@pytest.fixture(autouse=True)
def default_limits():
    """Every test starts with the default limits and puts back what it found."""
    before = _core.get_limits()
    _core.set_limits(Limits())
    yield
    _core.set_limits(before)


@pytest.fixture
def no_internal_errors():
    """Fails the test if the snapshot fell back to its catch-all error path."""
    before = _core.internal_errors()[0]
    yield
    after, last = _core.internal_errors()
    assert after == before, f"snapshot hit its internal error path: {last}"


def walk(value: Any):
    """Every value reachable in a snapshot, markers and object attrs included."""
    yield value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(k)
            yield from walk(v)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            yield from walk(v)
    elif isinstance(value, Truncated):
        if value.kept is not None:
            yield from walk(value.kept)
    elif isinstance(value, ObjectSnapshot):
        yield from walk(value.attrs)
        yield from walk(value.repr)


def markers(value: Any) -> list[Truncated]:
    return [v for v in walk(value) if type(v) is Truncated]


# ---------------------------------------------------------------------------------------
# the public names


def test_public_snapshot_names_are_the_core_function():
    assert tidescope.snapshot is _core.snapshot
    assert tidescope.snapshot([1, 2]) == [1, 2]


def test_default_limits_are_depth_3_items_20_string_256_bytes_4096_no_repr():
    assert Limits(3, 20, 256, 4096, False) == DEFAULT


# ---------------------------------------------------------------------------------------
# immutable scalars kept, containers copied


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, 7, -5, 2**40, 1.5, float("inf"), "", "hello", 1 + 2j, range(3)],
    ids=repr,
)
def test_immutable_scalar_is_kept_by_identity(value):
    assert snapshot(value) is value


def test_tuple_of_immutable_scalars_is_equal_tuple():
    t = (1, "a", None, 2.5, True)
    out = snapshot(t)
    assert type(out) is tuple
    assert out == t


def test_list_is_copied_not_referenced():
    lst = [1, 2, 3]
    out = snapshot(lst)
    assert out == [1, 2, 3]
    assert out is not lst
    lst.append(4)
    lst[0] = 99
    assert out == [1, 2, 3]


def test_nested_containers_are_copied_at_every_level():
    inner = [1, 2]
    d = {"k": inner, "s": {3}}
    value = [d, (inner,)]
    out = snapshot(value)
    inner.append(3)
    d["k2"] = "new"
    d["s"].add(4)
    assert out == [{"k": [1, 2], "s": {3}}, ([1, 2],)]


def test_dict_set_frozenset_deque_snapshot_to_equal_copies():
    d = {"a": 1, 2: "b", None: (1, 2)}
    s = {1, "x"}
    fs = frozenset({3, 4})
    dq = collections.deque([1, 2, 3])
    assert snapshot(d) == d and snapshot(d) is not d
    assert snapshot(s) == s and snapshot(s) is not s
    assert snapshot(fs) == fs
    out = snapshot(dq)
    dq.append(4)
    assert list(out) == [1, 2, 3]


def test_bytearray_is_copied_not_referenced():
    ba = bytearray(b"abc")
    out = snapshot(ba)
    ba[0] = ord("z")
    assert out == bytearray(b"abc")


def test_short_bytes_are_kept_equal():
    assert snapshot(b"x" * 256) == b"x" * 256


# ---------------------------------------------------------------------------------------
# strings, bytes and ints past the limits


def test_long_string_becomes_truncated_with_original_length_and_256_char_prefix():
    s = "a" * 100 + "b" * 300
    out = snapshot(s)
    assert out == Truncated("str", 400, "length", s[:256])


def test_string_of_exactly_256_chars_is_kept_whole():
    s = "q" * 256
    assert snapshot(s) is s


def test_ten_megabyte_string_is_truncated_to_a_prefix():
    s = "0123456789" * 1_000_000
    out = snapshot(s)
    assert type(out) is Truncated
    assert (out.type_name, out.size, out.reason) == ("str", 10_000_000, "length")
    assert out.kept == s[:256]
    assert len(out.kept) == 256


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_bytes_past_256_are_truncated_with_a_256_byte_prefix(kind):
    data = kind(range(256)) * 4
    out = snapshot(data)
    assert type(out) is Truncated
    assert (out.type_name, out.size, out.reason) == (kind.__name__, 1024, "length")
    assert out.kept == bytes(data[:256])


def test_huge_int_becomes_truncated_with_its_bit_length():
    n = 10**100000
    out = snapshot(n)
    assert out == Truncated("int", n.bit_length(), "length")


def test_huge_negative_int_becomes_truncated_with_its_bit_length():
    n = -(10**5000)
    assert snapshot(n) == Truncated("int", n.bit_length(), "length")


def test_int_with_a_few_hundred_bits_is_kept():
    n = 2**600 + 12345
    assert snapshot(n) == n


# ---------------------------------------------------------------------------------------
# containers past the limits


def test_list_past_20_items_keeps_the_first_20_and_the_length():
    out = snapshot(list(range(100)))
    assert out == Truncated("list", 100, "length", list(range(20)))


def test_dict_past_20_items_keeps_20_entries_and_the_length():
    d = {i: i for i in range(50)}
    out = snapshot(d)
    assert type(out) is Truncated
    assert (out.type_name, out.size, out.reason) == ("dict", 50, "length")
    assert out.kept == {i: i for i in range(20)}


def test_tuple_and_set_past_20_items_are_marked_with_their_type_and_length():
    t = snapshot(tuple(range(30)))
    s = snapshot(set(range(30)))
    assert (t.type_name, t.size, t.reason, len(t.kept)) == ("tuple", 30, "length", 20)
    assert (s.type_name, s.size, s.reason, len(s.kept)) == ("set", 30, "length", 20)


def test_nesting_of_depth_10_is_cut_at_depth_3():
    value: Any = "leaf"
    for _ in range(10):
        value = [value]
    out = snapshot(value)
    # levels 0, 1 and 2 are copied; the list at depth 3 becomes a marker
    assert type(out) is list
    assert type(out[0]) is list
    assert type(out[0][0]) is list
    assert out[0][0][0] == Truncated("list", 1, "depth")


def test_dict_nesting_is_cut_at_depth_3():
    value: Any = {"x": 1}
    for i in range(9):
        value = {f"l{i}": value}
    out = snapshot(value)
    third = out["l8"]["l7"]["l6"]
    assert third == Truncated("dict", 1, "depth")


def test_list_containing_itself_gives_a_cycle_or_depth_marker():
    lst: list[Any] = [1]
    lst.append(lst)
    out = snapshot(lst)
    assert out[0] == 1
    assert isinstance(out[1], Truncated)
    assert out[1].reason in ("cycle", "depth")
    assert out[1].type_name == "list"


def test_dict_containing_itself_gives_a_cycle_or_depth_marker():
    d: dict[str, Any] = {"a": 1}
    d["self"] = d
    out = snapshot(d)
    assert out["a"] == 1
    assert isinstance(out["self"], Truncated)
    assert out["self"].reason in ("cycle", "depth")


def test_mutually_recursive_containers_give_a_cycle_or_depth_marker():
    a: list[Any] = ["a"]
    b: dict[str, Any] = {"b": a}
    a.append(b)
    for lim in (DEFAULT, Limits(max_depth=50)):
        out = snapshot(a, lim)
        cut = [m for m in markers(out) if m.reason in ("cycle", "depth")]
        assert cut, out


def test_object_whose_dict_contains_itself_is_captured_with_a_marker():
    class Node:
        pass

    n = Node()
    n.me = n
    out = snapshot(n)
    assert type(out) is ObjectSnapshot
    assert any(m.reason in ("cycle", "depth") for m in markers(out))


def test_shared_sibling_is_not_mistaken_for_a_cycle():
    shared = [1, 2]
    out = snapshot([shared, shared])
    assert out == [[1, 2], [1, 2]]


# ---------------------------------------------------------------------------------------
# the per-event byte budget


def test_budget_cuts_a_flat_list_of_long_strings_with_reason_budget():
    value = ["s" * 250 for _ in range(20)]
    out = snapshot(value)
    assert type(out) is Truncated
    assert (out.type_name, out.size, out.reason) == ("list", 20, "budget")
    assert 0 < len(out.kept) < 20
    assert out.kept[0] == "s" * 250


def test_budget_cuts_a_flat_dict_of_long_strings_with_reason_budget():
    value = {f"k{i}": "v" * 250 for i in range(20)}
    out = snapshot(value)
    assert type(out) is Truncated
    assert (out.type_name, out.size, out.reason) == ("dict", 20, "budget")
    assert 0 < len(out.kept) < 20


def test_budget_is_shared_by_the_values_of_one_event():
    outs = snapshot_many(*["t" * 250 for _ in range(20)])
    assert outs[0] == "t" * 250
    assert outs[-1] == Truncated("str", 250, "budget")


def test_budget_cut_container_marker_carries_its_length():
    outs = snapshot_many(*["t" * 250 for _ in range(17)], [1, 2, 3])
    last = outs[-1]
    assert type(last) is Truncated
    assert (last.size, last.reason) == (3, "budget")


def test_budget_cut_container_type_name_is_spelled_like_other_cuts():
    # a list cut by length is named "list"; a list cut by the budget must be named the same
    length_cut = snapshot(list(range(30)))
    budget_cut = snapshot_many(*["t" * 250 for _ in range(17)], [1, 2, 3])[-1]
    assert budget_cut.reason == "budget"
    assert budget_cut.type_name == length_cut.type_name == "list"


def test_budget_cut_bytearray_marker_carries_its_original_size():
    outs = snapshot_many(*["t" * 250 for _ in range(17)], bytearray(1000))
    last = outs[-1]
    assert type(last) is Truncated
    assert last.reason == "budget"
    assert last.size == 1000


# ---------------------------------------------------------------------------------------
# custom limits


TINY = Limits(max_depth=1, max_items=2, max_string=5, max_event_bytes=64)


def test_custom_max_items_is_honoured():
    assert snapshot([1, 2, 3], TINY) == Truncated("list", 3, "length", [1, 2])


def test_custom_max_string_is_honoured():
    assert snapshot("abcdefg", TINY) == Truncated("str", 7, "length", "abcde")
    assert snapshot("abcde", TINY) == "abcde"


def test_custom_max_depth_is_honoured():
    assert snapshot([[1]], TINY) == [Truncated("list", 1, "depth")]


def test_custom_max_event_bytes_is_honoured():
    outs = snapshot_many(*["abcde"] * 8, limits=TINY)
    assert outs[0] == "abcde"
    assert Truncated("str", 5, "budget") in outs
    assert outs[-1] == Truncated("str", 5, "budget")


def test_custom_limits_cut_a_big_int_earlier():
    out = snapshot(10**50, TINY)
    assert out == Truncated("int", (10**50).bit_length(), "length")


def test_configured_global_limits_apply_when_none_are_passed():
    _core.set_limits(TINY)
    assert snapshot([1, 2, 3]) == Truncated("list", 3, "length", [1, 2])


# ---------------------------------------------------------------------------------------
# arbitrary objects: their code never runs


class Point(NamedTuple):
    x: int
    y: Any


def test_namedtuple_becomes_object_snapshot_with_field_attrs():
    p = Point(1, [2, 3])
    out = snapshot(p)
    assert type(out) is ObjectSnapshot
    assert out.type_name.endswith("Point")
    assert out.attrs == {"x": 1, "y": [2, 3]}
    p.y.append(4)
    assert out.attrs["y"] == [2, 3]


def test_object_with_dict_gives_its_attrs_and_type_and_id():
    class Thing:
        def __init__(self):
            self.a = 1
            self.b = [1, 2]

    t = Thing()
    out = snapshot(t)
    assert type(out) is ObjectSnapshot
    assert out.type_name == f"{Thing.__module__}.{Thing.__qualname__}"
    assert out.object_id == id(t)
    assert out.attrs == {"a": 1, "b": [1, 2]}
    assert out.repr is None
    t.b.append(3)
    assert out.attrs["b"] == [1, 2]


def test_object_with_slots_gives_its_set_slots_as_attrs():
    class Slotted:
        __slots__ = ("a", "b", "unset")

        def __init__(self):
            self.a = 1
            self.b = "two"

    out = snapshot(Slotted())
    assert type(out) is ObjectSnapshot
    assert out.attrs == {"a": 1, "b": "two"}


def test_object_with_slots_and_dict_gives_both_as_attrs():
    class Base:
        __slots__ = ("s",)

    class Both(Base):
        def __init__(self):
            self.s = 1
            self.d = 2

    out = snapshot(Both())
    assert out.attrs == {"s": 1, "d": 2}


def test_exception_gives_its_args():
    e = ValueError("boom", 3)
    out = snapshot(e)
    assert type(out) is ObjectSnapshot
    assert out.type_name == "builtins.ValueError"
    assert out.attrs["args"] == ("boom", 3)


def test_exception_extra_attributes_are_captured():
    e = KeyError("k")
    e.code = 42
    out = snapshot(e)
    assert out.attrs["args"] == ("k",)
    assert out.attrs["code"] == 42


def test_generator_is_not_consumed():
    def gen():
        yield "first"
        yield "second"

    g = gen()
    out = snapshot(g)
    assert type(out) is ObjectSnapshot
    assert next(g) == "first"


def test_started_generator_keeps_its_position():
    g = (i for i in range(5))
    assert next(g) == 0
    snapshot([g, {"g": g}])
    assert next(g) == 1


def _make_misbehaving(method: str):
    counter: collections.Counter[str] = collections.Counter()

    def raising(self, *a, **k):
        counter[method] += 1
        raise RuntimeError(f"{method} must not be called")

    def wrong_type(self, *a, **k):
        counter[method] += 1
        return object()

    def infinite_iter(self):
        counter[method] += 1
        return iter(int, 1)  # never ends

    def counting_getattribute(self, name):
        counter[method] += 1
        return object.__getattribute__(self, name)

    body: dict[str, Any] = {}
    if method == "__iter__":
        body[method] = infinite_iter
    elif method == "__getattribute__":
        body[method] = counting_getattribute
    elif method in ("__repr__", "__str__", "__len__", "__bool__"):
        body[method] = wrong_type
    else:
        body[method] = raising
    cls = type(f"Bad{method.strip('_').title()}", (), body)
    obj = cls.__new__(cls)
    object.__setattr__(obj, "payload", [1, 2])
    return obj, counter


MISBEHAVING = [
    "__repr__",
    "__str__",
    "__len__",
    "__iter__",
    "__eq__",
    "__hash__",
    "__getattr__",
    "__getattribute__",
    "__bool__",
    "__format__",
    "__sizeof__",
    "__reduce_ex__",
    "__copy__",
    "__deepcopy__",
]


@pytest.mark.parametrize("method", MISBEHAVING)
def test_object_with_misbehaving_method_is_captured_without_calling_it(method):
    obj, counter = _make_misbehaving(method)
    out = snapshot(obj)
    assert type(out) is ObjectSnapshot
    assert out.attrs == {"payload": [1, 2]}
    assert out.repr is None
    assert counter[method] == 0


@pytest.mark.parametrize("method", ["__eq__", "__hash__"])
def test_objects_in_a_set_and_as_dict_keys_have_eq_and_hash_never_called(method):
    class Key:
        n = 0

        def __hash__(self):
            Key.n += method == "__hash__"
            return 1  # every key collides

        def __eq__(self, other):
            Key.n += method == "__eq__"
            return self is other

    keys = [Key() for _ in range(3)]
    s = set(keys)
    d = dict.fromkeys(keys, 0)
    Key.n = 0
    out_s = snapshot(s)
    out_d = snapshot(d)
    assert Key.n == 0
    assert len(out_s) == 3 and len(out_d) == 3


@pytest.mark.parametrize("container", [collections.defaultdict, collections.OrderedDict])
def test_dict_subclass_with_object_keys_does_not_call_their_hash(container):
    class Key:
        n = 0

        def __hash__(self):
            Key.n += 1
            return 1

    keys = [Key() for _ in range(3)]
    d = container()
    for k in keys:
        d[k] = 0
    Key.n = 0
    out = snapshot(d)
    assert Key.n == 0
    assert type(out) is dict and len(out) == 3


def test_set_subclass_with_object_items_does_not_call_their_hash():
    class Key:
        n = 0

        def __hash__(self):
            Key.n += 1
            return 1

    class MySet(set):
        pass

    s = MySet(Key() for _ in range(3))
    Key.n = 0
    out = snapshot(s)
    assert Key.n == 0
    assert len(out) == 3


def test_repr_is_not_called_by_default_and_repr_field_is_none():
    calls = []

    class R:
        def __repr__(self):
            calls.append(1)
            return "R()"

    out = snapshot(R())
    assert out.repr is None
    assert calls == []


def test_repr_objects_records_the_repr():
    class R:
        def __repr__(self):
            return "R(42)"

    out = snapshot(R(), Limits(repr_objects=True))
    assert type(out) is ObjectSnapshot
    assert out.repr == "R(42)"


def test_repr_objects_with_raising_repr_gives_error_marker():
    class R:
        def __repr__(self):
            raise RuntimeError("no")

    out = snapshot(R(), Limits(repr_objects=True))
    assert type(out) is ObjectSnapshot
    assert type(out.repr) is Truncated
    assert out.repr.reason == "error"


def test_repr_objects_with_non_string_repr_gives_error_marker():
    class R:
        def __repr__(self):
            return 42

    out = snapshot(R(), Limits(repr_objects=True))
    assert type(out.repr) is Truncated
    assert out.repr.reason == "error"


def test_repr_objects_long_repr_is_truncated_to_max_string():
    class R:
        def __repr__(self):
            return "r" * 1000

    out = snapshot(R(), Limits(repr_objects=True))
    assert out.repr == Truncated("str", 1000, "length", "r" * 256)


def test_reports_made_inside_a_repr_are_not_captured():
    class Chatty:
        def __repr__(self):
            report_function_entry("inside", "repr", [])
            return "Chatty()"

    with tidescope.capture(buffer_size=64) as cap:
        report_function_entry("outside", "before", [])
        out = snapshot(Chatty(), Limits(repr_objects=True))
        report_function_entry("outside", "after", [])
    assert out.repr == "Chatty()"
    modules = [e.data["module"] for e in cap.events()]
    assert modules == ["outside", "outside"]


def test_dict_resized_by_a_repr_during_snapshot_does_not_raise():
    d: dict[str, Any] = {}

    class Grower:
        def __repr__(self):
            for i in range(50):
                d[f"new{i}"] = i
            return "Grower()"

    d["a"] = Grower()
    d["b"] = 2
    out = snapshot(d, Limits(repr_objects=True))
    assert type(out) is Truncated
    assert (out.type_name, out.size, out.reason) == ("dict", 2, "error")


def test_mock_with_dict_spec_is_captured_as_an_object():
    m = mock.Mock(spec=dict)
    out = snapshot(m)
    assert type(out) is ObjectSnapshot
    assert out.type_name == "unittest.mock.Mock"


# ---------------------------------------------------------------------------------------
# subclasses of builtins are read through the base type


def test_dict_subclass_is_read_through_dict_methods():
    calls = []

    class D(dict):
        def items(self):
            calls.append("items")
            return iter([("fake", 1)])

        def keys(self):
            calls.append("keys")
            return iter(["fake"])

        def __iter__(self):
            calls.append("iter")
            return iter(["fake"])

        def __len__(self):
            calls.append("len")
            return 99

        def __getitem__(self, k):
            calls.append("getitem")
            return "fake"

    out = snapshot(D(a=1, b=[2]))
    assert out == {"a": 1, "b": [2]}
    assert type(out) is dict
    assert calls == []


def test_list_subclass_is_read_through_list_methods():
    calls = []

    class L(list):
        def __iter__(self):
            calls.append("iter")
            return iter(int, 1)

        def __len__(self):
            calls.append("len")
            return -1  # noqa: PLE0303 - misbehaving on purpose

        def __getitem__(self, i):
            calls.append("getitem")
            raise IndexError

    src = L([1, 2, 3])
    out = snapshot(src)
    assert out == [1, 2, 3]
    assert type(out) is list
    assert calls == []
    list.append(src, 4)
    assert out == [1, 2, 3]


def test_str_subclass_is_read_as_a_plain_str():
    calls = []

    class S(str):
        def __str__(self):
            calls.append("str")
            return "fake"

        def __repr__(self):
            calls.append("repr")
            return "fake"

        def __len__(self):
            calls.append("len")
            return 0

        def __getitem__(self, i):
            calls.append("getitem")
            return "fake"

        def __iter__(self):
            calls.append("iter")
            return iter("fake")

    out = snapshot(S("real value"))
    assert out == "real value"
    assert type(out) is str
    long = snapshot(S("x" * 300))
    assert long == Truncated("str", 300, "length", "x" * 256)
    assert calls == []


def test_int_subclass_is_read_as_a_plain_int():
    calls = []

    class I(int):  # noqa: E742
        def __index__(self):
            calls.append("index")
            return 0

        def __int__(self):
            calls.append("int")
            return 0

        def __repr__(self):
            calls.append("repr")
            return "fake"

        def __lt__(self, other):
            calls.append("lt")
            return True

        def __gt__(self, other):
            calls.append("gt")
            return True

    out = snapshot(I(7))
    assert out == 7
    assert type(out) is int
    assert calls == []


def test_float_subclass_is_read_as_a_plain_float():
    class F(float):
        def __float__(self):
            raise RuntimeError("no")

    out = snapshot(F(2.5))
    assert out == 2.5
    assert type(out) is float


def test_tuple_subclass_without_fields_is_read_as_a_tuple():
    class T(tuple):
        def __iter__(self):
            raise RuntimeError("no")

    out = snapshot(T((1, 2)))
    assert out == (1, 2)


# ---------------------------------------------------------------------------------------
# data loss


def test_dict_keys_with_a_shared_long_prefix_keep_every_entry():
    # two distinct keys whose 256-char prefixes and lengths are equal
    d = {"a" * 300 + "1": 1, "a" * 300 + "2": 2}
    out = snapshot(d)
    kept = out.kept if type(out) is Truncated else out
    assert sorted(kept.values()) == [1, 2]
    if type(out) is Truncated:
        assert out.reason != "budget"  # nothing near 4096 bytes was used


# ---------------------------------------------------------------------------------------
# never raises, always JSON-serialisable


def test_snapshot_never_raises_on_objects_whose_every_dunder_raises():
    class Hostile:
        def __getattribute__(self, name):
            raise RuntimeError(name)

        def __repr__(self):
            raise RuntimeError("repr")

        def __hash__(self):
            raise RuntimeError("hash")

        def __eq__(self, other):
            raise RuntimeError("eq")

        def __len__(self):
            raise RuntimeError("len")

        def __iter__(self):
            raise RuntimeError("iter")

        def __bool__(self):
            raise RuntimeError("bool")

    h = Hostile()
    for lim in (DEFAULT, Limits(repr_objects=True)):
        out = snapshot([h, {"k": h}], lim)
        json.dumps(jsonable(out))


def test_jsonable_of_markers_and_objects_is_json_serialisable(no_internal_errors):
    class Thing:
        def __init__(self):
            self.data = b"\x00\xff" * 200
            self.nested = {(1, 2): {frozenset({1}): [None, 1.5, "x" * 400]}}

    value = {
        "big": 10**5000,
        "text": "y" * 10_000,
        "obj": Thing(),
        "cycle": None,
        "exc": ValueError("v"),
        "gen": (i for i in range(3)),
        1: collections.deque([1]),
    }
    value["cycle"] = value
    json.dumps(jsonable(snapshot(value)))


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=300)
    | st.binary(max_size=300)
)
hashables = st.recursive(
    scalars,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=4),
    max_leaves=6,
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=25)
        | st.tuples(inner, inner)
        | st.dictionaries(hashables, inner, max_size=25)
        | st.sets(hashables, max_size=25)
    ),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_snapshot_of_any_nested_value_is_json_serialisable(value):
    before = _core.internal_errors()[0]
    out = snapshot(value)
    json.dumps(jsonable(out))
    assert _core.internal_errors()[0] == before, _core.internal_errors()[1]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.integers(1, 5), st.integers(1, 30), st.integers(1, 300), st.integers(1, 5000))
def test_snapshot_with_any_limits_is_json_serialisable(value, depth, items, string, budget):
    lim = Limits(max_depth=depth, max_items=items, max_string=string, max_event_bytes=budget)
    out = snapshot(value, lim)
    json.dumps(jsonable(out))
    for m in markers(out):
        assert m.reason in ("length", "depth", "budget", "cycle", "error", "duplicate")
        assert type(m.size) is int and m.size >= 0


@settings(max_examples=100, deadline=None)
@given(values)
def test_snapshot_does_not_change_the_value(value):
    before = repr(value)
    snapshot(value)
    assert repr(value) == before


def test_nesting_deeper_than_the_recursion_limit_does_not_raise_with_a_huge_max_depth():
    value: Any = []
    for _ in range(sys.getrecursionlimit() * 2):
        value = [value]
    snapshot(value, Limits(max_depth=10**6))  # must not raise RecursionError


# -- the flat fast path is the item-by-item copy's result -----------------------------------

_flat_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.text(min_size=20, max_size=300),
    st.binary(max_size=8),
)
_nested = st.recursive(
    _flat_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=25),
        st.lists(inner, max_size=25).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=300), st.integers()), inner, max_size=25),
    ),
    max_leaves=80,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=_nested,
    lim=st.builds(
        Limits,
        max_depth=st.integers(0, 4),
        max_items=st.integers(0, 30),
        max_string=st.integers(0, 300),
        max_event_bytes=st.one_of(st.integers(0, 400), st.integers(0, 6000)),
    ),
)
def test_flat_containers_copied_in_one_step_equal_the_item_by_item_copy(
    value: Any, lim: Limits, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tidescope.capture import _snapshot
    from tidescope.capture._snapshot import Snapper

    data = value if type(value) is dict else {"v": value, "k": "x"}
    fast, fast_p = Snapper(lim), Snapper(lim)
    got, got_p = fast.snap(value), fast_p.payload(data)
    with monkeypatch.context() as m:
        m.setattr(Snapper, "_flat", lambda self, v, t, depth: None)
        m.setattr(_snapshot, "_flat_payload", lambda *args: None)
        slow, slow_p = Snapper(lim), Snapper(lim)
        want, want_p = slow.snap(value), slow_p.payload(data)
    assert repr(jsonable(got)) == repr(jsonable(want))
    assert type(got) is type(want)
    assert fast.budget == slow.budget
    assert repr(jsonable(got_p)) == repr(jsonable(want_p))
    assert fast_p.budget == slow_p.budget


@pytest.mark.parametrize("shape", [list, tuple, "dict"])
def test_a_flat_container_at_the_budget_edge_is_cut_exactly_as_item_by_item(
    shape: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tidescope.capture._snapshot import Snapper

    items = [7, "x" * 50, "y" * 50]  # a str last: the edge decides whether it is cut
    value: Any = {f"k{i}": v for i, v in enumerate(items)} if shape == "dict" else shape(items)
    for budget in range(100, 220):
        lim = Limits(max_event_bytes=budget)
        got = Snapper(lim).snap(value)
        with monkeypatch.context() as m:
            m.setattr(Snapper, "_flat", lambda self, v, t, depth: None)
            want = Snapper(lim).snap(value)
        assert repr(jsonable(got)) == repr(jsonable(want)), budget


# -- exceptions taken in one step equal the full path ---------------------------------------


class _Plain(ValueError):
    pass


class _WithAttrs(KeyError):
    def __init__(self, key: Any) -> None:
        super().__init__(key)
        self.key = key


class _Slotted(Exception):
    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Mixin:
    pass


class _MixedError(_Mixin, LookupError):  # a base that is not an exception: the full path
    pass


def _exceptions() -> list[BaseException]:
    noted = RuntimeError("noted")
    noted.add_note("a note")
    chained = ValueError("outer")
    chained.__cause__ = KeyError("inner")
    return [
        _Plain("apple"), _Plain(), _Plain(1, "two", 3.0, None), _Plain("x" * 300),
        _Plain(list(range(30))), _Plain({"a": [1, 2]}), _Plain(object()),
        _WithAttrs("k"), _Slotted(7), noted, chained, OSError(2, "No such file"),
        KeyboardInterrupt(), StopIteration(5), SystemExit(3), _MixedError("m"),
    ]  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lim=st.builds(
        Limits,
        max_depth=st.integers(0, 4),
        max_items=st.integers(0, 30),
        max_string=st.integers(0, 300),
        max_event_bytes=st.one_of(st.integers(0, 200), st.integers(0, 6000)),
    ),
    spent=st.integers(0, 300),
)
def test_exceptions_taken_in_one_step_equal_the_full_path(
    lim: Limits, spent: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tidescope.capture import _snapshot
    from tidescope.capture._snapshot import Snapper, exception_snapshot

    for exc in _exceptions():
        fast = Snapper(lim)
        fast.budget -= spent  # an event whose other values spent part of the budget
        got = exception_snapshot(fast, exc)
        with monkeypatch.context() as m:
            m.setattr(_snapshot, "_flat_exception", lambda *args: None)
            slow = Snapper(lim)
            slow.budget -= spent
            want = exception_snapshot(slow, exc)
        assert repr(jsonable(got)) == repr(jsonable(want)), exc
        assert fast.budget == slow.budget, exc
