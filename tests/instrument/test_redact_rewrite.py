"""Secret arguments and locals are decided when the import hook rewrites a function."""

from __future__ import annotations

import ast
import json
import textwrap
from typing import Any

import tidescope
from tidescope import EventType, Redacted
from tidescope.capture import _core, _redact
from tidescope.events import jsonable
from tidescope.instrument import _cache, rewrite_source

ENTRY = EventType.FUNCTION_ENTRY
LOCALS = EventType.LOCAL_VARIABLE_SNAPSHOT
LOOP = EventType.LOOP_ITERATION
STR = Redacted("str")

SAMPLE = """
def login(user, password, *args, api_key=None, **kwargs):
    token = password + "!"
    count = len(user)
    for secret in [token]:
        pass
    return count

def plain(a, b, c):
    return a

check = lambda session, n: n
"""


def load(level: str) -> dict[str, Any]:
    tree, _ = rewrite_source(textwrap.dedent(SAMPLE), "<sample>", "sample", level)
    ns: dict[str, Any] = {"__name__": "sample"}
    exec(compile(tree, "<sample>", "exec", dont_inherit=True), ns)
    return ns


def test_secret_arguments_are_recorded_as_markers() -> None:
    ns = load("calls")
    with tidescope.capture(buffer_size=256) as cap:
        assert ns["login"]("bob", "hunter2", 1, api_key=None, cookie="c") == 3
        assert ns["check"]("sid", 5) == 5
    login, check = cap.events(ENTRY)
    assert login.data["args"] == {
        "user": "bob",
        "password": STR,
        "args": (1,),
        "api_key": Redacted("NoneType"),
        "kwargs": {"cookie": STR},  # a dict's key: the snapshot's rule
    }
    assert check.data["args"] == {"session": STR, "n": 5}
    text = json.dumps([jsonable(e.data) for e in cap.events()])
    assert "hunter2" not in text and '"sid"' not in text and '"c"' not in text


def test_secret_locals_and_loop_variables_are_recorded_as_markers() -> None:
    ns = load("values")
    errors = _core.internal_errors()[0]
    with tidescope.capture(buffer_size=256) as cap:
        ns["login"]("bob", "hunter2")
    variables = [e.data["variables"] for e in cap.events(LOCALS)]
    assert variables == [{"token": STR}, {"count": 3}]
    assert [e.data["current_value"] for e in cap.events(LOOP)] == [{"secret": STR}]
    text = json.dumps([jsonable(e.data) for e in cap.events()])
    assert "hunter2" not in text
    assert _core.internal_errors()[0] == errors


def test_a_function_without_secret_names_is_rewritten_as_without_redaction() -> None:
    def rewritten(enabled: bool) -> str:
        _redact.configure(enabled)
        tree, _ = rewrite_source(textwrap.dedent(SAMPLE), "<sample>", "sample", "values")
        plain = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "plain")
        return ast.dump(plain)

    on, off = rewritten(True), rewritten(False)
    assert on == off
    assert "redact" not in on
    _redact.configure(True)
    tree, _ = rewrite_source(textwrap.dedent(SAMPLE), "<sample>", "sample", "calls")
    # password, api_key and the lambda's session; nothing else
    assert ast.unparse(tree).count("__tidescope_rt__.redact(") == 3


def test_the_rewrite_cache_is_keyed_by_the_pattern() -> None:
    key = _cache.entry_key("m", "m.py", b"def f(token): pass\n", "calls")
    _redact.configure(True, r"secret")
    other = _cache.entry_key("m", "m.py", b"def f(token): pass\n", "calls")
    _redact.configure(False)
    off = _cache.entry_key("m", "m.py", b"def f(token): pass\n", "calls")
    assert len({key, other, off}) == 3


def test_with_redaction_off_arguments_are_recorded_as_they_are() -> None:
    with tidescope.capture(buffer_size=256, redact=False) as cap:
        ns = load("calls")  # rewritten while the capture's setting is in force
        ns["login"]("bob", "hunter2")
    assert cap.events(ENTRY)[0].data["args"]["password"] == "hunter2"
