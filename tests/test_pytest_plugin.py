"""The pytest plugin (``pytest --tidescope``) and ``tidescope run -m pytest``, run for real:
pytest in a subprocess on a small project, loading the plugin from the installed
package's entry point."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tidescope.export.reader import read_trace, trace_files

pytest_plugins = ["pytester"]

SHOP = """
def price(item):
    if item < 0:
        raise ValueError(f"bad price {item}")
    return item * 2


def total(cart, rate):
    s = 0
    for i in cart:
        s += price(i)
    return s * rate


def label(name):
    return name.upper()
"""

CONFTEST = """
import pytest


@pytest.fixture
def rate():
    return 0.5
"""

TESTS = """
import shop


def test_total(rate):
    shop.label("cart")
    assert shop.total([1, -2], rate) == 1


def test_dicts():
    a = {"x": 1, "y": [1, 2, 3]}
    b = {"x": 1, "y": [1, 2, 4]}
    assert a == b


def test_passes():
    assert shop.price(2) == 4
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(shop=SHOP, conftest=CONFTEST, test_shop=TESTS)
    return pytester


def _events(directory: Path) -> list[dict[str, Any]]:
    files = trace_files(directory)
    assert files, f"no trace in {directory}"
    return [r for f in files for r in read_trace(f) if "event_type" in r]


def _calls(events: list[dict[str, Any]]) -> set[tuple[Any, Any, Any]]:
    """(node id, module, function) of every recorded call."""
    return {
        (e["correlation_id"], e["data"]["module"], e["data"]["function"])
        for e in events
        if e["event_type"] == "function_entry"
    }


def _section(output: str, title: str = "tidescope call") -> list[str]:
    """The lines of each report section named ``title``, concatenated."""
    lines = output.splitlines()
    out: list[str] = []
    inside = False
    for line in lines:
        if line.startswith("---") or line.startswith("___") or line.startswith("==="):
            inside = f" {title} " in line
            continue
        if inside:
            out.append(line)
    return out


def test_records_project_tests_and_conftest_tagged_by_node_id(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--tidescope=traces")
    result.assert_outcomes(failed=2, passed=1)
    events = _events(project.path / "traces")
    calls = _calls(events)
    total = "test_shop.py::test_total"
    assert (total, "conftest", "rate") in calls  # a fixture: setup, tagged with its test
    assert (total, "test_shop", "test_total") in calls  # the test module itself
    assert (total, "shop", "total") in calls and (total, "shop", "price") in calls
    assert ("test_shop.py::test_passes", "shop", "price") in calls
    markers = [
        (e["correlation_id"], e["data"]["pytest"], e["data"].get("outcome"))
        for e in events
        if e["event_type"] == "trace_control"
    ]
    assert (total, "start", None) in markers
    assert (total, "end", "failed") in markers
    assert ("test_shop.py::test_passes", "end", "passed") in markers
    untagged = [e for e in events if e["correlation_id"] is None]
    assert not untagged
    assert (project.path / "traces").glob("nodes-*.jsonl")


def test_failing_tests_report_their_call_chain_and_keep_pytests_assertion_messages(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_setup="""
        import pytest
        import shop


        @pytest.fixture
        def broken():
            return shop.price(-5)


        def test_uses_broken(broken):
            pass
        """
    )
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "--tidescope=traces", "test_shop.py", "test_setup.py"
    )
    result.assert_outcomes(failed=2, passed=1, errors=1)
    trace = trace_files(project.path / "traces")[0]
    assert _section(result.stdout.str(), "tidescope setup") == [
        f"trace: {trace}",
        "test_setup.broken() raised ValueError: bad price -5  [line 6]",
        "  shop.price(item=-5) raised ValueError: bad price -5  [line 1]",
    ]
    section = _section(result.stdout.str())
    assert f"trace: {trace}" in section
    chain = section[section.index(f"trace: {trace}") + 1 :]
    assert chain[:5] == [
        "test_shop.test_total(rate=0.5) raised ValueError: bad price -2  [line 4]",
        "  shop.label(name='cart') -> 'CART'",
        "  shop.total(cart=<list len=2>, rate=0.5) raised ValueError: bad price -2  [line 7]",
        "    shop.price(item=1) -> 2",
        "    shop.price(item=-2) raised ValueError: bad price -2  [line 1]",
    ]
    assert chain[5:7] == [
        f"trace: {trace}",
        "test_shop.test_dicts() raised AssertionError: "
        "assert {'x': 1, 'y': [1, 2, 3]} == {'x': 1, 'y': [1, 2, 4]}  [line 9]",
    ]
    assert "test_passes" not in "\n".join(section)
    # pytest's own explanation of the failed assert, as without tidescope
    result.stdout.fnmatch_lines(
        [
            "E       AssertionError: assert {'x': 1, 'y': [1, 2, 3]} == {'x': 1, 'y': [1, 2, 4]}",
            "E         Differing items:",
            "E         {'y': [1, 2, 3]} != {'y': [1, 2, 4]}",
        ]
    )


def test_off_by_default(project: pytest.Pytester) -> None:
    project.makeconftest(
        CONFTEST
        + """
import sys


def pytest_sessionfinish(session):
    loaded = sorted(m for m in sys.modules if m == "tidescope" or m.startswith("tidescope."))
    print("TIDESCOPE MODULES", loaded)
"""
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(failed=2, passed=1)
    assert "TIDESCOPE MODULES []" in result.stdout.str()
    assert "tidescope call" not in result.stdout.str()
    assert not (project.path / "tidescope-trace").exists()


def test_default_directory_and_summary_line(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--tidescope")
    result.assert_outcomes(failed=2, passed=1)
    directory = project.path / "tidescope-trace"
    assert trace_files(directory)
    (run,) = [p for p in directory.iterdir() if p.is_dir()]  # a run directory of its own
    assert (directory / "LATEST").read_text().strip() == run.name
    result.stdout.fnmatch_lines(
        [
            f"tidescope: recording to {run}{os.sep}events-*.tstrace",
            "tidescope: * events recorded, 0 dropped, 0 internal errors -> *",
        ]
    )


def test_a_test_file_as_directory_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("--tidescope", "test_shop.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tidescope takes a directory, not 'test_shop.py'*"])
    assert not (project.path / "test_shop.py").is_dir()


def _fake_plugin_distribution(root: Path) -> Path:
    """A distribution in a site-packages directory that registers a pytest plugin, as
    anyio does: pytest marks its whole package for assertion rewriting."""
    site = root / "lib" / "site-packages"
    pkg = site / "fakeplug"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("def helper(x):\n    return x + 1\n")
    (pkg / "plugin.py").write_text(
        "import pytest\nfrom fakeplug import helper\n\n\n"
        "@pytest.fixture\ndef plugged():\n    return helper(41)\n"
    )
    info = site / "fakeplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pytest11]\nfakeplug = fakeplug.plugin\n")
    (info / "RECORD").write_text(
        "fakeplug/__init__.py,,\nfakeplug/plugin.py,,\nfakeplug-1.0.dist-info/METADATA,,\n"
        "fakeplug-1.0.dist-info/entry_points.txt,,\nfakeplug-1.0.dist-info/RECORD,,\n"
    )
    return site


def test_tidescope_run_m_pytest_records_tests_and_plugin_packages(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _fake_plugin_distribution(project.path)
    project.makepyfile(test_plug="def test_plugged(plugged):\n    assert plugged == 41\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:cacheprovider -W error")
    common = [sys.executable, "-m", "tidescope", "run"]
    result = project.run(
        *common, "-o", "traces", "--include", "fakeplug*", "--include", "test_*",
        "--include", "shop", "-m", "pytest", "test_plug.py", "test_shop.py",
    )  # fmt: skip
    result.assert_outcomes(failed=3, passed=1)  # test_plugged's assert: 42 != 41
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["E       assert 42 == 41"])  # pytest's message, intact
    assert "PytestAssertRewriteWarning" not in out
    calls = _calls(_events(project.path / "traces"))
    plugged = "test_plug.py::test_plugged"
    assert (plugged, "fakeplug.plugin", "plugged") in calls
    assert (plugged, "fakeplug", "helper") in calls
    assert (plugged, "test_plug", "test_plugged") in calls
    assert ("test_shop.py::test_total", "shop", "price") in calls
    section = "\n".join(_section(out))
    assert "shop.price(item=-2) raised ValueError: bad price -2" in section


def test_plugin_names_included_modules_imported_before_it_started(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _fake_plugin_distribution(project.path)
    monkeypatch.setenv("PYTHONPATH", str(site))
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "--tidescope=traces", "--tidescope-include=fakeplug*"
    )
    result.stdout.fnmatch_lines(
        [
            "tidescope: imported before recording started, not instrumented: "
            "fakeplug, fakeplug.plugin (tidescope run -m pytest records them)"
        ]
    )


def test_rewrites_cached_outside_pytest_are_not_reused_under_it(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(project.path / "cache"))
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:cacheprovider")
    project.makepyfile(importer="import test_shop\n")
    tidescope_run = [sys.executable, "-m", "tidescope", "run", "-o"]
    # test_shop imported by a plain program: cached with its asserts as written
    assert project.run(*tidescope_run, "plain", "importer.py").ret == 0
    for directory in ("first", "again"):  # the second run reads pytest's variant from the cache
        result = project.run(*tidescope_run, directory, "-m", "pytest", "test_shop.py")
        result.assert_outcomes(failed=2, passed=1)
        result.stdout.fnmatch_lines(["E         {'y': [1, 2, 3]} != {'y': [1, 2, 4]}"])
        calls = _calls(_events(project.path / directory))
        assert ("test_shop.py::test_dicts", "test_shop", "test_dicts") in calls


def test_a_long_message_cut_by_the_snapshot_limits_is_shown_by_its_first_line(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under CI pytest leaves assertion explanations whole: longer than ``max_string``,
    the recorded message is a cut string whose kept text is shown, not its marker."""
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("TIDESCOPE_MAX_STRING", "40")
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--tidescope=traces")
    out = result.stdout.str()
    assert "$truncated" not in out
    assert "test_shop.test_dicts() raised AssertionError: assert {'x': 1, 'y': [1, 2, 3]} ==" in out
