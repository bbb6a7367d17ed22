"""The JSON-lines export: a trace's events as JSON, one full envelope per line.

``tidescope export --format jsonl`` writes every event of a trace directory as the object
:meth:`tidescope.Event.to_dict` gives (captured values in their JSON form, see
:func:`tidescope.events.jsonable`). The trace itself is binary (``docs/trace-format.md``);
this is the form for tools that want text.

The lines are encoded with ``orjson`` when it is installed (the ``fast`` extra); a line
that only the standard library can encode exactly (an int past 64 bits) is written with a
leading space, so a reader may parse such lines with the standard library.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import IO, Any, Final

from tidescope.events import jsonable

__all__ = ["encode_line", "write_jsonl"]


def _default(value: Any) -> Any:
    # called by the encoder only for values JSON has no form for: markers, bytes, sets...
    return jsonable(value)


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), default=_default)

try:  # optional: several times faster than the standard library's encoder
    import orjson

    _ORJSON_OPTIONS: Final = orjson.OPT_NON_STR_KEYS

    def _encode(value: Any) -> bytes:
        # bytes() of bytes is the object itself; it keeps mypy quiet with or without orjson
        return bytes(orjson.dumps(value, default=_default, option=_ORJSON_OPTIONS))

except ImportError:  # pragma: no cover - depends on the environment

    def _encode(value: Any) -> bytes:
        return _ENCODER.encode(value).encode()


def _line(value: Any) -> bytes:
    """One JSON line; the fast encoder first, the full conversion if it balks."""
    try:
        return _encode(value)
    except (TypeError, ValueError):  # a tuple as a dict key, an int past 64 bits...
        # The leading space tells the reader to parse this line with the standard library:
        # orjson would read an int past 64 bits as a float and change a captured value.
        return b" " + _ENCODER.encode(jsonable(value)).encode()


def encode_line(value: Any) -> bytes:
    """``value`` (captured data included) as one line of JSON, without the newline."""
    return _line(value)


def write_jsonl(records: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """Write each event of ``records`` (as :func:`tidescope.export.reader.read_trace` yields
    them) to ``out`` as one line of JSON; other records are left out. Returns the lines."""
    n = 0
    for rec in records:
        if "event_type" in rec:
            out.write(_line(rec).decode() + "\n")
            n += 1
    return n
