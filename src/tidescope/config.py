"""One frozen Config: arguments > ``TIDESCOPE_*`` environment variables > ``[tool.tidescope]``."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, get_args

__all__ = [
    "DEFAULT_REDACT_PATTERN",
    "LEVELS",
    "OVERFLOW_STRATEGIES",
    "RUN_SETTINGS",
    "VALUE_POLICIES",
    "Config",
    "ConfigError",
    "OverflowStrategy",
    "ValuePolicy",
    "find_pyproject",
    "run_settings",
]

OverflowStrategy = Literal["drop_oldest", "drop_newest", "block"]
OVERFLOW_STRATEGIES: Final[tuple[str, ...]] = get_args(OverflowStrategy)
ValuePolicy = Literal["auto", "ref", "deep"]
VALUE_POLICIES: Final[tuple[str, ...]] = get_args(ValuePolicy)


class ConfigError(ValueError):
    """A setting has a value tidescope does not accept; ``setting`` names it."""

    def __init__(
        self, setting: str, value: object, accepted: str, source: str, message: str | None = None
    ) -> None:
        self.setting = setting
        self.value = value
        self.accepted = accepted
        self.source = source
        super().__init__(message or f"{source}={value!r} is invalid: {setting} must be {accepted}")


DEFAULT_REDACT_PATTERN: Final = (
    r"passw(?:or)?d|pwd|passphrase|secret|token|api[-_]?key|access[-_]?key|private[-_]?key"
    r"|authorization|auth(?!or)|credential|cookie|session|jwt|bearer"
)
"""Names whose values are redacted: searched (anywhere in the name, case-insensitive) in
argument and local names, dict keys, query parameter names. ``auth`` does not match
``author``/``authority``; ``token`` does match ``tokens`` and ``max_tokens`` and ``session``
a SQLAlchemy ``session`` (set ``redact_pattern`` to narrow it)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    """Every setting of the capture core, validated on construction.

    Value limits are those of the bounded snapshot (DESIGN.md invariant 5): a container deeper
    than ``max_depth``, its items past ``max_items``, strings and bytes past ``max_string``,
    and anything once ``max_event_bytes`` of captured data are used up, is cut and marked.
    """

    buffer_size: int = 65536
    """Events the ring buffer holds; a power of two."""
    overflow_strategy: OverflowStrategy = "drop_oldest"
    """What a write does when the buffer is full: overwrite, reject, or wait ``block_timeout``."""
    block_timeout: float = 0.1
    """Seconds a ``block`` write waits for the consumer before it drops and counts the event."""
    max_depth: int = 3
    """Container nesting kept in a snapshot."""
    max_items: int = 20
    """Items kept per container (and attributes per object)."""
    max_string: int = 256
    """Characters kept per string, bytes kept per bytes object, decimal digits per int."""
    max_event_bytes: int = 4096
    """Approximate bytes of captured values per event."""
    repr_objects: bool = False
    """Call ``repr()`` on arbitrary objects (user code!) and keep its bounded result."""
    enabled: bool = True
    """Capture at all; False makes ``start()`` register nothing and every report a no-op."""
    node: str | None = None
    """Node name in every event; default ``<hostname>:<pid>``."""
    redact: bool = True
    """Record values bound to secret-looking names as a ``Redacted`` marker (see below)."""
    redact_pattern: str = DEFAULT_REDACT_PATTERN
    """The regular expression (searched, case-insensitive) that makes a name secret."""
    redact_extra: str | None = None
    """A regular expression of more secret names, added to ``redact_pattern``."""
    values: ValuePolicy = "auto"
    """How calls record arguments and return values: ``"ref"`` keeps scalars by value and
    every other object as an ``ObjectRef`` (type, id, container length); ``"deep"`` takes
    the bounded snapshot; ``"auto"`` is ``"ref"`` at instrumentation level ``calls`` and
    ``"deep"`` at ``values`` and ``lines`` (and without the import hook)."""
    deep_modules: tuple[str, ...] = ()
    """fnmatch patterns of module names whose calls take the bounded snapshot whatever
    ``values`` says (``"myapp.models.*"`` also matches ``myapp.models``). The environment
    variable is a comma-separated list."""
    otlp_endpoint: str | None = None
    """An OTLP/HTTP traces URL (``http://collector:4318/v1/traces``): the drain exports
    spans there while the program runs (``docs/otlp.md``; needs the ``otlp`` extra)."""
    otlp_threshold_ms: float = 1.0
    """OTLP export: a call at least this long gets a span; shorter ones are folded into
    counters on their nearest exported ancestor (unless they raised or carry a domain event)."""
    otlp_max_attribute_length: int = 2048
    """OTLP export: bytes an attribute's string value keeps."""
    otlp_max_events: int = 128
    """OTLP export: events per span (the last a summary of those dropped)."""
    otlp_max_spans: int = 10000
    """OTLP export: spans per trace from one process; the overflow is counted."""
    otlp_timeout: float = 5.0
    """OTLP export: seconds per request, and the most the end of a run waits for the rest."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            checked = _check(f.name, value, f.name)
            if checked is not value:  # a list of deep_modules, kept as a tuple
                object.__setattr__(self, f.name, checked)

    def replace(self, **changes: Any) -> Config:
        """A copy with some settings changed (validated like any Config)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(
        cls,
        *,
        env: Mapping[str, str] | None = None,
        pyproject: str | os.PathLike[str] | Literal[False] | None = None,
        **arguments: Any,
    ) -> Config:
        """Build a Config from arguments, then ``TIDESCOPE_*`` variables, then ``[tool.tidescope]``.

        Args:
            env: the environment to read (default ``os.environ``).
            pyproject: a ``pyproject.toml`` whose ``[tool.tidescope]`` table supplies defaults;
                default: the nearest one (:func:`find_pyproject`); ``False``: none.
            **arguments: settings given by the caller; ``None`` means "not given".

        Raises:
            ConfigError: a value is invalid, or ``[tool.tidescope]`` has a key that is no
                setting; the message names the setting, where it came from (the file) and
                what is accepted.
            TypeError: an argument names no setting.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(arguments) - names)
        if unknown:
            raise TypeError(f"unknown tidescope setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        path = find_pyproject() if pyproject is None else pyproject
        if path is not False and path is not None:
            for name, raw in _pyproject_settings(Path(path)).items():
                if name not in RUN_SETTINGS:
                    values[name] = _check(name, raw, f"{path}: [tool.tidescope] {name}")
        environ = os.environ if env is None else env
        for name in names:
            var = "TIDESCOPE_" + name.upper()
            if var in environ:
                values[name] = _check(name, _parse_env(name, environ[var], var), var)
        values.update((k, v) for k, v in arguments.items() if v is not None)
        return cls(**values)


RUN_SETTINGS: Final = ("output", "level", "include", "exclude")
"""Keys of ``[tool.tidescope]`` that ``tidescope run`` reads (:func:`run_settings`), not
:class:`Config`: the output directory, the instrumentation level, the module patterns."""
LEVELS: Final = ("calls", "values", "lines")


def find_pyproject(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest ``pyproject.toml``: in ``start`` (default: the current directory) or
    the closest directory above it, as pytest and coverage find their configuration.
    Only that one is read, whether or not it has a ``[tool.tidescope]`` table."""
    try:
        here = Path(os.path.abspath(start if start is not None else os.curdir))
    except OSError:  # the current directory was removed
        return None
    for directory in (here, *here.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def run_settings(pyproject: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The ``tidescope run`` settings of ``[tool.tidescope]`` in ``pyproject``, checked:
    ``output`` (a directory, relative to the file's directory; returned absolute),
    ``level`` (one of :data:`LEVELS`), ``include`` and ``exclude`` (lists of patterns).

    Raises:
        ConfigError: a value is invalid or a key is no setting (naming the file).
    """
    if pyproject is None:
        return {}
    path = Path(pyproject)
    out: dict[str, Any] = {}
    for name, raw in _pyproject_settings(path).items():
        if name not in RUN_SETTINGS:
            continue
        source = f"{path}: [tool.tidescope] {name}"
        if name == "output":
            if type(raw) is not str or not raw.strip():
                raise ConfigError(name, raw, "a directory name", source)
            out[name] = os.path.join(path.parent, raw)
            continue
        elif name == "level":
            if raw not in LEVELS:
                raise ConfigError(name, raw, "one of " + ", ".join(map(repr, LEVELS)), source)
        elif type(raw) is not list or not _patterns(tuple(raw)):
            raise ConfigError(name, raw, "a list of module name patterns", source)
        out[name] = raw
    return out


def _pyproject_settings(path: Path) -> dict[str, Any]:
    """``[tool.tidescope]`` of ``path`` by setting name (``buffer-size`` as ``buffer_size``),
    every key known; {} if the file is missing."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(
            "pyproject", str(path), "readable", str(path), f"{path}: cannot read: {exc.strerror}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            "pyproject", str(path), "valid TOML", str(path), f"{path}: not valid TOML: {exc}"
        ) from None
    tool = data.get("tool", {})
    table = tool.get("tidescope", {}) if isinstance(tool, dict) else {}
    if not isinstance(table, dict):
        raise ConfigError(
            "tool.tidescope",
            table,
            "a table",
            str(path),
            f"{path}: [tool.tidescope] is not a table",
        )
    known = {f.name for f in dataclasses.fields(Config)} | set(RUN_SETTINGS)
    out: dict[str, Any] = {}
    for key, raw in table.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(
                key,
                raw,
                "a setting",
                str(path),
                f"{path}: [tool.tidescope] {key} is not a tidescope setting"
                f" (settings: {', '.join(sorted(known))})",
            )
        out[name] = raw
    return out


_TRUE: Final = {"1", "true", "yes", "on"}
_FALSE: Final = {"0", "false", "no", "off"}


def _parse_env(name: str, raw: str, var: str) -> Any:
    kind = _KINDS[name][0]
    text = raw.strip()
    if kind is tuple:
        return tuple(p.strip() for p in text.split(",") if p.strip())
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(name, raw, "one of 1/0, true/false, yes/no, on/off", var)
    if kind is int:
        try:
            return int(text, 0)
        except ValueError:
            raise ConfigError(name, raw, _KINDS[name][1], var) from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(name, raw, _KINDS[name][1], var) from None
    return text


# Upper bounds: past them a setting is a mistake that would cost the program its memory
# (a 2**40-slot ring; a 1 << (max_string * log2 10) int limit) or its progress.
MAX_BUFFER_SIZE: Final = 1 << 24  # about 1.9 GB of C slots, before the values they hold
MAX_BLOCK_TIMEOUT: Final = 60.0
MAX_DEPTH: Final = 100
MAX_LIMIT: Final = 1 << 20  # items per container, characters per string
MAX_EVENT_BYTES: Final = 1 << 30


def _power_of_two(v: Any) -> bool:
    return type(v) is int and 0 < v <= MAX_BUFFER_SIZE and v & (v - 1) == 0


def _int_up_to(most: int) -> Callable[[Any], bool]:
    return lambda v: type(v) is int and 0 < v <= most


def _seconds(v: Any) -> bool:
    return type(v) in (int, float) and 0 <= v <= MAX_BLOCK_TIMEOUT  # NaN fails both


def _url(v: Any) -> bool:
    return v is None or (type(v) is str and re.fullmatch(r"https?://[^\s/]+(/\S*)?", v) is not None)


def _patterns(v: Any) -> bool:
    return type(v) is tuple and all(type(p) is str and p.strip() != "" for p in v)


def _regex(v: Any) -> bool:
    if type(v) is not str or v == "":
        return False
    try:
        re.compile(v, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError):
        return False
    return True


# setting -> (parsed type, description of accepted values, predicate)
_KINDS: Final[dict[str, tuple[type, str, Callable[[Any], bool]]]] = {
    "buffer_size": (
        int,
        f"a power of two from 1 to {MAX_BUFFER_SIZE} (2**24), for example 4096 or 65536",
        _power_of_two,
    ),
    "overflow_strategy": (
        str,
        "one of " + ", ".join(repr(s) for s in OVERFLOW_STRATEGIES),
        lambda v: v in OVERFLOW_STRATEGIES,
    ),
    "block_timeout": (float, f"a number of seconds >= 0 and <= {MAX_BLOCK_TIMEOUT:g}", _seconds),
    "max_depth": (int, f"a positive integer up to {MAX_DEPTH}", _int_up_to(MAX_DEPTH)),
    "max_items": (int, f"a positive integer up to {MAX_LIMIT}", _int_up_to(MAX_LIMIT)),
    "max_string": (int, f"a positive integer up to {MAX_LIMIT}", _int_up_to(MAX_LIMIT)),
    "max_event_bytes": (
        int,
        f"a positive integer up to {MAX_EVENT_BYTES}",
        _int_up_to(MAX_EVENT_BYTES),
    ),
    "repr_objects": (bool, "True or False", lambda v: type(v) is bool),
    "enabled": (bool, "True or False", lambda v: type(v) is bool),
    "node": (
        str,
        "a non-empty string or None",
        lambda v: v is None or (type(v) is str and v != ""),
    ),
    "redact": (bool, "True or False", lambda v: type(v) is bool),
    "redact_pattern": (str, "a valid regular expression (Python re syntax)", _regex),
    "redact_extra": (
        str,
        "a valid regular expression (Python re syntax) or None",
        lambda v: v is None or _regex(v),
    ),
    "values": (
        str,
        "one of " + ", ".join(repr(s) for s in VALUE_POLICIES),
        lambda v: v in VALUE_POLICIES,
    ),
    "otlp_endpoint": (str, "an http:// or https:// URL, or None", _url),
    "otlp_threshold_ms": (
        float,
        "a number of milliseconds >= 0",
        lambda v: type(v) in (int, float) and 0 <= v < 1e9,
    ),
    "otlp_max_attribute_length": (
        int,
        "an integer from 16 to 1048576",
        lambda v: type(v) is int and 16 <= v <= 1 << 20,
    ),
    "otlp_max_events": (
        int,
        "an integer from 1 to 100000",
        lambda v: type(v) is int and 1 <= v <= 100_000,
    ),
    "otlp_max_spans": (int, "a positive integer", _int_up_to(1 << 40)),
    "otlp_timeout": (
        float,
        "a number of seconds > 0 and <= 60",
        lambda v: type(v) in (int, float) and 0 < v <= MAX_BLOCK_TIMEOUT,
    ),
    "deep_modules": (
        tuple,
        "a list of module name patterns (non-empty strings)",
        _patterns,
    ),
}


def _check(name: str, value: Any, source: str) -> Any:
    _, accepted, ok = _KINDS[name]
    if name == "deep_modules" and type(value) is list:
        value = tuple(value)  # TOML arrays and keyword arguments given as lists
    if not ok(value):
        if name in ("redact_pattern", "redact_extra") and type(value) is str and value:
            try:
                re.compile(value)
            except Exception as exc:  # re.error, or a pattern nested too deep
                accepted = f"{accepted} ({exc})"
        raise ConfigError(name, value, accepted, source)
    return value
