"""distributed_core.timeouts: the named bounds, and the configured values every connection uses."""

from __future__ import annotations

import socket

import pytest

from distributed_core import config
from distributed_core.comm import set_tcp_options
from distributed_core.timeouts import DEFAULTS, Timeouts, configured


@pytest.fixture
def fresh_config():
    config.reset()
    yield
    config.reset()


def test_defaults_notice_a_vanished_host_in_about_ten_seconds():
    keepalive = (
        DEFAULTS.tcp_keepalive_idle + DEFAULTS.tcp_keepalive_interval * DEFAULTS.tcp_keepalive_count
    )
    assert keepalive <= 10 and DEFAULTS.tcp_user_timeout <= 10
    assert DEFAULTS.heartbeat_interval < DEFAULTS.heartbeat_timeout <= 10


def test_replace_refuses_unknown_names():
    assert DEFAULTS.replace(fetch_timeout=1.5).fetch_timeout == 1.5
    with pytest.raises(TypeError):
        DEFAULTS.replace(no_such_bound=1)


def test_configured_is_the_defaults_without_configuration(fresh_config, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no config files
    monkeypatch.delenv("DISTRIBUTED_CONFIG", raising=False)
    assert configured() == Timeouts()


def test_environment_sets_the_keepalive_of_every_new_socket(fresh_config, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DISTRIBUTED_TIMEOUTS__TCP_KEEPALIVE_IDLE", "7")
    monkeypatch.setenv("DISTRIBUTED_TIMEOUTS__FETCH_TIMEOUT", "2.5")
    config.reset()
    assert configured().tcp_keepalive_idle == 7 and configured().fetch_timeout == 2.5
    with socket.socket() as sock:
        set_tcp_options(sock)
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
