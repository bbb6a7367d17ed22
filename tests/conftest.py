"""Shared test guards: every test starts and ends with no capture session and a clean context."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import tidescope
from tidescope.capture import _core, _redact


def _reset() -> None:
    while tidescope.active_session() is not None:
        tidescope.stop()
    _core.register_buffer(None)
    _core.set_enabled(False)
    _core.initialize_context()
    _core.set_value_policy()
    _core.set_level(None)
    _redact.configure(True)


@pytest.fixture(autouse=True)
def _isolated_capture_state() -> Iterator[None]:
    _reset()
    yield
    _reset()
