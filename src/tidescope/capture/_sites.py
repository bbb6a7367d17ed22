"""The site table: every instrumented function, registered once at import, by a small int.

Rewritten code passes a site id and the parameters' values positionally
(``report_site_entry(site, *values)``): the module, the function's qualified name, its
``ast_node_id`` and the parameters' names come from here, not from the call. Ids are
indexes into :data:`table`, shared by both cores (the C core reads the same list), and
survive a fork; they are never reused within a process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import NamedTuple

__all__ = ["Site", "register_sites", "site", "table"]


class Site(NamedTuple):
    """What a call's entry and exit report, for one function."""

    module: str
    function: str
    ast_node_id: str
    params: tuple[str, ...]
    file: str
    line: int


table: list[tuple[str, str, str, tuple[str, ...], str, int]] = []
"""Every site registered in this process, by id: plain tuples, the fields of :class:`Site`
(an exact tuple is what CPython's specialized indexing reads fastest)."""

_lock = threading.Lock()


def register_sites(sites: Iterable[tuple[str, str, str, tuple[str, ...], str, int]]) -> range:
    """Register sites ``(module, function, ast_node_id, params, file, line)``; returns their
    ids, consecutive, in order."""
    new = [
        (str(m), str(f), str(n), tuple(p), str(file), int(line)) for m, f, n, p, file, line in sites
    ]
    with _lock:
        first = len(table)
        table.extend(new)
    return range(first, first + len(new))


def site(site_id: int) -> Site:
    """The site registered as ``site_id``.

    Raises:
        IndexError: no such site.
    """
    if type(site_id) is not int or site_id < 0:
        raise IndexError(f"no site {site_id!r}")
    return Site(*table[site_id])
