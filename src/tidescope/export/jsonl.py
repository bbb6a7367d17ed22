"""The trace file: one JSON object per line, one file per process, readable after a crash.

A file starts with a ``{"$header": {...}}`` line (format version, pid, node, start time),
then one line per event (:meth:`tidescope.Event.to_dict`), then, when the process ends
normally, a ``{"$stats": {...}}`` line. Lines are written a batch at a time and flushed,
so a process killed with SIGKILL leaves a file missing at most its last batch; a torn
last line is skipped by the reader. JSON lines because every tool reads them and the
standard library writes them; the writer uses ``orjson`` when it is installed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Final

from tidescope.events import ENVELOPE_FIELDS, Event, jsonable

__all__ = ["FORMAT_VERSION", "TraceWriter", "read_trace", "trace_files"]

FORMAT_VERSION: Final = 1


def _default(value: Any) -> Any:
    # called by the encoder only for values JSON has no form for: markers, bytes, sets...
    return jsonable(value)


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), default=_default)

try:  # optional: several times faster than the standard library's encoder
    import orjson

    _ORJSON_OPTIONS: Final = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS

    def _encode(envelope: dict[str, Any]) -> bytes:
        # bytes() of bytes is the object itself; it keeps mypy quiet with or without orjson
        return bytes(orjson.dumps(envelope, default=_default, option=_ORJSON_OPTIONS))
except ImportError:  # pragma: no cover - depends on the environment

    def _encode(envelope: dict[str, Any]) -> bytes:
        return _ENCODER.encode(envelope).encode()


def _line(envelope: dict[str, Any]) -> bytes:
    """One event as a JSON line; the fast encoder first, the full conversion if it balks."""
    try:
        return _encode(envelope)
    except (TypeError, ValueError):  # e.g. a tuple as a dict key
        safe = jsonable({**envelope, "event_type": str(envelope["event_type"])})
        return _ENCODER.encode(safe).encode()


def _dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode()


class TraceWriter:
    """Appends batches of events to one process's trace file.

    Raises:
        OSError: the file cannot be created (an unwritable directory, say).
    """

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any]) -> None:
        self.path = Path(path)
        self._fh: IO[bytes] | None = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self.events_written = 0
        self._write_lines([_dumps({"$header": {"format": FORMAT_VERSION, **header}})])

    def _write_lines(self, lines: list[bytes]) -> None:
        if self._fh is None:
            return
        self._fh.write(b"\n".join(lines) + b"\n")  # one write per batch: torn at most once

    def write_batch(self, events: Iterable[Event]) -> int:
        """Write and flush a batch of events; returns how many it held."""
        return self.write_envelopes([{f: getattr(e, f) for f in ENVELOPE_FIELDS} for e in events])

    def write_envelopes(self, envelopes: list[dict[str, Any]]) -> int:
        """Write and flush a batch of envelope dicts (``RingBuffer.drain_envelopes``)."""
        lines = [_line(e) for e in envelopes]
        if lines:
            self._write_lines(lines)
            self.events_written += len(lines)
        return len(lines)

    def abandon(self) -> None:
        """Close the descriptor without writing (a forked child's copy of the parent's file)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def close(self, stats: dict[str, Any] | None = None) -> None:
        """Write the closing stats line (if given) and close the file."""
        if self._fh is None:
            return
        if stats is not None:
            self._write_lines([_dumps({"$stats": stats})])
        self._fh.close()
        self._fh = None


def trace_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The trace files of a run, in a stable order."""
    return sorted(Path(directory).glob("events-*.jsonl"))


def read_trace(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield every record of a trace file (header, events, stats) as dicts, streaming.

    A torn last line (a process killed mid-write) is skipped; any other malformed line
    raises ``ValueError`` naming the file and line.
    """
    with open(path, "rb") as fh:
        pending: bytes | None = None
        lineno = 0
        for raw in fh:
            if pending is not None:
                yield _parse(pending, path, lineno)
            lineno += 1
            pending = raw
        if pending is not None:
            try:
                yield json.loads(pending)
            except ValueError:
                if pending.endswith(b"\n"):
                    raise ValueError(f"{path}:{lineno}: not a JSON line") from None
                # torn last line of a killed process: skip it


def _parse(raw: bytes, path: Any, lineno: int) -> dict[str, Any]:
    try:
        rec = json.loads(raw)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: not a JSON line") from None
    if type(rec) is not dict:
        raise ValueError(f"{path}:{lineno}: not a JSON object")
    return rec
