"""One way to check that repeating some work keeps nothing: references and memory."""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any


def assert_keeps_nothing(
    burst: Callable[[int], Any], n: int, watched: list[Any], after: Callable[[], Any] = list
) -> None:
    """Run ``burst(n)`` (already warmed up) and ``after()``: the references to ``watched``
    are what they were, and traced memory and allocated blocks grew by almost nothing."""
    gc.collect()
    refs = [sys.getrefcount(o) for o in watched]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        blocks = sys.getallocatedblocks()
        burst(n)
        after()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        grown_blocks = sys.getallocatedblocks() - blocks
    finally:
        tracemalloc.stop()
    assert [sys.getrefcount(o) for o in watched] == refs
    assert grown < 256 * 1024, grown
    assert grown_blocks < 2000, grown_blocks
