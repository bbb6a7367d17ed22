"""The C ring's slots carry a site-registered call's site id, not its strings.

An entry reported by site holds no reference to its module, function or node id (they are
read back from the site table), and the C encoder's trace of such slots is the pure
encoder's trace of the records the ring gives back, mixed with spelled-out calls,
``write_event`` records and more sites than the encoder's first site-id array holds.
These need the C core: they skip on the pure core.
"""

from __future__ import annotations

import sys

import pytest

import tidescope
from tidescope.capture import _core, _sites
from tidescope.events import EventType
from tidescope.export import _tsformat

pytestmark = pytest.mark.skipif(_core.CORE_NAME != "c", reason="needs the C core")

if _core.CORE_NAME == "c":
    from tidescope.capture import _speedups  # type: ignore[attr-defined]

COUNTS = {"seq": 1, "events_written": 2, "dropped_events": 0, "internal_errors": 0}


def fresh(text: str) -> str:
    """A str object of its own (not interned, not shared with any constant)."""
    return "".join([text, "!"])[:-1]


def test_slots_of_site_calls_hold_no_reference_to_the_sites_strings() -> None:
    module, function, node = fresh("slots.mod"), fresh("Thing.run"), fresh("slots.mod:run:3")
    (site,) = _sites.register_sites([(module, function, node, ("n",), "slots.py", 3)])
    before = [sys.getrefcount(s) for s in (module, function, node)]
    session = tidescope.start(buffer_size=256)
    try:
        for n in range(50):
            cid = _core.report_site_entry(site, n)
            assert _core.report_site_exit(cid, n * 2, site)
        held = [sys.getrefcount(s) for s in (module, function, node)]
        events, _ = session.buffer.read_batch(0, 2)  # type: ignore[union-attr]
    finally:
        tidescope.stop()
    assert held == before  # 100 events in the ring, none holding the strings
    entry, exit_ = events
    assert (entry.data["module"], entry.data["function"]) == (module, function)
    assert entry.ast_node_id == exit_.ast_node_id == node
    assert entry.data["args"] == {"n": 0} and exit_.data["return_value"] == 0


def test_the_c_encoding_of_site_slots_is_the_pure_encoding_of_their_records() -> None:
    # 70 sites: more than the encoder's first site-id array (64); two share a name
    specs = [
        (f"enc.m{k % 3}", f"f{k}", f"enc:f{k}:{k}:0", ("a", "b"), "e.py", k) for k in range(70)
    ]
    specs.append(("enc.m0", "f0", "enc:f0:again", ("a", "b"), "e.py", 99))
    ids = _sites.register_sites(specs)
    session = tidescope.start(buffer_size=1024)
    buf = session.buffer
    try:
        for rnd in range(3):
            for k in ids:
                cid = _core.report_site_entry(k, rnd, "x" * (k % 4))
                _core.report_site_exit(cid, [k], k)
            cid = _core.report_function_entry("enc.m1", "f1", {"a": rnd}, ast_node_id="spelled")
            _core.report_function_exit(cid, None, exit_reason="exception-free")
            _core.write_event(buf, EventType.GENERIC, {"round": rnd}, ast_node_id="enc:f1:1:0")
        assert buf is not None
        want = buf.stats()["available_events"]  # type: ignore[attr-defined]
        blob, n, _, consumed = buf._scan_encoded(buf._r, want)  # type: ignore[attr-defined]
        records = buf.drain_records()  # type: ignore[attr-defined]
    finally:
        tidescope.stop()
    assert n == consumed == len(records) == want == 3 * (2 * 71 + 3)
    chunk = _speedups.frame_events_chunk(blob, n, wall_offset_ns=-5, **COUNTS)
    assert chunk == _tsformat.encode_events_chunk(records, wall_offset_ns=-5, **COUNTS)
    by_node = {r[8]: r[10] for r in records if r[9] == EventType.FUNCTION_ENTRY}
    assert by_node["enc:f0:again"][:2] == ("enc.m0", "f0")
    assert by_node["enc:f69:69:0"][:2] == ("enc.m0", "f69")
