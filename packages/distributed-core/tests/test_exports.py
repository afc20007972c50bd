"""The public surface: what is exported is deliberate and documented (cf. trio's test_exports)."""

from __future__ import annotations

import inspect

import pytest

import distributed_core
import distributed_core.testing

EXPECTED = {
    "PROTOCOL_VERSION",
    "AuthenticationError",
    "Comm",
    "CommClosedError",
    "CommTimeoutError",
    "ConnectionPool",
    "DecodeError",
    "Decoder",
    "Failure",
    "HandshakeError",
    "Limits",
    "LocalProtocolError",
    "LoopRunner",
    "ProtocolError",
    "ProtocolVersionError",
    "PythonVersionError",
    "RemoteError",
    "RemoteProtocolError",
    "RemoteTraceback",
    "Security",
    "Server",
    "Timeouts",
    "WorkerPausedError",
    "__version__",
    "connect",
    "default_ip",
    "default_secret_file",
    "dumps",
    "ensure_secret_file",
    "loads",
    "normalize_address",
    "parse_address",
    "parse_resources",
    "read",
    "rpc",
    "sync",
    "unparse_address",
    "write",
}

EXPECTED_TESTING = {"check_leaks", "free_port", "gen_test", "open_fds", "serve"}


def test_all_is_exactly_the_expected_api():
    # A change here is an API change: update EXPECTED, the contracts page and the changelog.
    assert set(distributed_core.__all__) == EXPECTED
    assert len(distributed_core.__all__) == len(EXPECTED), "duplicates in __all__"
    assert set(distributed_core.testing.__all__) == EXPECTED_TESTING


@pytest.mark.parametrize(
    "module, name",
    [(distributed_core, n) for n in sorted(EXPECTED)]
    + [(distributed_core.testing, n) for n in sorted(EXPECTED_TESTING)],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_exported_names_exist_and_are_documented(module, name):
    obj = getattr(module, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert obj.__doc__ and obj.__doc__.strip(), f"{module.__name__}.{name} has no docstring"
        assert obj.__module__.startswith("distributed_core"), obj.__module__


def test_star_import():
    namespace: dict = {}
    exec("from distributed_core import *", namespace)
    assert EXPECTED <= set(namespace)


def test_versions():
    assert distributed_core.__version__ == "0.2.0"
    assert distributed_core.PROTOCOL_VERSION == (1, 0)
    major, minor = distributed_core.PROTOCOL_VERSION
    assert isinstance(major, int) and isinstance(minor, int)


def test_error_hierarchy():
    from distributed_core import (
        AuthenticationError,
        CommClosedError,
        DecodeError,
        HandshakeError,
        LocalProtocolError,
        ProtocolError,
        ProtocolVersionError,
        RemoteProtocolError,
    )

    assert issubclass(CommClosedError, ConnectionError)
    assert issubclass(HandshakeError, ConnectionError)
    assert issubclass(ProtocolVersionError, HandshakeError)
    assert issubclass(AuthenticationError, HandshakeError)
    assert issubclass(LocalProtocolError, ProtocolError)
    assert issubclass(RemoteProtocolError, ProtocolError)
    assert issubclass(DecodeError, RemoteProtocolError)
    assert not issubclass(ProtocolError, ConnectionError)
