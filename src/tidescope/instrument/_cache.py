"""The cache of rewritten code: compiled code objects, node records and the functions left
as written (reported again on every hit), one file per module.

A file's name is the SHA-256 of a tag (tidescope's version, a fingerprint of the rewriter's
own source, the level, the redaction pattern in force, the interpreter's cache tag and
optimization level) and of the module name, file name and source bytes: a change to any of
them is a miss, so a stale entry is never used and nothing needs invalidating. Files are
written to a temporary name and moved into place with ``os.replace``, so a reader sees a
whole entry or none; a corrupt or unreadable one is a miss. When the directory can't be
written, caching is skipped and counted (``stats()["cache_write_errors"]``), never raised.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import sys
import tempfile
import types
from importlib.util import MAGIC_NUMBER
from pathlib import Path
from typing import Final

from tidescope.instrument._nodes import NodeRecord
from tidescope.instrument._rewrite import Skipped

__all__ = ["default_cache_dir", "entry_key", "load", "store"]

_HEADER: Final = b"TSIC" + MAGIC_NUMBER
_fingerprint: str | None = None


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/tidescope``, else ``~/.cache/tidescope``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tidescope"


def _rewriter_fingerprint() -> str:
    # The version alone would keep stale entries across development edits of the rewriter.
    global _fingerprint
    if _fingerprint is None:
        h = hashlib.sha256()
        here = Path(__file__).parent
        for name in (
            "_rewrite.py",
            "_build.py",
            "_nodes.py",
            "_rt.py",
            "_cache.py",
            "_pytest_rewrite.py",
        ):
            try:
                h.update((here / name).read_bytes())
            except OSError:
                h.update(name.encode())
        _fingerprint = h.hexdigest()[:16]
    return _fingerprint


def entry_key(module: str, filename: str, source: bytes, level: str) -> str:
    """The cache file name of one module's rewrite."""
    from tidescope import __version__  # noqa: PLC0415 - tidescope imports this package
    from tidescope.capture._redact import fingerprint  # noqa: PLC0415

    h = hashlib.sha256()
    tag = (
        f"tidescope-{__version__}-{_rewriter_fingerprint()}-{level}-{fingerprint()}-"
        f"{sys.implementation.cache_tag}-O{sys.flags.optimize}"
    )
    for part in (tag, module, filename):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    h.update(source)
    return h.hexdigest() + ".tsc"


def load(
    directory: Path, key: str
) -> tuple[types.CodeType, list[NodeRecord], list[Skipped]] | None:
    """The cached entry, or None if absent, unreadable or corrupt."""
    try:
        data = (directory / key).read_bytes()
    except OSError:
        return None
    if not data.startswith(_HEADER):
        return None
    try:
        code, rows, skipped = marshal.loads(data[len(_HEADER) :])
        if not isinstance(code, types.CodeType):
            return None
        return code, [NodeRecord(*r) for r in rows], [Skipped(*s) for s in skipped]
    except Exception:
        return None


def store(
    directory: Path,
    key: str,
    code: types.CodeType,
    records: list[NodeRecord],
    skipped: list[Skipped],
) -> bool:
    """Write an entry atomically; False if it could not be written."""
    try:
        rows = tuple(tuple(r) for r in records)
        payload = _HEADER + marshal.dumps((code, rows, tuple(tuple(s) for s in skipped)))
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tsc", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            os.replace(tmp, directory / key)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return True
    except (OSError, ValueError):
        return False
