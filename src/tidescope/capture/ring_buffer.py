"""The bounded event ring: ``RingBuffer`` of the chosen core (C when built, else pure Python)."""

from __future__ import annotations

from tidescope.capture._core import OVERFLOW_STRATEGIES, RingBuffer, RingBufferError

__all__ = ["OVERFLOW_STRATEGIES", "RingBuffer", "RingBufferError"]
