"""The import hook: a finder on ``sys.meta_path`` that hands selected modules to a rewriting
loader, the selection rules, compilation through the cache, and the hook's counters.

The finder asks the finders behind it for the module's spec (as the import system would)
and takes over only a plain source file (``SourceFileLoader``) that the selection picks; a
module some other hook handles (zip imports, extension modules, namespace packages) is
never touched. The one exception is pytest's assertion rewriting: a selected module that
pytest would rewrite gets both rewrites, and the finder stays in front of pytest's hook
(``_pytest_rewrite`` says how and why). The loader is a ``SourceFileLoader`` whose
``get_code`` returns the rewritten code, so ``get_source``, ``inspect``, resources and
``runpy`` keep working. If rewriting fails for any reason but the user's own syntax, the
module is imported as is (fail open), and the failure is counted and logged, once per
module. A function the rewriter leaves as written (see ``_rewrite``) is logged too, naming
module, function and reason, each time its module is compiled or loaded from the cache.

The compiler's warnings about the user's code (``return`` in ``finally`` on 3.14, ``is``
with a literal, ...) are shown as compiling the source shows them: once each, with the
user's file and line, and under ``-W error`` as the ``SyntaxError`` Python raises.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.machinery
import importlib.util
import logging
import os
import sys
import sysconfig
import threading
import types
import warnings
from collections.abc import Callable, Iterable, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import TracebackType
from typing import Any

from tidescope.capture import _core
from tidescope.instrument import _cache, _nodes, _pytest_rewrite
from tidescope.instrument._nodes import NodeRecord
from tidescope.instrument._rewrite import FunctionAt, Skipped, check_level, rewrite_module

__all__ = ["Installation", "install", "instrument_main", "stats", "uninstall"]

log = logging.getLogger("tidescope.instrument")

_COUNTERS = (
    "modules_instrumented",
    "rewrite_errors",
    "functions_skipped",
    "cache_hits",
    "cache_misses",
    "cache_write_errors",
)
_stats: dict[str, Any] = dict.fromkeys(_COUNTERS, 0)
_stats["last_error"] = None
_stats_lock = threading.Lock()
_logged_failures: set[str] = set()


def stats() -> dict[str, Any]:
    """The hook's counters in this process: modules instrumented, rewrites that failed open
    (``last_error`` says the latest), functions left as written, cache hits, misses and
    unwritable cache entries."""
    with _stats_lock:
        return dict(_stats)


def _count(name: str) -> None:
    with _stats_lock:
        _stats[name] += 1


def _failed_open(module: str, exc: BaseException) -> None:
    text = f"{module}: {type(exc).__name__}: {exc}"[:500]
    with _stats_lock:
        _stats["rewrite_errors"] += 1
        _stats["last_error"] = text
        first = module not in _logged_failures
        _logged_failures.add(module)
    if first:
        log.warning("tidescope could not instrument %s; imported as is", text)


def _report_skipped(module: str, filename: str, skipped: list[Skipped]) -> None:
    for s in skipped:
        _count("functions_skipped")
        log.warning(
            "tidescope left %s.%s uninstrumented (%s, line %d): %s",
            module, s.qualname, filename, s.lineno, s.reason,
        )  # fmt: skip


def _compile_rewritten(
    text: str,
    filename: str,
    module: str,
    level: str,
    transform: Callable[[ast.Module], None] | None = None,
) -> tuple[types.CodeType, list[NodeRecord], list[Skipped]]:
    """Rewrite (then ``transform`` the tree, if given) and compile, leaving as written each
    function whose rewritten code does not compile; then show the compiler's warnings as
    compiling the source would."""
    skip: dict[FunctionAt, str] = {}
    while True:
        done = rewrite_module(text, filename, module, level, skip)
        if transform is not None:
            transform(done.tree)
        try:
            # Recorded, then shown once each: the rewritten code holds some of the user's
            # statements twice (the capture-off copy), and a warning turned into an error
            # here would fail the rewrite instead of raising the user's SyntaxError. (The
            # filters are process-wide before 3.14's context-aware warnings: another
            # thread's warning in this window is recorded here and shown below, too.)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                code = compile(done.tree, filename, "exec", dont_inherit=True)
        except SyntaxError as exc:
            at = done.function_at(exc.lineno or 0, skip)
            if at is None:
                raise  # the user's own (``nonlocal`` of nothing, ...): the loader raises it
            skip[at] = f"its rewritten code does not compile: {exc.msg}"
            continue
        break
    seen = set()
    for w in caught:
        key = (w.category, str(w.message), w.filename, w.lineno)
        if key not in seen:
            seen.add(key)
            # as the compiler warns: under -W error this raises, the rewrite fails, and the
            # loader's plain compile raises the SyntaxError Python raises
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return code, done.records, done.skipped


def compile_module(
    source: bytes,
    filename: str,
    module: str,
    level: str,
    cache_dir: Path | None,
    transform: Callable[[ast.Module], None] | None = None,
    variant: str = "",
) -> tuple[types.CodeType, list[NodeRecord]]:
    """The rewritten code and node records of one module, through the cache if given.

    ``transform`` changes the rewritten tree before it compiles (pytest's assert rewrite);
    ``variant`` names it in the cache key.

    Raises:
        SyntaxError: the source does not parse; anything else the rewrite raised.
    """
    key = None
    if cache_dir is not None:
        tag = f"{level}+{variant}" if variant else level
        key = _cache.entry_key(module, filename, source, tag)
        hit = _cache.load(cache_dir, key)
        if hit is not None:
            _count("cache_hits")
            code, records, skipped = hit
            _report_skipped(module, filename, skipped)
            return code, records
        _count("cache_misses")
    text = importlib.util.decode_source(source)
    code, records, skipped = _compile_rewritten(text, filename, module, level, transform)
    _report_skipped(module, filename, skipped)
    # written even under PYTHONDONTWRITEBYTECODE: that keeps .pyc files out of source
    # trees, and this cache lives in the user's cache directory (``cache=False`` turns it off)
    if (
        key is not None
        and cache_dir is not None
        and not _cache.store(cache_dir, key, code, records, skipped)
    ):
        _count("cache_write_errors")
    return code, records


def _registered(module: str, records: list[NodeRecord]) -> None:
    _nodes.register(_nodes.safe_module_name(module), records)
    _count("modules_instrumented")


# ---------------------------------------------------------------------------------------
# selection


def _matches(name: str, pattern: str) -> bool:
    # 'pkg.*' also selects the package 'pkg' itself
    return fnmatch.fnmatchcase(name, pattern) or (pattern.endswith(".*") and name == pattern[:-2])


def _under(path: str, dirs: Iterable[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip(os.sep) + os.sep) for d in dirs)


def _is_site_packages(path: str) -> bool:
    parts = Path(path).parts
    return "site-packages" in parts or "dist-packages" in parts


_never: tuple[str, ...] | None = None
_OWN = frozenset({"tidescope", "tidescope_pytest"})  # tidescope and its pytest entry point


def _never_dirs() -> tuple[str, ...]:
    """The standard library's directories and tidescope's own."""
    global _never
    if _never is None:
        dirs = {os.path.dirname(os.__file__), str(Path(__file__).resolve().parent.parent)}
        for key in ("stdlib", "platstdlib"):
            try:  # sysconfig can fail inside some virtual environments (3.13.0: 'abi_thread')
                dirs.add(sysconfig.get_path(key))
            except Exception:
                pass
        _never = tuple(sorted(os.path.realpath(d) for d in dirs))
    return _never


def _patterns(value: str | Iterable[str] | None, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else tuple(value)
    for p in items:
        if not isinstance(p, str) or not p:
            raise TypeError(f"{what} patterns must be non-empty strings; got {p!r}")
    return items


class Installation:
    """An installed hook and what it selects; ``uninstall()`` (or leaving a ``with``) removes it.

    A module is rewritten when its name matches no ``exclude`` pattern, it is not the
    standard library nor tidescope, and either it matches an ``include`` pattern (site
    packages allowed), or, with no include patterns, its file lies under one of ``roots``
    (the current directory and the main script's directory) outside any site-packages.
    """

    def __init__(
        self,
        include: tuple[str, ...],
        exclude: tuple[str, ...],
        level: str,
        cache_dir: Path | None,
        main_path: str | os.PathLike[str] | None,
    ) -> None:
        self.include = include
        self.exclude = exclude
        self.level = level
        self.cache_dir = cache_dir
        roots = [os.path.realpath(os.getcwd())]
        if main_path is not None:
            roots.append(os.path.dirname(os.path.realpath(os.fspath(main_path))))
        self.roots = tuple(dict.fromkeys(roots))
        self.finder = _Finder(self)

    def selects_name(self, name: str) -> bool:
        """True if a module of this name may be rewritten (its file decides the rest)."""
        top = name.partition(".")[0]
        if top in _OWN or top in sys.stdlib_module_names or name == "__main__":
            return False
        if any(_matches(name, p) for p in self.exclude):
            return False
        return not self.include or any(_matches(name, p) for p in self.include)

    def selects_file(self, path: str) -> bool:
        """True if a selected module at ``path`` is rewritten."""
        real = os.path.realpath(path)
        site = _is_site_packages(real)
        if not site and _under(real, _never_dirs()):
            return False
        if self.include:
            return True
        return not site and _under(real, self.roots)

    @property
    def installed(self) -> bool:
        """True while the finder is on ``sys.meta_path``."""
        return any(f is self.finder for f in sys.meta_path)

    def uninstall(self) -> None:
        """Take the finder off ``sys.meta_path`` (modules already imported stay rewritten)."""
        global _current
        sys.meta_path[:] = [f for f in sys.meta_path if f is not self.finder]
        if _current is self:
            _current = None
            _core.set_level(None)

    def __enter__(self) -> Installation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()

    def __repr__(self) -> str:
        return (
            f"Installation(level={self.level!r}, include={self.include!r}, "
            f"exclude={self.exclude!r}, roots={self.roots!r}, installed={self.installed})"
        )


_busy = threading.local()


class _Finder:
    """The meta path finder: asks the finders behind it, takes over selected source files."""

    def __init__(self, installation: Installation) -> None:
        self.installation = installation

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: types.ModuleType | None = None,
    ) -> ModuleSpec | None:
        if getattr(_busy, "on", False):
            return None
        _busy.on = True
        try:
            _pytest_rewrite.keep_ahead(_move_first)
            return self._find(fullname, path, target)
        except Exception as exc:  # never break an import: the finders behind us take it
            _failed_open(fullname, exc)
            return None
        finally:
            _busy.on = False

    def _find(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None
    ) -> ModuleSpec | None:
        inst = self.installation
        if not inst.selects_name(fullname):
            return None
        spec = self._spec_behind(fullname, path, target)
        if spec is None:
            return None
        origin = spec.origin
        loader: _Loader
        if type(spec.loader) is importlib.machinery.SourceFileLoader:
            if not origin or not inst.selects_file(origin):
                return None
            loader = _Loader(fullname, origin, inst)
        elif _pytest_rewrite.is_rewriting_hook(spec.loader):
            # a test module, a conftest, a module of a distribution with a pytest plugin
            if not origin or not inst.selects_file(origin):
                return None
            loader = _AssertRewritingLoader(fullname, origin, inst, spec.loader)
        else:
            return None
        return importlib.util.spec_from_file_location(
            fullname, origin, loader=loader,
            submodule_search_locations=spec.submodule_search_locations,
        )  # fmt: skip

    def _spec_behind(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None
    ) -> ModuleSpec | None:
        for finder in list(sys.meta_path):
            if isinstance(finder, _Finder):
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            try:
                spec: ModuleSpec | None = find(fullname, path, target)
            except Exception:
                return None  # the import system will meet the same error without us
            if spec is not None:
                return spec
        return None

    def invalidate_caches(self) -> None:
        """Nothing to invalidate: the cache is keyed by the source itself."""


class _Loader(importlib.machinery.SourceFileLoader):
    """A source file loader whose code is the rewritten module."""

    def __init__(self, fullname: str, path: str, installation: Installation) -> None:
        super().__init__(fullname, path)
        self.installation = installation

    def get_code(self, fullname: str) -> types.CodeType:
        inst = self.installation
        try:
            source = self.get_data(self.path)
            code, records = compile_module(source, self.path, fullname, inst.level, inst.cache_dir)
        except Exception as exc:
            failure = exc
        else:
            _registered(fullname, records)
            return code
        # the plain loader raises the user's own SyntaxError exactly as Python does (outside
        # the handler: not chained to ours); if it compiles, the failure was ours: fail open
        plain = super().get_code(fullname)
        _failed_open(fullname, failure)
        if plain is None:  # pragma: no cover - a source loader always has code
            raise failure
        return plain


class _AssertRewritingLoader(_Loader):
    """A module pytest's hook would rewrite: tidescope's rewrite, then pytest's asserts."""

    def __init__(self, fullname: str, path: str, installation: Installation, hook: Any) -> None:
        super().__init__(fullname, path, installation)
        self.hook = hook

    def get_code(self, fullname: str) -> types.CodeType:
        inst = self.installation
        try:
            source = self.get_data(self.path)
            code, records = compile_module(
                source, self.path, fullname, inst.level, inst.cache_dir,
                transform=_pytest_rewrite.rewrite_asserts(self.hook, source, self.path),
                variant=_pytest_rewrite.variant(self.hook),
            )  # fmt: skip
        except Exception as exc:
            failure = exc
        else:
            _registered(fullname, records)
            _pytest_rewrite.mark_rewritten(self.hook, fullname, self.path)
            return code
        # as pytest alone would have it: its rewrite, not instrumented (or the user's error)
        plain = self._plain(fullname)
        _failed_open(fullname, failure)
        return plain

    def _plain(self, fullname: str) -> types.CodeType:
        source = self.get_data(self.path)
        tree = ast.parse(source, self.path)
        _pytest_rewrite.rewrite_asserts(self.hook, source, self.path)(tree)
        _pytest_rewrite.mark_rewritten(self.hook, fullname, self.path)
        return compile(tree, self.path, "exec", dont_inherit=True)


def _move_first() -> None:
    """Put tidescope's finders back in front of those inserted since (pytest's hook)."""
    ours = [f for f in sys.meta_path if isinstance(f, _Finder)]
    if ours and not all(isinstance(f, _Finder) for f in sys.meta_path[: len(ours)]):
        sys.meta_path[:] = ours + [f for f in sys.meta_path if not isinstance(f, _Finder)]


_current: Installation | None = None


def install(
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    level: str = "calls",
    cache_dir: str | os.PathLike[str] | None = None,
    main_path: str | os.PathLike[str] | None = None,
    *,
    cache: bool = True,
) -> Installation:
    """Put the rewriting finder first on ``sys.meta_path`` (replacing one installed before).

    Args:
        include: fnmatch patterns of module names to rewrite (``"pkg.*"`` also matches
            ``pkg``); None rewrites the program's own files: those under the current
            directory or ``main_path``'s directory, outside site-packages.
        exclude: patterns of module names never rewritten.
        level: ``"calls"``, ``"values"`` or ``"lines"``.
        cache_dir: where rewritten code is cached (default ``$XDG_CACHE_HOME/tidescope``
            or ``~/.cache/tidescope``).
        main_path: the script being run, whose directory holds the program's own files.
        cache: False never reads or writes the cache.

    Raises:
        ValueError: unknown level.
        TypeError: a pattern that is not a non-empty string.
    """
    global _current
    check_level(level)
    inc, exc = _patterns(include, "include"), _patterns(exclude, "exclude")
    directory = None
    if cache:
        directory = Path(cache_dir) if cache_dir is not None else _cache.default_cache_dir()
    uninstall()
    inst = Installation(inc, exc, level, directory, main_path)
    sys.meta_path.insert(0, inst.finder)
    _current = inst
    _core.set_level(level)  # decides the "auto" value policy
    return inst


def uninstall() -> bool:
    """Remove every tidescope finder from ``sys.meta_path``; True if one was there."""
    global _current
    before = len(sys.meta_path)
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Finder)]
    _current = None
    _core.set_level(None)
    return len(sys.meta_path) != before


def instrument_main(
    path: str | os.PathLike[str],
    level: str = "calls",
    *,
    module: str = "__main__",
    cache_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
) -> tuple[types.CodeType, list[NodeRecord]]:
    """Compile the script at ``path`` rewritten, for the runner to exec as ``__main__``.

    Its node records join the node table. If the rewrite fails for a reason other than
    the script's own syntax, the plain code is returned (with no records) and the failure
    counted, as the import hook does.

    Returns:
        ``(code, records)``: exec ``code`` in the ``__main__`` namespace.

    Raises:
        OSError: the script can't be read.
        SyntaxError: the script's own syntax error, exactly as ``compile`` reports it.
        ValueError: unknown level.
    """
    check_level(level)
    filename = os.fspath(path)
    with open(filename, "rb") as f:
        source = f.read()
    directory = None
    if cache:
        directory = Path(cache_dir) if cache_dir is not None else _cache.default_cache_dir()
    try:
        code, records = compile_module(source, filename, module, level, directory)
    except Exception as exc:
        failure = exc
    else:
        _registered(module, records)
        return code, records
    plain = compile(source, filename, "exec", dont_inherit=True)  # the user's SyntaxError
    _failed_open(module, failure)
    return plain, []
