"""Shared test guards: every test starts and ends with no capture session and a clean context."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project directory, current and first on sys.path; imports and hooks undone after."""
    from tidescope.instrument import _nodes, uninstall

    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    modules = set(sys.modules)
    meta_path = list(sys.meta_path)
    _nodes.clear_node_table()
    yield root
    uninstall()
    sys.meta_path[:] = meta_path
    for name in set(sys.modules) - modules:
        del sys.modules[name]
    _nodes.clear_node_table()


@pytest.fixture
def otlp_receiver() -> Iterator[object]:
    """A real OTLP/HTTP endpoint on 127.0.0.1 (``tests/otlp_receiver.py``)."""
    import otlp_receiver  # tests/ is on sys.path: the directory of this conftest

    yield from otlp_receiver.receiver()
