"""A real package's own test suite, run under ``tidescope run -m pytest`` at ``values`` level.

more-itertools (pure Python, its tests ship in the sdist) is fetched from PyPI once per
session. Under tidescope the suite must give the same passes, skips and failures as under
plain pytest, and the trace must hold the package's calls with entries, exits and parents
that join up.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tidescope.export.reader import read_trace, trace_files

PACKAGE = "more-itertools==10.5.0"
# a broad slice of the suite that runs in seconds even with every value recorded
SELECTION = (
    "Chunked or Windowed or Peekable or Spy or Collapse or Split or Bucket or Interleave"
    " or Consecutive or Partition or Unique or Locate or Rlocate or Replace or Difference"
    " or Zip"
)


@pytest.fixture(scope="session")
def source_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("third_party")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         "--dest", str(root), PACKAGE],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    archives = list(root.glob("more*itertools-*.tar.gz"))
    if proc.returncode != 0 or not archives:
        pytest.skip(f"cannot download the {PACKAGE} sdist from PyPI: {proc.stderr.strip()[-300:]}")
    with tarfile.open(archives[0]) as tar:
        tar.extractall(root, filter="data")
    (tree,) = [p for p in root.iterdir() if p.is_dir() and (p / "tests").is_dir()]
    return tree


def outcome(stdout: str) -> dict[str, int]:
    """The counts of pytest's closing line: passed, failed, skipped, errors, subtests..."""
    line = stdout.strip().splitlines()[-1]
    return {kind: int(n) for n, kind in re.findall(r"(\d+) (\w+(?: \w+)?)", line)}


def test_package_suite_gives_the_same_results_and_a_joined_trace(
    source_tree: Path, tmp_path: Path
) -> None:
    pytest_args = [
        "-m", "pytest", "tests/test_more.py", "tests/test_recipes.py", "-q",
        "-p", "no:cacheprovider", "-k", SELECTION,
    ]  # fmt: skip
    plain = subprocess.run(
        [sys.executable, *pytest_args],
        cwd=source_tree, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    trace_dir = tmp_path / "trace"
    ours = subprocess.run(
        [sys.executable, "-m", "tidescope", "run", "--include", "more_itertools*",
         "--level", "values", "--output", str(trace_dir), *pytest_args],
        cwd=source_tree, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert ours.returncode == plain.returncode, ours.stderr[-2000:]
    assert outcome(ours.stdout).get("passed", 0) > 100
    without_time = {k: v for k, v in outcome(ours.stdout).items() if k != "in"}
    assert without_time == {k: v for k, v in outcome(plain.stdout).items() if k != "in"}

    entries: dict[object, dict[str, object]] = {}
    exits: dict[object, dict[str, object]] = {}
    kinds: set[object] = set()
    for path in trace_files(trace_dir):
        for rec in read_trace(path):
            if "event_type" not in rec:  # $header, $counts, $stats
                continue
            kinds.add(rec["event_type"])
            if rec["event_type"] == "function_entry":
                entries[rec["call_id"]] = rec
            elif rec["event_type"] == "function_exit":
                exits[rec["call_id"]] = rec
    assert len(entries) > 1000
    modules = {e["data"]["module"] for e in entries.values()}  # type: ignore[index]
    assert {"more_itertools.more", "more_itertools.recipes"} <= modules
    assert set(exits) <= set(entries)  # every exit joins its entry
    assert len(exits) >= 0.99 * len(entries)  # generators left unexhausted never exit
    parents = {e["parent_id"] for e in entries.values()} - {None}
    assert parents <= set(entries)  # every parent is a recorded call
    assert {"local_variable_snapshot", "branch_execution", "loop_iteration"} <= kinds
