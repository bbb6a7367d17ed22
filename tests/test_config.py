"""Config: defaults, precedence (arguments > TIDESCOPE_* > [tool.tidescope]) and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tidescope.config import DEFAULT_REDACT_PATTERN, Config, ConfigError


def test_defaults_are_the_documented_limits() -> None:
    cfg = Config()
    assert (cfg.buffer_size, cfg.overflow_strategy, cfg.block_timeout) == (
        65536,
        "drop_oldest",
        0.1,
    )
    assert (cfg.max_depth, cfg.max_items, cfg.max_string, cfg.max_event_bytes) == (3, 20, 256, 4096)
    assert cfg.repr_objects is False and cfg.enabled is True and cfg.node is None


def test_environment_variables_override_defaults() -> None:
    env = {
        "TIDESCOPE_BUFFER_SIZE": "1024",
        "TIDESCOPE_OVERFLOW_STRATEGY": "block",
        "TIDESCOPE_BLOCK_TIMEOUT": "0.5",
        "TIDESCOPE_MAX_ITEMS": "0x10",
        "TIDESCOPE_REPR_OBJECTS": "yes",
        "TIDESCOPE_ENABLED": "off",
        "TIDESCOPE_NODE": "web-1",
    }
    cfg = Config.load(env=env)
    assert cfg.buffer_size == 1024 and cfg.overflow_strategy == "block"
    assert cfg.block_timeout == 0.5 and cfg.max_items == 16
    assert cfg.repr_objects is True and cfg.enabled is False and cfg.node == "web-1"


def test_arguments_override_environment_and_none_means_not_given() -> None:
    env = {"TIDESCOPE_BUFFER_SIZE": "1024", "TIDESCOPE_MAX_DEPTH": "5"}
    cfg = Config.load(env=env, buffer_size=8, max_depth=None)
    assert cfg.buffer_size == 8 and cfg.max_depth == 5


def test_pyproject_table_is_the_lowest_precedence(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.tidescope]\nbuffer-size = 256\nmax_items = 7\nnode = "n"\n')
    cfg = Config.load(env={"TIDESCOPE_MAX_ITEMS": "9"}, pyproject=pyproject)
    assert (cfg.buffer_size, cfg.max_items, cfg.node) == (256, 9, "n")
    assert Config.load(env={}, pyproject=tmp_path / "missing.toml") == Config()


def test_unknown_pyproject_key_names_the_key(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[tool.tidescope]\nbuffersize = 256\n")
    with pytest.raises(ConfigError, match="buffersize"):
        Config.load(env={}, pyproject=pyproject)


@pytest.mark.parametrize(
    ("var", "value", "setting", "accepted"),
    [
        ("TIDESCOPE_BUFFER_SIZE", "1000", "buffer_size", "power of two"),
        ("TIDESCOPE_BUFFER_SIZE", "lots", "buffer_size", "power of two"),
        ("TIDESCOPE_OVERFLOW_STRATEGY", "drop", "overflow_strategy", "'drop_oldest'"),
        ("TIDESCOPE_BLOCK_TIMEOUT", "-1", "block_timeout", ">= 0"),
        ("TIDESCOPE_BLOCK_TIMEOUT", "nan", "block_timeout", ">= 0"),
        ("TIDESCOPE_MAX_DEPTH", "0", "max_depth", "positive integer"),
        ("TIDESCOPE_ENABLED", "maybe", "enabled", "true/false"),
        ("TIDESCOPE_BUFFER_SIZE", str(1 << 40), "buffer_size", "from 1 to 16777216 (2**24)"),
        ("TIDESCOPE_BLOCK_TIMEOUT", "1e300", "block_timeout", "<= 60"),
        ("TIDESCOPE_MAX_DEPTH", "100000", "max_depth", "up to 100"),
        ("TIDESCOPE_MAX_ITEMS", str(1 << 40), "max_items", "up to 1048576"),
        ("TIDESCOPE_MAX_STRING", str(1 << 70), "max_string", "up to 1048576"),
        ("TIDESCOPE_MAX_EVENT_BYTES", str(1 << 70), "max_event_bytes", "up to 1073741824"),
    ],
)
def test_invalid_environment_value_names_variable_setting_and_accepted_values(
    var: str, value: str, setting: str, accepted: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(env={var: value})
    message = str(info.value)
    assert var in message and setting in message and accepted in message
    assert info.value.setting == setting


@pytest.mark.parametrize(
    "kwargs",
    [
        {"buffer_size": 0},
        {"buffer_size": True},
        {"buffer_size": 3.0},
        {"overflow_strategy": "DROP_OLDEST"},
        {"block_timeout": float("inf")},
        {"buffer_size": 1 << 25},
        {"max_string": 1 << 70},
        {"max_string": -5},
        {"repr_objects": 1},
        {"node": ""},
    ],
)
def test_invalid_argument_raises_config_error_naming_the_setting(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**kwargs)  # type: ignore[arg-type]
    assert info.value.setting == next(iter(kwargs))


def test_unknown_argument_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="buffer_sise"):
        Config.load(env={}, buffer_sise=8)


def test_config_is_frozen_and_replace_validates() -> None:
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.buffer_size = 8  # type: ignore[misc]
    assert cfg.replace(buffer_size=8).buffer_size == 8
    with pytest.raises(ConfigError):
        cfg.replace(buffer_size=9)


def test_settings_at_their_upper_bounds_are_accepted_and_start() -> None:
    import tidescope

    cfg = Config(
        buffer_size=1 << 24, block_timeout=60, max_depth=100, max_items=1 << 20,
        max_string=1 << 20, max_event_bytes=1 << 30,
    )  # fmt: skip
    with tidescope.capture(cfg) as cap:
        pass
    assert cap.stats()["size"] == 1 << 24


def test_redaction_is_on_by_default_and_its_settings_load_like_the_others(tmp_path: Path) -> None:
    cfg = Config()
    assert cfg.redact is True and cfg.redact_pattern == DEFAULT_REDACT_PATTERN
    assert cfg.redact_extra is None
    env = {"TIDESCOPE_REDACT": "off", "TIDESCOPE_REDACT_EXTRA": "ssn|iban"}
    cfg = Config.load(env=env)
    assert cfg.redact is False and cfg.redact_extra == "ssn|iban"
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.tidescope]\nredact-pattern = "secret"\n')
    assert Config.load(env={}, pyproject=pyproject).redact_pattern == "secret"


@pytest.mark.parametrize("var", ["TIDESCOPE_REDACT_PATTERN", "TIDESCOPE_REDACT_EXTRA"])
def test_a_bad_redaction_pattern_is_one_line_naming_the_setting(var: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(env={var: "(token"})
    message = str(info.value)
    assert var in message and "regular expression" in message and "\n" not in message
    assert "missing )" in message
    assert info.value.setting == var.removeprefix("TIDESCOPE_").lower()
    with pytest.raises(ConfigError):
        Config(redact_pattern="")


def test_a_bad_redaction_pattern_stops_tidescope_run_with_one_line(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text("print('ran')\n")
    env = {**os.environ, "TIDESCOPE_REDACT_PATTERN": "[a-"}
    proc = subprocess.run(
        [sys.executable, "-m", "tidescope", "run", "-o", str(tmp_path / "t"), str(script)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "ran" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "TIDESCOPE_REDACT_PATTERN" in lines[0], proc.stderr


def test_the_nearest_pyproject_is_found_upward_and_only_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tidescope.config import find_pyproject

    (tmp_path / "pyproject.toml").write_text("[tool.tidescope]\nmax_items = 5\n")
    inner = tmp_path / "sub" / "pkg"
    inner.mkdir(parents=True)
    monkeypatch.chdir(inner)
    assert find_pyproject() == tmp_path / "pyproject.toml"
    assert Config.load(env={}).max_items == 5
    assert Config.load(env={}, pyproject=False) == Config()
    (tmp_path / "sub" / "pyproject.toml").write_text("[project]\nname = 'x'\n")  # nearer
    assert find_pyproject() == tmp_path / "sub" / "pyproject.toml"
    assert Config.load(env={}) == Config()  # no table there: defaults, not the outer file's
