"""Shared test guards: every test starts and ends with no capture session and a clean context."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import tidescope
from tidescope.capture import _core


@pytest.fixture(autouse=True)
def _isolated_capture_state() -> Iterator[None]:
    tidescope.stop()
    _core.initialize_context()
    yield
    tidescope.stop()
    _core.register_buffer(None)
    _core.set_enabled(False)
    _core.initialize_context()
