"""distributed_core.config: sources, precedence, errors, and the generated docs page."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from distributed_core import config
from distributed_core.config import SCHEMA, ConfigError, env_var, load
from distributed_core.timeouts import DEFAULTS, Timeouts

DOCS_PAGE = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def test_defaults_match_timeouts():
    for field in dataclasses.fields(Timeouts):
        key = f"timeouts.{field.name}"
        assert key in SCHEMA, f"{key} missing from the configuration schema"
        assert SCHEMA[key].default == getattr(DEFAULTS, field.name)
        assert load(env={}, files=[]).get(key) == getattr(DEFAULTS, field.name)


def test_schema_has_the_required_keys():
    for key in ("center.port", "dashboard.port", "dashboard.enabled", "logging.level",
                "logging.format", "security.secret_file", "security.insecure",
                "security.tls_cert", "security.tls_key", "security.tls_ca_file",
                "limits.max_frames"):  # fmt: skip
        assert key in SCHEMA
    assert SCHEMA["security.secret_file"].default is None
    assert SCHEMA["security.insecure"].default is False


def test_env_var_names():
    assert env_var("timeouts.connect_timeout") == "DISTRIBUTED_TIMEOUTS__CONNECT_TIMEOUT"
    assert env_var("dashboard.port") == "DISTRIBUTED_DASHBOARD__PORT"
    for s in SCHEMA.values():
        assert s.env == env_var(s.key)


def test_file_then_env_then_default(tmp_path):
    f = tmp_path / "a.toml"
    f.write_text(
        "[timeouts]\nheartbeat_timeout = 9\nconnect_timeout = 2.5\n[dashboard]\nport = 9000\n"
    )
    env = {"DISTRIBUTED_TIMEOUTS__HEARTBEAT_TIMEOUT": "7", "DISTRIBUTED_CONFIG": str(f)}
    c = load(env=env)
    assert c.get("timeouts.heartbeat_timeout") == 7.0  # env beats file
    assert c.get("timeouts.connect_timeout") == 2.5  # file beats default
    assert c.get("dashboard.port") == 9000
    assert c.get("timeouts.fetch_timeout") == DEFAULTS.fetch_timeout  # default
    assert c.source("timeouts.heartbeat_timeout") == "environment variable " + env_var(
        "timeouts.heartbeat_timeout"
    )
    assert c.source("timeouts.connect_timeout") == f"config file {f}"
    assert c.source("timeouts.fetch_timeout") == "default"


def test_user_directory_and_later_files_win(tmp_path):
    d = tmp_path / "distributed"
    d.mkdir()
    (d / "10-base.toml").write_text("[center]\nport = 1000\n[worker]\nport = 2000\n")
    (d / "20-more.yaml").write_text("center:\n  port: 1001\n")
    (d / "ignored.txt").write_text("not read")
    extra = tmp_path / "extra.toml"
    extra.write_text("[worker]\nport = 2001\n")
    env = {"XDG_CONFIG_HOME": str(tmp_path), "DISTRIBUTED_CONFIG": str(extra)}
    assert [p.name for p in config.config_files(env)] == [
        "10-base.toml", "20-more.yaml", "extra.toml",
    ]  # fmt: skip
    c = load(env=env)
    assert c.get("center.port") == 1001
    assert c.get("worker.port") == 2001


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[timeouts]\nheartbeat_timout = 3\n")
    with pytest.raises(ConfigError) as e:
        load(env={}, files=[f])
    text = str(e.value)
    assert "'timeouts.heartbeat_timout'" in text and str(f) in text
    assert "did you mean 'timeouts.heartbeat_timeout'" in text


def test_top_level_value_is_an_unknown_key(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("heartbeat_timeout = 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'heartbeat_timeout' in config file"):
        load(env={}, files=[f])


def test_unknown_env_var():
    with pytest.raises(ConfigError) as e:
        load(env={"DISTRIBUTED_TIMEOUTS__NOPE": "1"}, files=[])
    assert "DISTRIBUTED_TIMEOUTS__NOPE" in str(e.value) and "'timeouts.nope'" in str(e.value)
    # variables without "__" are not configuration
    assert load(env={"DISTRIBUTED_TEST_CENTER": "x"}, files=[]).values == {}


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("[timeouts]\nheartbeat_timeout = 'soon'\n", "timeouts.heartbeat_timeout", "a number > 0"),
        ("[timeouts]\nheartbeat_timeout = -1\n", "timeouts.heartbeat_timeout", "a number > 0"),
        ("[timeouts]\nallowed_failures = 1.5\n", "timeouts.allowed_failures", "an integer"),
        ("[center]\nport = true\n", "center.port", "an integer >= 0"),
        ("[dashboard]\nenabled = 'yes'\n", "dashboard.enabled", "a boolean"),
        ("[logging]\nformat = 'xml'\n", "logging.format", "one of 'text', 'json'"),
        ("[security]\nsecret_file = 3\n", "security.secret_file", "a file path"),
    ],
)
def test_bad_values_in_file(tmp_path, text, key, expected):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(env={}, files=[f])
    msg = str(e.value)
    assert f"'{key}'" in msg and str(f) in msg and expected in msg


@pytest.mark.parametrize(
    "name, raw, value",
    [
        ("DISTRIBUTED_TIMEOUTS__HEARTBEAT_TIMEOUT", "2.5", 2.5),
        ("DISTRIBUTED_TIMEOUTS__ALLOWED_FAILURES", "0", 0),
        ("DISTRIBUTED_DASHBOARD__ENABLED", "false", False),
        ("DISTRIBUTED_DASHBOARD__ENABLED", "1", True),
        ("DISTRIBUTED_LOGGING__LEVEL", "DEBUG", "debug"),
        ("DISTRIBUTED_SECURITY__SECRET_FILE", "", None),
    ],
)
def test_env_values(name, raw, value):
    key = name[len("DISTRIBUTED_") :].lower().replace("__", ".")
    assert load(env={name: raw}, files=[]).get(key) == value


def test_bad_env_value_names_variable():
    with pytest.raises(ConfigError) as e:
        load(env={"DISTRIBUTED_TIMEOUTS__CONNECT_TIMEOUT": "abc"}, files=[])
    msg = str(e.value)
    assert "environment variable DISTRIBUTED_TIMEOUTS__CONNECT_TIMEOUT" in msg
    assert "'timeouts.connect_timeout'" in msg and "a number > 0" in msg and "'abc'" in msg


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(env={}, files=[tmp_path / "missing.toml"])
    bad = tmp_path / "broken.toml"
    bad.write_text("[timeouts\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(env={}, files=[bad])
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(env={}, files=[bad_yaml])


def test_cached_get_and_reset(monkeypatch):
    monkeypatch.setenv("DISTRIBUTED_TIMEOUTS__FETCH_TIMEOUT", "3")
    config.reset()
    try:
        assert config.get("timeouts.fetch_timeout") == 3.0
        monkeypatch.setenv("DISTRIBUTED_TIMEOUTS__FETCH_TIMEOUT", "4")
        assert config.get("timeouts.fetch_timeout") == 3.0  # cached
        config.reset()
        assert config.get("timeouts.fetch_timeout") == 4.0
    finally:
        monkeypatch.delenv("DISTRIBUTED_TIMEOUTS__FETCH_TIMEOUT")
        config.reset()


def test_docs_page_matches_schema():
    if not DOCS_PAGE.exists():
        pytest.skip(f"{DOCS_PAGE} not in this checkout (installed package tested alone)")
    assert DOCS_PAGE.read_text() == config.markdown(), (
        "docs/configuration.md is out of date: run "
        "python -m distributed_core.config > docs/configuration.md"
    )
    for s in SCHEMA.values():
        assert f"`{s.key}`" in DOCS_PAGE.read_text() and s.env in DOCS_PAGE.read_text()


def test_server_limits_from_configuration(monkeypatch):
    from distributed_core import Limits, Server

    monkeypatch.setenv("DISTRIBUTED_LIMITS__MAX_FRAMES", "77")
    monkeypatch.setenv("DISTRIBUTED_LIMITS__MAX_MESSAGE_BYTES", "123456")
    config.reset()
    try:
        limits = Server({}).limits
        assert limits.max_frames == 77
        assert limits.max_message_bytes == limits.max_frame_bytes == 123456
        assert Server({}, limits=Limits()).limits == Limits()  # an explicit one wins
    finally:
        monkeypatch.delenv("DISTRIBUTED_LIMITS__MAX_FRAMES")
        monkeypatch.delenv("DISTRIBUTED_LIMITS__MAX_MESSAGE_BYTES")
        config.reset()
