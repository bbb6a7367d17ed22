"""The pytest plugin's entry point: ``pytest --tidescope[=DIR]`` records the test run.

pytest loads this module in every run of every project where tidescope is installed (the
``pytest11`` entry point ``tidescope``), so it holds only the options and imports nothing
of tidescope until asked: the recorder itself is :mod:`tidescope.pytest_plugin`, imported
when ``--tidescope`` is given or when the run is ``tidescope run -m pytest``. Off, the
plugin costs pytest one small module and four options; ``-p no:tidescope`` removes it.
"""

from __future__ import annotations

import sys

import pytest

DEFAULT_DIRECTORY = "tidescope-trace"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tidescope", "tidescope: record the test run")
    group.addoption(
        "--tidescope",
        nargs="?",
        const=DEFAULT_DIRECTORY,
        default=None,
        metavar="DIR",
        help=(
            "record the run: the project's modules, test modules and conftest files, "
            "every event tagged with its test's node id, into DIR "
            f"(default: {DEFAULT_DIRECTORY}); failing tests get their call chain in the "
            "report. Example: pytest --tidescope=traces"
        ),
    )
    group.addoption(
        "--tidescope-level",
        choices=("calls", "values", "lines"),
        default="calls",
        help="what to record with --tidescope: calls, values or lines (default: calls)",
    )
    group.addoption(
        "--tidescope-include",
        action="append",
        default=[],
        metavar="PATTERN",
        help=(
            "module pattern to record, repeatable (default: the modules under the current "
            "directory). Example: --tidescope-include 'mypkg.*'"
        ),
    )
    group.addoption(
        "--tidescope-exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="module pattern never to record, repeatable. Example: --tidescope-exclude 'tests.*'",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # first among the implementations: before any conftest file or test module is imported
    asked = getattr(early_config.known_args_namespace, "tidescope", None)
    if asked is None and "tidescope.runner" not in sys.modules:
        return
    from tidescope import pytest_plugin  # noqa: PLC0415 - only when recording

    pytest_plugin.activate(early_config, asked)
