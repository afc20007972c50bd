"""Shared fixtures: TLS certificates, the transport matrix, raw-wire helpers.

Test modules do not import each other (they may run under
``--import-mode=importlib``), so helpers shared between them live here and
are handed out as fixtures.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import struct
import time
from dataclasses import dataclass

import pytest

from distributed_core import PROTOCOL_VERSION, Security, dumps, loads, parse_address
from distributed_core.protocol import pack_frames

# -- TLS ----------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: str  # PEM of the CA
    server: str  # PEM holding the server's key and certificate chain
    client: str  # PEM holding a client's key and certificate chain
    other_ca: str  # a CA that signed nothing here


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    trustme = pytest.importorskip("trustme")
    d = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(d / "server.pem")
    )
    ca.issue_cert("client.example").private_key_and_cert_chain_pem.write_to_path(
        str(d / "client.pem")
    )
    trustme.CA().cert_pem.write_to_path(str(d / "other-ca.pem"))
    return Certs(
        str(d / "ca.pem"), str(d / "server.pem"), str(d / "client.pem"), str(d / "other-ca.pem")
    )


@dataclass(frozen=True)
class Transport:
    """What a test needs to listen and connect over one transport."""

    name: str
    listen: str
    server_security: Security | None
    client_security: Security | None


@pytest.fixture(params=["tcp", "tls"])
def transport(request) -> Transport:
    """One comm suite for every transport: tests using this run over tcp and tls."""
    if request.param == "tcp":
        return Transport("tcp", "tcp://127.0.0.1:0", None, None)
    c = request.getfixturevalue("certs")
    return Transport(
        "tls",
        "tls://127.0.0.1:0",
        Security(tls_cert=c.server, tls_key=c.server, tls_ca_file=c.ca),
        Security(tls_ca_file=c.ca),
    )


# -- raw wire helpers -----------------------------------------------------------


def frames_of(*payloads: bytes) -> bytes:
    """Raw frames (header + payloads), built by hand rather than by the code under test."""
    return struct.pack(f"<{len(payloads) + 1}Q", len(payloads), *map(len, payloads)) + b"".join(
        payloads
    )


def header(count: int, *lengths: int) -> bytes:
    """A frame header announcing anything, limits or not."""
    return struct.pack(f"<{len(lengths) + 1}Q", count, *lengths)


def hello(**overrides) -> dict:
    """A valid hello as a well-behaved connecting peer sends it (without a secret)."""
    msg = {
        "distributed": "hello",
        "protocol": list(PROTOCOL_VERSION),
        "package": "raw-test-peer",
        "version": "0.0.0",
        "python": "3.0.0",
        "role": "connector",
        "name": "raw",
        "auth": False,
        "nonce": os.urandom(32),
    }
    msg.update(overrides)
    return msg


def packed(msg) -> bytes:
    """``msg`` encoded and framed, ready to write to a socket."""
    return pack_frames(dumps(msg))


async def read_message(reader: asyncio.StreamReader, allow_pickle: bool = False):
    """Read and decode one framed message from an asyncio stream."""
    (n,) = struct.unpack("<Q", await reader.readexactly(8))
    assert 1 <= n <= 16, n
    lengths = struct.unpack(f"<{n}Q", await reader.readexactly(8 * n))
    frames = [await reader.readexactly(length) for length in lengths]
    return loads(frames, allow_pickle=allow_pickle)


class RawPeer:
    """A plain asyncio connection that speaks the wire protocol by hand."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        host, port = writer.get_extra_info("sockname")[:2]
        self.address = f"tcp://{host}:{port}"

    @classmethod
    async def open(cls, address: str) -> RawPeer:
        _, host, port = parse_address(address)
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_message(self, allow_pickle: bool = False):
        return await read_message(self.reader, allow_pickle)

    async def read_until_closed(self, timeout: float = 5) -> bytes:
        """Everything the peer sends until it closes the connection (or resets it)."""
        chunks = []

        async def drain():
            try:
                while chunk := await self.reader.read(65536):
                    chunks.append(chunk)
            except ConnectionError:
                pass

        await asyncio.wait_for(drain(), timeout)
        return b"".join(chunks)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


async def wait_for_log(caplog, pattern: str, timeout: float = 5):
    """Wait until a captured log record matches ``pattern``; return that message."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        for record in caplog.records:
            text = record.getMessage()
            if regex.search(text):
                return text
        if time.monotonic() > deadline:
            got = "\n".join(r.getMessage() for r in caplog.records[-20:])
            raise AssertionError(f"no log record matches {pattern!r}; last records:\n{got}")
        await asyncio.sleep(0.01)


async def wait_until(predicate, timeout: float = 5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.01)


class Wire:
    """Namespace of the raw-wire helpers above, handed to tests as a fixture."""

    frames_of = staticmethod(frames_of)
    header = staticmethod(header)
    hello = staticmethod(hello)
    packed = staticmethod(packed)
    read_message = staticmethod(read_message)
    RawPeer = RawPeer
    wait_for_log = staticmethod(wait_for_log)
    wait_until = staticmethod(wait_until)


@pytest.fixture
def wire() -> type[Wire]:
    return Wire


@pytest.fixture
def core_logs(caplog):
    """caplog recording distributed_core's INFO and above."""
    caplog.set_level(logging.INFO, logger="distributed_core")
    return caplog
