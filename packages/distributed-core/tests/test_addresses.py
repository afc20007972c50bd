"""Addresses: 'host:port', 'tcp://', 'tls://', IPv6 and tuples."""

from __future__ import annotations

import pytest

from distributed_core import normalize_address, parse_address, unparse_address


@pytest.mark.parametrize(
    "address, expected",
    [
        ("127.0.0.1:8787", ("tcp", "127.0.0.1", 8787)),
        ("tcp://127.0.0.1:8787", ("tcp", "127.0.0.1", 8787)),
        ("tls://10.0.0.1:1", ("tls", "10.0.0.1", 1)),
        ("localhost:0", ("tcp", "localhost", 0)),
        ("  tcp://host:65535 ", ("tcp", "host", 65535)),
        ("[::1]:8787", ("tcp", "::1", 8787)),
        ("tls://[fe80::1]:99", ("tls", "fe80::1", 99)),
        (("127.0.0.1", 8787), ("tcp", "127.0.0.1", 8787)),
        (["127.0.0.1", "8787"], ("tcp", "127.0.0.1", 8787)),
    ],
)
def test_parse(address, expected):
    assert parse_address(address) == expected


@pytest.mark.parametrize(
    "address, error, match",
    [
        ("udp://h:1", ValueError, "unknown scheme 'udp'"),
        ("127.0.0.1", ValueError, "has no port"),
        (":8787", ValueError, "has no port"),
        ("h:port", ValueError, "bad port 'port'"),
        ("h:70000", ValueError, "out of range"),
        ("h:-1", ValueError, "out of range"),
        ("[::1:8787", ValueError, "bad IPv6 address"),
        (("h", 1, 2), ValueError, "must be \\(host, port\\)"),
        (8787, TypeError, "got int"),
        (None, TypeError, "got NoneType"),
    ],
)
def test_parse_errors(address, error, match):
    with pytest.raises(error, match=match):
        parse_address(address)


@pytest.mark.parametrize(
    "address, expected",
    [
        ("h:1", "tcp://h:1"),
        (("h", 1), "tcp://h:1"),
        ("tls://h:1", "tls://h:1"),
        ("[::1]:5", "tcp://[::1]:5"),
    ],
)
def test_normalize(address, expected):
    assert normalize_address(address) == expected
    assert normalize_address(expected) == expected


def test_default_scheme_and_unparse():
    assert parse_address("h:1", default_scheme="tls") == ("tls", "h", 1)
    assert unparse_address("tcp", "::1", 5) == "tcp://[::1]:5"
    assert unparse_address(*parse_address("tls://h:9")) == "tls://h:9"
