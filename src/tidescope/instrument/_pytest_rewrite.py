"""Working with pytest's assertion rewriting: its modules instrumented with their asserts
rewritten, and tidescope's finder kept ahead of pytest's.

pytest puts an ``AssertionRewritingHook`` first on ``sys.meta_path``; it is its own loader,
and compiles test modules, ``conftest.py`` files and every module of a distribution that
registers a pytest plugin itself (``exec_module``, through its own ``.pyc`` cache). A
finder behind it never sees those modules; one in front that stepped aside for it (as
tidescope's does for every loader but a plain source file's) never instruments them.

Chosen: tidescope's finder stays in front, and a module pytest would rewrite is compiled
by tidescope's loader as tidescope's rewrite first, then pytest's ``rewrite_asserts`` on
the resulting tree, with pytest's own configuration (:func:`rewrite_asserts`). In that
order each rewriter sees what it expects: tidescope numbers the user's code as written
(node ids and spans are the source's, never pytest's ``@py_assert`` temporaries), and
pytest's rewriter, which visits every statement list of a tree whatever the nesting,
rewrites each ``assert`` where tidescope's rewrite put it (both the capture-on body and
the capture-off copy), so a failing assertion explains itself as under plain pytest.
The other order (compiling pytest's tree, then rewriting it) would instrument pytest's
generated code and snapshot its temporaries, and tidescope's rewriter reads source text,
not a tree. The code is cached in tidescope's cache under a key that names pytest's
version and the one setting that changes pytest's output (``enable_assertion_pass_hook``),
not in pytest's ``.pyc`` files, which hold pytest's rewrite alone.

pytest installs its hook after tidescope's when ``tidescope run -m pytest`` runs it:
:func:`keep_ahead` wraps ``_pytest.assertion.install_importhook`` so that tidescope's
finder goes back in front the moment pytest's is inserted, before pytest imports any
plugin or test module. Only pytest's private names are touched, and each use fails open:
a pytest whose internals differ is left alone (its modules are then not instrumented).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["is_rewriting_hook", "keep_ahead", "mark_rewritten", "rewrite_asserts", "variant"]

_HOOK_MODULE = "_pytest.assertion.rewrite"
_WRAPPED = "__tidescope_keeps_ahead__"


def is_rewriting_hook(loader: object) -> bool:
    """True if ``loader`` is pytest's assertion-rewriting hook (checked by name: pytest is
    never imported here)."""
    cls = type(loader)
    return cls.__name__ == "AssertionRewritingHook" and cls.__module__ == _HOOK_MODULE


def _pass_hook(hook: Any) -> bool:
    try:
        return bool(hook.config.getini("enable_assertion_pass_hook"))
    except Exception:
        return False


def variant(hook: Any) -> str:
    """What the cache key adds for a module compiled with pytest's rewrite."""
    version = getattr(sys.modules.get("_pytest._version"), "version", "?")
    return f"pytest-{version}-passhook{int(_pass_hook(hook))}"


def rewrite_asserts(hook: Any, source: bytes, filename: str) -> Callable[[ast.Module], None]:
    """The tree transform that rewrites the asserts of a module as ``hook`` would."""
    from _pytest.assertion.rewrite import rewrite_asserts as rewrite  # noqa: PLC0415

    config = hook.config

    def transform(tree: ast.Module) -> None:
        rewrite(tree, source, filename, config)

    return transform


def mark_rewritten(hook: Any, module: str, filename: str) -> None:
    """Tell ``hook`` that ``module`` had its asserts rewritten, as its own loader does (so
    a later ``register_assert_rewrite`` of it does not warn that it came too late)."""
    try:
        hook._rewritten_names[module] = Path(filename)
    except Exception:  # another pytest: only a needless warning is lost
        pass


def keep_ahead(move_first: Callable[[], None]) -> None:
    """Have ``move_first`` run each time pytest installs its hook (and now, if one is
    installed); a no-op until ``_pytest.assertion`` is imported. Cheap enough to call on
    every import."""
    mod = sys.modules.get("_pytest.assertion")
    if mod is None:
        return
    real = getattr(mod, "install_importhook", None)
    if real is None or getattr(real, _WRAPPED, False):
        return  # being imported right now (not defined yet), or wrapped already

    def install_importhook(config: Any) -> Any:
        hook = real(config)
        try:
            move_first()
        except Exception:  # pragma: no cover - never break pytest's start
            pass
        return hook

    setattr(install_importhook, _WRAPPED, True)
    setattr(mod, "install_importhook", install_importhook)  # noqa: B010
    move_first()
