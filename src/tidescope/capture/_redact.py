"""Redaction (DESIGN.md invariant 8): which names are secret, the marker their values become,
and URLs and query strings with their credentials taken out.

A name is secret when the configured pattern (``Config.redact_pattern``, plus
``redact_extra``) is found anywhere in it, ignoring case: ``db_password``, ``X-Api-Key``,
``accessToken``. Where it applies:

- arguments and locals: decided by the import hook when it rewrites a function, so a call
  whose names are not secret runs exactly the code it ran without redaction, and a secret
  one passes :func:`redacted` of its value in place of the value;
- dict keys in every snapshot, in both cores: a str key that is secret keeps its place,
  its value becomes the marker (a raw query string's key: see :func:`guarded`); so does
  the value of a ``(b"authorization", value)`` pair (ASGI headers). The answers are
  remembered per name (:data:`secret_names`, which the C core reads too), so a name
  costs one lookup after its first time;
- URLs and query strings the integrations record: :func:`strip_url`, :func:`strip_query`.

The top-level fields of an event's ``data`` are tidescope's own names and are never matched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import unquote_plus

from tidescope.config import DEFAULT_REDACT_PATTERN
from tidescope.events import Redacted

__all__ = [
    "MARK",
    "configure",
    "fingerprint",
    "guarded",
    "plain_names",
    "redacted",
    "secret_name",
    "secret_names",
    "strip_query",
    "strip_url",
]

MARK: Final = "[REDACTED]"
"""What a secret becomes inside recorded text (a URL, a query string)."""

_QUERY_NAMES: Final = frozenset({"query_string", "querystring"})
"""Names of a raw query string (WSGI's ``QUERY_STRING``, ASGI's ``query_string``): secret
too, but their values are recorded with only the secret parameters' values hidden."""

_MEMO_LIMIT: Final = 4096

_search: Callable[[str], Any] | None = re.compile(DEFAULT_REDACT_PATTERN, re.IGNORECASE).search
_fingerprint = DEFAULT_REDACT_PATTERN
secret_names: dict[str, bool] = {}
"""Names answered so far: name -> secret. The C core looks names up here (a dict of exact
str keys: the lookup runs no user code); a miss sends the value down the full snapshot,
which answers through :func:`secret_name` and fills this in."""
plain_names: set[str] = set()
"""The names of :data:`secret_names` that are not secret: the pure core's one-step test."""
_listeners: list[Callable[[], None]] = []


def configure(
    enabled: bool, pattern: str = DEFAULT_REDACT_PATTERN, extra: str | None = None
) -> None:
    """Use ``pattern`` (and ``extra``) from now on, or no redaction when not ``enabled``.

    The names already answered are forgotten (nothing happens if the pattern is the same).
    Modules already rewritten keep the decision the import hook took for their arguments
    and locals.
    """
    global _search, _fingerprint
    full = "" if not enabled else pattern if extra is None else f"(?:{pattern})|(?:{extra})"
    if full == _fingerprint:
        return
    _search = re.compile(full, re.IGNORECASE).search if full else None
    _fingerprint = full
    secret_names.clear()
    plain_names.clear()
    for listener in _listeners:
        listener()


def on_configure(listener: Callable[[], None]) -> None:
    """Call ``listener()`` whenever the pattern changes (the C core forgets its answers)."""
    _listeners.append(listener)


def fingerprint() -> str:
    """The pattern in force ("" when off): part of the key of the rewritten-code cache."""
    return _fingerprint


def secret_name(name: str) -> bool:
    """True if values bound to ``name`` (a str) are redacted (or, for a query string's
    name, recorded as :func:`guarded` says)."""
    secret = secret_names.get(name)
    if secret is None:
        search = _search
        secret = search is not None and (search(name) is not None or name.lower() in _QUERY_NAMES)
        if len(secret_names) >= _MEMO_LIMIT:
            secret_names.clear()  # many distinct keys (data, not names): start over
            plain_names.clear()
        secret_names[name] = secret
        if not secret:
            plain_names.add(name)
    return secret


def guarded(name: str, value: Any) -> Any:
    """What a snapshot records for ``value`` under the secret name ``name``: a query
    string (str or bytes) without the values of its secret parameters, else the marker."""
    if name.lower() in _QUERY_NAMES:
        t = type(value)
        if t is str:
            return strip_query(value)
        if t is bytes:
            return strip_query(value.decode("latin-1")).encode("latin-1")
    return redacted(value)


_MARKERS: dict[type, Redacted] = {}


def redacted(value: Any) -> Redacted:
    """The marker that stands for ``value``: its type's name, nothing of its content.

    Already a marker: returned as it is. The type is read without running the value's code.
    """
    t = type(value)
    if t is Redacted:
        return value  # type: ignore[no-any-return]
    mark = _MARKERS.get(t)
    if mark is None:
        mark = Redacted(_type_name(t))
        if len(_MARKERS) < 1024:
            _MARKERS[t] = mark
    return mark


def _type_name(t: type) -> str:
    try:
        mod = type.__dict__["__module__"].__get__(t)
        qual = type.__dict__["__qualname__"].__get__(t)
        if mod == "builtins":
            return str(qual)
        return f"{mod}.{qual}" if type(mod) is str and type(qual) is str else "<unknown type>"
    except Exception:
        return "<unknown type>"


def strip_query(query: str) -> str:
    """``query`` (``a=1&token=x``, no ``?``) with the value of every secret name replaced by
    ``[REDACTED]``; a parameter without ``=`` and a secret name is replaced whole."""
    if _search is None or not query:
        return query
    parts = query.split("&")
    changed = False
    for i, part in enumerate(parts):
        name, eq, _ = part.partition("=")
        if secret_name(unquote_plus(name)):
            parts[i] = f"{name}={MARK}" if eq else MARK
            changed = True
    return "&".join(parts) if changed else query


def strip_url(url: str) -> str:
    """``url`` without its ``user:password@`` and with secret query values redacted."""
    scheme, sep, rest = url.partition("://")
    if sep:
        end = len(rest)
        for c in "/?#":
            k = rest.find(c)
            if k != -1 and k < end:
                end = k
        authority = rest[:end]
        if "@" in authority:
            rest = authority.rpartition("@")[2] + rest[end:]
        url = f"{scheme}{sep}{rest}"
    head, q, tail = url.partition("?")
    if not q:
        return url
    query, h, fragment = tail.partition("#")
    return f"{head}?{strip_query(query)}{h}{fragment}"
