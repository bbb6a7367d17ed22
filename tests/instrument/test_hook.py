"""The import hook: install/uninstall, selection, packages, tracebacks, cache, failing open."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.resources
import importlib.util
import inspect
import logging
import os
import runpy
import sys
import textwrap
import traceback
import types
import warnings
from pathlib import Path
from typing import Any

import pytest

import tidescope
from tidescope import EventType
from tidescope.instrument import (
    Installation,
    _cache,
    _hook,
    _nodes,
    _rewrite,
    install,
    instrument_main,
    node_table,
    stats,
    uninstall,
)

EXIT = EventType.FUNCTION_EXIT


def write(root: Path, relpath: str, source: str) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def entries(cap: Any) -> list[str]:
    return [
        f"{e.data['module']}.{e.data['function']}"
        for e in cap.events()
        if e.event_type == EventType.FUNCTION_ENTRY
    ]


CALC = """
def double(x):
    return 2 * x
"""


def test_install_rewrites_modules_of_the_program_on_import(project: Path, tmp_path: Path) -> None:
    write(project, "calc.py", CALC)
    before = stats()["modules_instrumented"]
    inst = install(cache_dir=tmp_path / "cache")
    assert inst.installed and sys.meta_path[0] is inst.finder
    import calc  # type: ignore[import-not-found]

    with tidescope.capture(buffer_size=1024) as cap:
        assert calc.double(4) == 8
    assert entries(cap) == ["calc.double"]
    assert stats()["modules_instrumented"] == before + 1
    assert calc.__tidescope_rt__.__name__ == "tidescope.instrument._rt"


def test_uninstall_stops_rewriting_later_imports(project: Path, tmp_path: Path) -> None:
    write(project, "calc.py", CALC)
    inst = install(cache_dir=tmp_path / "cache")
    assert uninstall() is True
    assert not inst.installed
    assert uninstall() is False
    import calc

    with tidescope.capture(buffer_size=1024) as cap:
        calc.double(1)
    assert entries(cap) == []


def test_installation_is_a_context_manager_and_a_new_install_replaces_the_old(
    project: Path, tmp_path: Path
) -> None:
    first = install(cache_dir=tmp_path / "cache")
    with install(cache_dir=tmp_path / "cache", level="lines") as second:
        assert not first.installed
        assert [f for f in sys.meta_path if isinstance(f, _hook._Finder)] == [second.finder]
    assert not second.installed


def test_install_rejects_an_unknown_level_and_bad_patterns(project: Path) -> None:
    with pytest.raises(ValueError, match="level"):
        install(level="all")
    with pytest.raises(TypeError, match="include"):
        install(include=[""])
    with pytest.raises(TypeError, match="exclude"):
        install(exclude=[3])  # type: ignore[list-item]


def test_default_selection_is_the_programs_own_files(project: Path, tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    inst = install(cache=False, main_path=scripts / "app.py")
    assert inst.selects_name("myapp.models")
    for name in ("json", "asyncio.tasks", "tidescope", "tidescope.instrument", "__main__"):
        assert not inst.selects_name(name), name
    assert inst.selects_file(str(project / "myapp" / "models.py"))
    assert inst.selects_file(str(scripts / "helpers.py"))
    assert not inst.selects_file(str(tmp_path / "elsewhere" / "mod.py"))
    venv_lib = project / ".venv" / "lib" / "python3.11" / "site-packages" / "dep.py"
    assert not inst.selects_file(str(venv_lib))
    assert not inst.selects_file(str(Path(tidescope.__file__).parent / "cli.py"))
    assert not inst.selects_file(str(Path(os.__file__)))


def test_site_packages_under_the_project_are_not_rewritten_by_default(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = project / "venv" / "lib" / "site-packages"
    write(site, "thirdparty.py", CALC)
    write(project, "mine.py", CALC)
    monkeypatch.syspath_prepend(str(site))
    install(cache_dir=tmp_path / "cache")
    import mine  # type: ignore[import-not-found]
    import thirdparty  # type: ignore[import-not-found]

    with tidescope.capture(buffer_size=1024) as cap:
        thirdparty.double(1)
        mine.double(1)
    assert entries(cap) == ["mine.double"]


def test_include_patterns_select_by_name_even_in_site_packages(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "lib" / "site-packages"
    write(site, "thirdparty.py", CALC)
    write(site, "shop/__init__.py", CALC)
    write(site, "shop/cart.py", CALC)
    write(project, "mine.py", CALC)
    monkeypatch.syspath_prepend(str(site))
    inst = install(include=["shop.*", "thirdparty"], cache_dir=tmp_path / "cache")
    assert inst.include == ("shop.*", "thirdparty")
    import mine
    import shop  # type: ignore[import-not-found]
    import shop.cart  # type: ignore[import-not-found]
    import thirdparty

    with tidescope.capture(buffer_size=1024) as cap:
        for mod in (mine, shop, shop.cart, thirdparty):
            mod.double(1)
    assert entries(cap) == ["shop.double", "shop.cart.double", "thirdparty.double"]


def test_exclude_patterns_win_over_the_default_selection(project: Path, tmp_path: Path) -> None:
    write(project, "app/__init__.py", "")
    write(project, "app/core.py", CALC)
    write(project, "app/vendored_lib.py", CALC)
    install(exclude="app.vendored*", cache_dir=tmp_path / "cache")
    import app.core  # type: ignore[import-not-found]
    import app.vendored_lib  # type: ignore[import-not-found]

    with tidescope.capture(buffer_size=1024) as cap:
        app.core.double(1)
        app.vendored_lib.double(1)
    assert entries(cap) == ["app.core.double"]


def test_packages_keep_their_spec_path_source_and_resources(project: Path, tmp_path: Path) -> None:
    write(project, "pkg/__init__.py", "from .sub import double\n")
    write(project, "pkg/sub.py", CALC)
    write(project, "pkg/data.txt", "payload")
    install(cache_dir=tmp_path / "cache")
    import pkg  # type: ignore[import-not-found]

    assert pkg.__file__ == str(project / "pkg" / "__init__.py")
    assert list(pkg.__path__) == [str(project / "pkg")]
    assert pkg.__spec__.origin == pkg.__file__
    assert pkg.__spec__.submodule_search_locations == [str(project / "pkg")]
    assert importlib.resources.files(pkg).joinpath("data.txt").read_text() == "payload"
    sub = sys.modules["pkg.sub"]
    assert sub.__loader__.get_source("pkg.sub") == textwrap.dedent(CALC)
    assert isinstance(sub.__loader__, importlib.machinery.SourceFileLoader)
    with tidescope.capture(buffer_size=1024) as cap:
        pkg.double(3)
    assert entries(cap) == ["pkg.sub.double"]


TRACEBACK_SAMPLE = """
import inspect

def gen(n):
    for i in range(n):
        yield 10 // (n - 1 - i)

def middle(n):
    return sum(gen(n))

def top(n):
    return (lambda: middle(n))()

class Shape:
    \"\"\"A shape.\"\"\"

    def area(self):
        return top(3)

def where():
    return inspect.currentframe().f_lineno
"""


def frames(exc: BaseException) -> list[tuple[str, int | None, str, str | None]]:
    return [
        (Path(f.filename).name, f.lineno, f.name, f.line)
        for f in traceback.extract_tb(exc.__traceback__)
        if "tidescope" not in f.filename and f.filename != __file__
    ]


def test_tracebacks_inspect_and_line_numbers_point_at_the_users_file(
    project: Path, tmp_path: Path
) -> None:
    write(project, "plainmod.py", TRACEBACK_SAMPLE)
    write(project, "tracedmod.py", TRACEBACK_SAMPLE)
    install(include=["tracedmod"], level="lines", cache_dir=tmp_path / "cache")
    import plainmod  # type: ignore[import-not-found]
    import tracedmod  # type: ignore[import-not-found]

    assert "__tidescope_rt__" not in vars(plainmod)
    assert "__tidescope_rt__" in vars(tracedmod)
    got = []
    for mod in (plainmod, tracedmod):
        with tidescope.capture(buffer_size=4096), pytest.raises(ZeroDivisionError) as info:
            mod.Shape().area()
        got.append(frames(info.value))
        assert mod.where() == 21
    plain_frames, traced_frames = got
    # an instrumented lambda runs its body in an inner lambda: one more frame, same line
    lam = next(i for i, f in enumerate(plain_frames) if f[2] == "<lambda>")
    expected = [f[1:] for f in plain_frames]
    expected.insert(lam + 1, expected[lam])
    assert [f[1:] for f in traced_frames] == expected
    assert traced_frames[-1] == ("tracedmod.py", 6, "gen", "yield 10 // (n - 1 - i)")
    for name in ("gen", "middle", "top", "Shape", "where"):
        assert inspect.getsource(getattr(tracedmod, name)) == inspect.getsource(
            getattr(plainmod, name)
        )
    assert tracedmod.Shape.area.__code__.co_firstlineno == 17
    assert inspect.getsourcelines(tracedmod.Shape.area)[1] == 17
    assert tracedmod.Shape.__doc__ == "A shape."


def test_a_module_run_by_runpy_under_the_hook_is_rewritten(project: Path, tmp_path: Path) -> None:
    write(project, "tool.py", CALC + "\nresult = double(21)\n")
    install(cache_dir=tmp_path / "cache")
    with tidescope.capture(buffer_size=1024) as cap:
        ns = runpy.run_module("tool", run_name="__main__")
    assert ns["result"] == 42
    assert entries(cap) == ["tool.double"]


def test_reload_rewrites_the_new_source(project: Path, tmp_path: Path) -> None:
    path = write(project, "calc.py", CALC)
    install(cache_dir=tmp_path / "cache")
    import calc

    path.write_text(CALC + "\ndef triple(x):\n    return 3 * x\n", encoding="utf-8")
    os.utime(path, (1, 1))  # a different mtime, whatever the clock's resolution
    importlib.reload(calc)
    with tidescope.capture(buffer_size=1024) as cap:
        assert calc.triple(2) == 6
    assert entries(cap) == ["calc.triple"]
    assert [r.id for r in node_table() if r.node_type == "FunctionDef"] == [
        "calc:double:2:0:FunctionDef",
        "calc:triple:5:0:FunctionDef",
    ]


def test_modules_another_finder_serves_are_left_to_it(project: Path, tmp_path: Path) -> None:
    class VirtualLoader(importlib.abc.Loader):
        def create_module(self, spec: Any) -> None:
            return None

        def exec_module(self, module: types.ModuleType) -> None:
            module.value = "virtual"

    class VirtualFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
            if fullname == "virtualmod":
                return importlib.util.spec_from_loader(fullname, VirtualLoader())
            return None

    sys.meta_path.append(VirtualFinder())
    install(cache_dir=tmp_path / "cache")
    import virtualmod  # type: ignore[import-not-found]

    assert virtualmod.value == "virtual"
    assert not isinstance(virtualmod.__loader__, _hook._Loader)


# ---------------------------------------------------------------------------------------
# node table


def test_node_table_holds_every_instrumented_module_once(project: Path, tmp_path: Path) -> None:
    write(project, "calc.py", CALC)
    write(project, "other.py", "class K:\n    x = 1\n")
    install(cache_dir=tmp_path / "cache")
    import calc
    import other  # type: ignore[import-not-found]

    importlib.reload(calc)
    rows = node_table()
    assert sorted((r.id, r.file) for r in rows) == [
        ("calc:double:2:0:FunctionDef", str(project / "calc.py")),
        ("calc:double:3:4:Return", str(project / "calc.py")),
        ("other:K:1:0:ClassDef", str(project / "other.py")),
        ("other:K:2:4:Assign", str(project / "other.py")),
    ]
    assert other.K.x == 1


# ---------------------------------------------------------------------------------------
# cache


def test_a_second_import_is_served_from_the_cache(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    write(project, "calc.py", CALC)
    install(cache_dir=cache)
    import calc  # noqa: F401

    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].endswith(".tsc")
    del sys.modules["calc"]
    _nodes.clear_node_table()
    hits = stats()["cache_hits"]
    import calc as again

    assert stats()["cache_hits"] == hits + 1
    with tidescope.capture(buffer_size=1024) as cap:
        again.double(1)
    assert entries(cap) == ["calc.double"]
    assert {r.id for r in node_table()} == {
        "calc:double:2:0:FunctionDef",
        "calc:double:3:4:Return",
    }


def test_cache_key_changes_with_source_level_module_and_file() -> None:
    base = _cache.entry_key("m", "m.py", b"x = 1\n", "calls")
    assert base == _cache.entry_key("m", "m.py", b"x = 1\n", "calls")
    others = {
        _cache.entry_key("m", "m.py", b"x = 2\n", "calls"),
        _cache.entry_key("m", "m.py", b"x = 1\n", "values"),
        _cache.entry_key("n", "m.py", b"x = 1\n", "calls"),
        _cache.entry_key("m", "n.py", b"x = 1\n", "calls"),
    }
    assert base not in others and len(others) == 4


def test_cache_key_includes_the_tidescope_version(monkeypatch: pytest.MonkeyPatch) -> None:
    base = _cache.entry_key("m", "m.py", b"x = 1\n", "calls")
    monkeypatch.setattr(tidescope, "__version__", "99.0")
    assert _cache.entry_key("m", "m.py", b"x = 1\n", "calls") != base


def test_a_corrupt_cache_entry_is_a_miss_and_is_replaced(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = write(project, "calc.py", CALC)
    key = _cache.entry_key("calc", str(path), path.read_bytes(), "calls")
    cache.mkdir()
    (cache / key).write_bytes(b"TSIC garbage")
    install(cache_dir=cache)
    import calc

    with tidescope.capture(buffer_size=1024) as cap:
        calc.double(1)
    assert entries(cap) == ["calc.double"]
    assert _cache.load(cache, key) is not None


def test_an_unwritable_cache_dir_is_skipped_and_counted(project: Path, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "cache-is-a-file"
    not_a_dir.write_text("")
    write(project, "calc.py", CALC)
    before = stats()["cache_write_errors"]
    install(cache_dir=not_a_dir / "sub")
    import calc

    assert stats()["cache_write_errors"] == before + 1
    with tidescope.capture(buffer_size=1024) as cap:
        calc.double(1)
    assert entries(cap) == ["calc.double"]


def test_cache_writes_leave_no_temporary_files(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for i in range(3):
        write(project, f"m{i}.py", CALC)
    install(cache_dir=cache)
    for i in range(3):
        importlib.import_module(f"m{i}")
    assert sorted(p.suffix for p in cache.iterdir()) == [".tsc"] * 3
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]


def test_no_cache_writes_nothing_and_reads_nothing(project: Path, tmp_path: Path) -> None:
    write(project, "a.py", CALC)
    cache = tmp_path / "cache"
    install(cache_dir=cache, cache=False)
    hits, misses = stats()["cache_hits"], stats()["cache_misses"]
    import a  # type: ignore[import-not-found]

    assert not cache.exists()
    assert (stats()["cache_hits"], stats()["cache_misses"]) == (hits, misses)
    with tidescope.capture(buffer_size=1024) as cap:
        a.double(1)
    assert entries(cap) == ["a.double"]


def test_default_cache_dir_follows_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _cache.default_cache_dir() == tmp_path / "tidescope"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _cache.default_cache_dir() == Path.home() / ".cache" / "tidescope"


# ---------------------------------------------------------------------------------------
# failing open


def test_a_rewrite_failure_imports_the_module_as_is_and_is_logged_once_per_module(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("rewriter bug")

    monkeypatch.setattr(_hook, "rewrite_module", broken)
    monkeypatch.setattr(_hook, "_logged_failures", set())
    write(project, "a.py", CALC)
    write(project, "b.py", CALC)
    before = stats()["rewrite_errors"]
    install(cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="tidescope.instrument"):
        import a
        import b

    assert a.double(2) == b.double(2) == 4
    assert stats()["rewrite_errors"] == before + 2
    assert stats()["last_error"] == "b: RuntimeError: rewriter bug"
    assert [r.message for r in caplog.records] == [
        f"tidescope could not instrument {m}: RuntimeError: rewriter bug; imported as is"
        for m in "ab"
    ]
    with tidescope.capture(buffer_size=1024) as cap:
        a.double(1)
    assert entries(cap) == []


def test_a_failing_finder_lets_the_import_proceed_uninstrumented(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, path: str) -> bool:
        raise OSError("cannot resolve")

    monkeypatch.setattr(Installation, "selects_file", broken)
    monkeypatch.setattr(_hook, "_logged_failures", set())
    write(project, "calc.py", CALC)
    before = stats()["rewrite_errors"]
    install(cache_dir=tmp_path / "cache")
    import calc

    assert calc.double(2) == 4
    assert not hasattr(calc, "__tidescope_rt__")
    assert stats()["rewrite_errors"] == before + 1
    assert stats()["last_error"] == "calc: OSError: cannot resolve"


def test_a_syntax_error_in_a_module_is_raised_as_plain_python_raises_it(
    project: Path, tmp_path: Path
) -> None:
    path = write(project, "broken.py", "def f(:\n    pass\n")
    with pytest.raises(SyntaxError) as plain:
        compile(path.read_bytes(), str(path), "exec")
    before = stats()["rewrite_errors"]
    install(cache_dir=tmp_path / "cache")
    with pytest.raises(SyntaxError) as info:
        import broken  # type: ignore[import-not-found]  # noqa: F401
    assert (info.value.msg, info.value.filename, info.value.lineno, info.value.offset) == (
        plain.value.msg, plain.value.filename, plain.value.lineno, plain.value.offset,
    )  # fmt: skip
    assert info.value.__context__ is None  # not chained to the rewrite's failure
    assert stats()["rewrite_errors"] == before


# ---------------------------------------------------------------------------------------
# what the rewriter leaves as written is reported; the compiler's warnings as Python shows them


TWO = """
def good(x):
    return x + 1

def bad(x):
    return x * 2
"""


def warned(run: Any) -> tuple[list[tuple[Any, ...]], Any]:
    """What ``run()`` warned (each warning as shown) and returned."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        out = run()
    return [(w.category, str(w.message), w.filename, w.lineno) for w in caught], out


def skipped_lines(caplog: Any) -> list[str]:
    return [r.message for r in caplog.records if "uninstrumented" in r.message]


def test_a_function_the_rewriter_fails_on_is_left_as_written_reported_and_its_module_instrumented(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    wrap = _rewrite._Rewriter._wrap

    def fails_on_bad(self: Any, node: Any, *args: Any) -> Any:
        if node.name == "bad":
            raise RuntimeError("rewriter bug")
        return wrap(self, node, *args)

    monkeypatch.setattr(_rewrite._Rewriter, "_wrap", fails_on_bad)
    path = write(project, "two.py", TWO)
    before = stats()
    install(cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="tidescope.instrument"):
        import two  # type: ignore[import-not-found]

    expected = [
        f"tidescope left two.bad uninstrumented ({path}, line 5): "
        "the rewrite failed: RuntimeError: rewriter bug"
    ]
    assert skipped_lines(caplog) == expected
    assert stats()["rewrite_errors"] == before["rewrite_errors"]
    assert stats()["functions_skipped"] == before["functions_skipped"] + 1
    with tidescope.capture(buffer_size=1024) as cap:
        assert (two.good(1), two.bad(2)) == (2, 4)
    assert entries(cap) == ["two.good"]
    # a later run, from the cache, says it again
    caplog.clear()
    del sys.modules["two"]
    with caplog.at_level(logging.WARNING, logger="tidescope.instrument"):
        import two
    assert skipped_lines(caplog) == expected
    assert stats()["cache_hits"] == before["cache_hits"] + 1


def nested_blocks(depth: int) -> str:
    lines = ["def deep(n):", "    total = 0"]
    for i in range(depth):
        lines.append("    " * (i + 1) + f"for i{i} in range(n):")
    lines.append("    " * (depth + 1) + "total += 1")
    lines.append("    return total")
    return "\n".join(lines) + "\n" + TWO + 'PATTERN = "\\d+"  # the parser warns of this\n'


def test_a_function_too_deeply_nested_to_wrap_is_left_as_written_and_reported(
    project: Path, tmp_path: Path, caplog: Any
) -> None:
    depth = 1  # the deepest nesting Python compiles: the wrapper's try passes CPython's limit
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compile(nested_blocks(depth + 1), "deep.py", "exec")
        except SyntaxError:
            break
        depth += 1
    assert depth > 10
    path = write(project, "deep.py", nested_blocks(depth))
    plain, _ = warned(lambda: compile(path.read_bytes(), str(path), "exec"))
    assert len(plain) == 1
    install(cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="tidescope.instrument"):
        shown, deep = warned(lambda: importlib.import_module("deep"))
    assert shown == plain  # once, though parsed again to leave deep() as written

    assert skipped_lines(caplog) == [
        f"tidescope left deep.deep uninstrumented ({path}, line 1): "
        "its rewritten code does not compile: too many statically nested blocks"
    ]
    with tidescope.capture(buffer_size=1024) as cap:
        assert (deep.deep(1), deep.good(1), deep.bad(1)) == (1, 2, 2)
    assert entries(cap) == ["deep.good", "deep.bad"]


def test_uninstrumentable_async_generators_and_lambdas_are_reported(
    project: Path, tmp_path: Path, caplog: Any
) -> None:
    path = write(
        project,
        "odd.py",
        """
        async def agen():
            print((yield 1))

        class C:
            m = lambda self: super()
        """,
    )
    install(cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="tidescope.instrument"):
        import odd  # type: ignore[import-not-found]  # noqa: F401
    assert skipped_lines(caplog) == [
        f"tidescope left odd.agen uninstrumented ({path}, line 2): "
        "an async generator whose yield is in an expression",
        f"tidescope left odd.C.<lambda> uninstrumented ({path}, line 6): a lambda using super()",
    ]


FINALLY = """
def overrides():
    try:
        return "try"
    finally:
        return "finally"

def literal(x):
    return x is 1
"""


def test_the_compilers_warnings_are_shown_as_python_shows_them_and_the_code_instrumented(
    project: Path, tmp_path: Path
) -> None:
    # 'is' with a literal warns on every version, 'return' in 'finally' from 3.14 (PEP 765)
    path = write(project, "fin.py", FINALLY)
    plain, _ = warned(lambda: compile(path.read_bytes(), str(path), "exec"))
    lines = [6, 9] if sys.version_info >= (3, 14) else [9]
    assert [(c, f, line) for c, _, f, line in plain] == [
        (SyntaxWarning, str(path), line) for line in lines
    ]
    install(cache_dir=tmp_path / "cache")
    shown, fin = warned(lambda: importlib.import_module("fin"))
    assert shown == plain  # once each, the user's file and line
    with tidescope.capture(buffer_size=1024) as cap:
        assert (fin.overrides(), fin.literal(2)) == ("finally", False)
    assert entries(cap) == ["fin.overrides", "fin.literal"]
    returned = [e.data["return_value"] for e in cap.events() if e.event_type == EXIT]
    assert returned == ["finally", False]


def test_a_warning_filtered_as_an_error_raises_the_syntax_error_python_raises(
    project: Path, tmp_path: Path
) -> None:
    path = write(project, "fin.py", FINALLY)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SyntaxWarning)
        with pytest.raises(SyntaxError) as plain:
            compile(path.read_bytes(), str(path), "exec")
        before = stats()["rewrite_errors"]
        install(cache_dir=tmp_path / "cache")
        with pytest.raises(SyntaxError) as info:
            import fin  # type: ignore[import-not-found]  # noqa: F401
    assert (info.value.msg, info.value.filename, info.value.lineno) == (
        plain.value.msg, plain.value.filename, plain.value.lineno,
    )  # fmt: skip
    assert info.value.__context__ is None
    assert stats()["rewrite_errors"] == before


# ---------------------------------------------------------------------------------------
# the main script


MAIN = """
import sys

def greet(name):
    return "hello " + name

if __name__ == "__main__":
    print(greet(sys.argv[-1]))
"""


def test_instrument_main_compiles_the_script_to_run_as_main(
    project: Path, tmp_path: Path, capsys: Any
) -> None:
    path = write(project, "app.py", MAIN)
    code, records = instrument_main(path, "values", cache_dir=tmp_path / "cache")
    assert code.co_filename == str(path)
    assert [r.id for r in records][:2] == [
        "__main__:<module>:2:0:Import",
        "__main__:greet:4:0:FunctionDef",
    ]
    assert all(r.file == str(path) for r in records)
    with tidescope.capture(buffer_size=1024) as cap:
        exec(code, {"__name__": "__main__", "__file__": str(path)})
    assert capsys.readouterr().out.endswith("hello " + sys.argv[-1] + "\n")
    assert entries(cap) == ["__main__.greet"]
    assert {r.id for r in node_table()} == {r.id for r in records}


def test_instrument_main_raises_the_scripts_own_syntax_error(project: Path) -> None:
    path = write(project, "bad.py", "x = (1,\n")
    with pytest.raises(SyntaxError) as plain:
        compile(path.read_bytes(), str(path), "exec")
    with pytest.raises(SyntaxError) as info:
        instrument_main(path, cache=False)
    assert (info.value.msg, info.value.lineno, info.value.text) == (
        plain.value.msg, plain.value.lineno, plain.value.text,
    )  # fmt: skip
    assert info.value.__context__ is None


def test_instrument_main_fails_open_to_the_plain_script(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("rewriter bug")

    monkeypatch.setattr(_hook, "rewrite_module", broken)
    monkeypatch.setattr(_hook, "_logged_failures", set())
    path = write(project, "app.py", MAIN)
    code, records = instrument_main(path, cache=False)
    assert records == []
    ns: dict[str, Any] = {"__name__": "not_main"}
    exec(code, ns)
    assert ns["greet"]("x") == "hello x"


def test_installation_repr_says_what_it_selects(project: Path) -> None:
    inst: Installation = install(include="a.*", cache=False)
    assert "include=('a.*',)" in repr(inst) and "installed=True" in repr(inst)
