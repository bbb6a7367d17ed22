"""The C core's layout: every C file is built and shipped, and the stub names the module."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CAPTURE = ROOT / "src" / "tidescope" / "capture"


def test_setup_builds_every_c_file_and_depends_on_every_header() -> None:
    text = (ROOT / "setup.py").read_text(encoding="utf-8")
    for c in sorted(CAPTURE.glob("*.c")):
        assert f'"src/tidescope/capture/{c.name}"' in text, c.name
    for h in sorted(CAPTURE.glob("*.h")):
        assert f'"{h.stem}"' in text, h.name


def test_the_stub_names_exactly_what_the_extension_defines() -> None:
    try:
        ext = importlib.import_module("tidescope.capture._speedups")
    except ImportError:
        pytest.skip("the C extension is not built")
    tree = ast.parse((CAPTURE / "_speedups.pyi").read_text(encoding="utf-8"))
    stub = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            stub.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            stub.add(node.target.id)
    assert stub == {n for n in vars(ext) if not n.startswith("__")}
