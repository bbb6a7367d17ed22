"""Redaction of secrets (DESIGN.md invariant 8): names, the marker, snapshots, URLs.

Runs once per core: the dict-key rule lives in both the pure snapshot and the C fast path.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import tidescope
from tidescope import Limits, ObjectSnapshot, Redacted, Truncated
from tidescope.capture import _core, _redact, runtime
from tidescope.capture._snapshot import Snapper
from tidescope.events import EventType, jsonable

STR = Redacted("str")


@pytest.fixture(autouse=True)
def default_limits():
    before = _core.get_limits()
    _core.set_limits(Limits())
    yield
    _core.set_limits(before)


@pytest.mark.parametrize(
    "name",
    [
        "password", "PASSWORD", "db_password", "passwd", "pwd", "mysql_pwd", "passphrase",
        "secret", "client_secret", "SECRET_KEY", "token", "access_token", "csrftoken",
        "refreshToken", "api_key", "apikey", "X-Api-Key", "HTTP_X_API_KEY", "access_key",
        "AWS_ACCESS_KEY_ID", "private_key", "privateKey", "Authorization",
        "HTTP_AUTHORIZATION", "auth", "oauth_header", "credentials", "Cookie", "Set-Cookie",
        "session", "sessionid", "jwt", "bearer",
    ],
)  # fmt: skip
def test_a_secret_looking_name_is_secret(name: str) -> None:
    assert _redact.secret_name(name)


@pytest.mark.parametrize(
    "name", ["user", "author", "authority", "key", "name", "count", "passenger", "compass"]
)
def test_an_ordinary_name_is_not_secret(name: str) -> None:
    assert not _redact.secret_name(name)


def test_the_marker_names_the_type_and_serializes_tagged() -> None:
    assert _redact.redacted("hunter2") == STR
    assert _redact.redacted(None) == Redacted("NoneType")
    assert _redact.redacted(Snapper) == Redacted("type")
    assert _redact.redacted(Snapper(Limits())) == Redacted("tidescope.capture._snapshot.Snapper")
    assert _redact.redacted(STR) is STR
    assert jsonable({"password": STR}) == {"password": {"$redacted": "str"}}
    with pytest.raises(AttributeError):
        STR.type_name = "int"  # type: ignore[misc]
    assert hash(STR) == hash(Redacted("str"))


def test_secret_keys_are_redacted_at_every_depth_whatever_the_path() -> None:
    value = {
        "user": "bob",
        "password": "hunter2",
        "nested": {"api_key": 12345, "n": [1, 2], "deeper": {"Cookie": "c=1", "ok": 1}},
        "list": [{"token": "t"}],
    }
    expected = {
        "user": "bob",
        "password": STR,
        "nested": {"api_key": Redacted("int"), "n": [1, 2], "deeper": {"Cookie": STR, "ok": 1}},
        "list": [{"token": STR}],
    }
    # twice: the first time the names are answered in Python, the second from the memo
    assert tidescope.snapshot(value) == expected
    assert tidescope.snapshot(value) == expected
    # the full path (something in it is cut) redacts as the flat path does
    cut = {**value, "long": "x" * 1000}
    got = tidescope.snapshot(cut)
    assert isinstance(got["long"], Truncated)
    del got["long"]
    assert got == expected

    # and so does a dict read as an object's attributes
    class Conf:
        def __init__(self) -> None:
            self.host = "db"
            self.password = "hunter2"

    snap = tidescope.snapshot(Conf())
    assert isinstance(snap, ObjectSnapshot)
    assert snap.attrs == {"host": "db", "password": STR}


def test_a_dict_with_a_secret_key_costs_the_budget_a_marker_costs() -> None:
    a = Snapper(Limits())
    a.snap({"password": "x" * 200, "b": 1})
    b = Snapper(Limits())
    b.snap({"password": None, "b": 1})
    assert a.budget == b.budget


def test_a_raw_query_string_keeps_its_ordinary_parameters() -> None:
    got = tidescope.snapshot(
        {"QUERY_STRING": "page=2&api_key=9", "query_string": b"token=x&q=1", "n": 1}
    )
    assert got == {
        "QUERY_STRING": f"page=2&api_key={_redact.MARK}",
        "query_string": f"token={_redact.MARK}&q=1".encode(),
        "n": 1,
    }
    assert tidescope.snapshot({"query_string": 5}) == {"query_string": Redacted("int")}


def test_a_header_pair_with_a_bytes_name_hides_its_value() -> None:
    headers = [(b"Authorization", b"Bearer x"), (b"accept", b"*/*"), (b"cookie", "c")]
    assert tidescope.snapshot(headers) == [
        (b"Authorization", Redacted("bytes")), (b"accept", b"*/*"), (b"cookie", STR),
    ]  # fmt: skip
    assert tidescope.snapshot((b"token",)) == (b"token",)
    assert tidescope.snapshot([[b"x-api-key", b"k"]]) == [[b"x-api-key", Redacted("bytes")]]


def test_a_str_subclass_key_is_matched_by_its_text() -> None:
    class Key(str):
        pass

    assert tidescope.snapshot({Key("password"): "x"}) == {"password": STR}


def test_every_report_redacts_its_values_but_not_its_own_fields() -> None:
    errors = _core.internal_errors()[0]
    with tidescope.capture(buffer_size=64) as cap:
        cid = _core.report_function_entry("m", "f", {"password": "p", "a": {"token": "t"}})
        _core.report_function_exit(cid, {"secret": 1, "ok": 2})
        runtime.report_state_change({"n": 0}, {"session": "abc", "n": 1})
    entry, leave, state = cap.events()
    assert entry.data["args"] == {"password": STR, "a": {"token": STR}}
    assert leave.data["return_value"] == {"secret": Redacted("int"), "ok": 2}
    assert state.event_type == EventType.STATE_CHANGE
    text = json.dumps([jsonable(e.data) for e in cap.events()])
    assert '"p"' not in text and '"t"' not in text and "abc" not in text
    assert _core.internal_errors()[0] == errors


def test_redaction_can_be_switched_off_and_extended() -> None:
    value = {"password": "p", "ssn": "123", "n": 1}
    with tidescope.capture(buffer_size=64, redact=False) as cap:
        assert tidescope.snapshot(value) == value
        cid = _core.report_function_entry("m", "f", {"d": value})
        _core.report_function_exit(cid, None)
    assert cap.events()[0].data["args"] == {"d": value}
    with tidescope.capture(buffer_size=64, redact_extra=r"^ssn$"):
        assert tidescope.snapshot(value) == {"password": STR, "ssn": STR, "n": 1}
        assert tidescope.snapshot({"ssn_note": 1}) == {"ssn_note": 1}
    with tidescope.capture(buffer_size=64, redact_pattern=r"ssn"):
        assert tidescope.snapshot(value) == {"password": "p", "ssn": STR, "n": 1}
    # back to the default with no session
    assert tidescope.snapshot(value) == {"password": STR, "ssn": "123", "n": 1}


def test_a_capture_inside_a_session_gives_back_the_sessions_pattern() -> None:
    tidescope.start(buffer_size=64, redact=False)
    try:
        with tidescope.capture(buffer_size=64):
            assert tidescope.snapshot({"token": 1}) == {"token": Redacted("int")}
        assert tidescope.snapshot({"token": 1}) == {"token": 1}
    finally:
        tidescope.stop()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://user:pass@host:5432/db", "postgres://host:5432/db"),
        ("https://ghp_abc@github.com/x.git", "https://github.com/x.git"),
        ("https://h/p?q=1&token=abc&x=2#f", f"https://h/p?q=1&token={_redact.MARK}&x=2#f"),
        ("https://u:p@h?API_KEY=1", f"https://h?API_KEY={_redact.MARK}"),
        ("/path?access%5Ftoken=z", f"/path?access%5Ftoken={_redact.MARK}"),
        ("https://h/a@b?q=1", "https://h/a@b?q=1"),
        ("file:shop.db?key=k", "file:shop.db?key=k"),
        ("file:shop.db?cipher_secret=k", f"file:shop.db?cipher_secret={_redact.MARK}"),
        ("no url at all", "no url at all"),
    ],
)
def test_urls_lose_their_credentials(url: str, expected: str) -> None:
    assert _redact.strip_url(url) == expected


def test_a_query_string_keeps_ordinary_parameters() -> None:
    assert _redact.strip_query("a=1&password&b=&token=x") == (
        f"a=1&{_redact.MARK}&b=&token={_redact.MARK}"
    )
    _redact.configure(False)
    assert _redact.strip_query("token=x") == "token=x"


def test_both_cores_agree_on_redacted_snapshots() -> None:
    from tidescope.capture import _snapshot

    values: list[Any] = [
        {"password": "p"},
        {"a": {"password": "p", "b": [1, {"token": None}]}},
        {"password": STR},
        ({"secret": 1.5},),
        [{"Authorization": "Bearer x", "n": 1}],
    ]
    lim = Limits()
    for v in values:
        got = tidescope.snapshot(v)
        # the full snapshot with the pure fast paths only
        saved = _snapshot._flat_cost, _snapshot._flat_copy
        _snapshot._flat_cost, _snapshot._flat_copy = _snapshot.flat_cost, _snapshot.flat_copy
        try:
            pure = Snapper(lim).snap(v)
        finally:
            _snapshot._flat_cost, _snapshot._flat_copy = saved
        assert got == pure, v
        assert '"p"' not in json.dumps(jsonable(got))
