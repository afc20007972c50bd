"""connect, the hello handshake and protocol versions."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from distributed_core import (
    PROTOCOL_VERSION,
    CommClosedError,
    HandshakeError,
    ProtocolVersionError,
    Server,
    __version__,
    connect,
    read,
    write,
)
from distributed_core.rpc import ConnectionPool, rpc
from distributed_core.testing import free_port, gen_test, serve


@gen_test()
async def test_connect_and_peer_info():
    async with serve({}, name="the-server") as server:
        comm = await connect(server.address, name="the-client")
        try:
            info = comm.peer_info
            assert info["distributed"] == "hello"
            assert info["protocol"] == list(PROTOCOL_VERSION)
            assert info["version"] == __version__
            assert info["package"] == "distributed-core"
            assert info["python"] == "%d.%d.%d" % sys.version_info[:3]
            assert info["role"] == "listener"
            assert info["name"] == "the-server"
            assert comm.peer_address == server.address
            assert comm.local_address.startswith("tcp://127.0.0.1:")
            assert comm.allow_pickle
            assert "open" in repr(comm)
            await write(comm, {"op": "ping"})
            assert await read(comm) == {"status": "OK", "result": "pong"}
        finally:
            await comm.close()
        assert comm.closed()
        assert "closed" in repr(comm)


@gen_test()
async def test_hello_names_the_client_only_when_given():
    """Issue 10: a client's id rides in the hello; the listener reads it from peer_info."""
    seen = []
    handlers = {"whose": lambda comm: seen.append(comm.peer_info.get("client", "absent"))}
    async with serve(handlers) as server:
        pool = ConnectionPool(client="c0ffee")
        try:
            await rpc(server.address, pool=pool).whose()
            async with rpc(server.address) as r:  # its own pool, no client
                await r.whose()
            comm = await connect(server.address, client="c1")
            await write(comm, {"op": "whose"})
            await read(comm)
            await comm.close()
        finally:
            await pool.close()
        assert seen == ["c0ffee", "absent", "c1"]


@pytest.mark.parametrize("form", ["{host}:{port}", "tcp://{host}:{port}", "tuple"])
@gen_test()
async def test_connect_accepts_address_forms(form):
    async with serve({}) as server:
        host, port = "127.0.0.1", server.port
        address = (host, port) if form == "tuple" else form.format(host=host, port=port)
        comm = await connect(address)
        assert comm.peer_address == f"tcp://127.0.0.1:{port}"
        await comm.close()


@gen_test()
async def test_connect_gives_up_after_timeout_naming_the_address():
    port = free_port()
    start = time.monotonic()
    with pytest.raises(CommClosedError) as info:
        await connect(f"tcp://127.0.0.1:{port}", timeout=0.5)
    elapsed = time.monotonic() - start
    assert 0.4 < elapsed < 3, elapsed
    assert f"tcp://127.0.0.1:{port}" in str(info.value)
    assert "0.5s" in str(info.value)


@gen_test()
async def test_connect_retries_until_the_server_listens():
    port = free_port()
    server = Server({})

    async def listen_later():
        await asyncio.sleep(0.3)
        await server.listen(f"tcp://127.0.0.1:{port}")

    task = asyncio.ensure_future(listen_later())
    try:
        comm = await connect(f"tcp://127.0.0.1:{port}", timeout=5)
        await comm.write({"op": "ping"})
        assert (await comm.read())["result"] == "pong"
        await comm.close()
    finally:
        await task
        await server.close()


@gen_test()
async def test_server_that_never_says_hello(wire):
    accepted = []

    async def silent(reader, writer):
        accepted.append(writer)

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises(CommClosedError, match="did not answer the hello"):
            await connect(f"tcp://127.0.0.1:{port}", timeout=0.2)
    finally:
        for w in accepted:
            w.close()
        srv.close()
        await srv.wait_closed()


async def fake_server(wire, their_hello: dict, first: bytes | None = None):
    """A listener that answers every connection with ``their_hello``; returns (server, received)."""
    received = []

    async def handle(reader, writer):
        try:
            writer.write(first if first is not None else wire.packed(their_hello))
            received.append(await wire.read_message(reader))
            await reader.read()  # until the client hangs up
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, received


@pytest.mark.parametrize(
    "protocol, package, advice",
    [
        ([99, 0], "distributed-core 9.0.0", "upgrade distributed-core on this side"),
        ([0, 5], "distributed-core 0.0.1", "upgrade distributed-core on tcp://127.0.0.1:"),
    ],
    ids=["peer-newer", "peer-older"],
)
@gen_test()
async def test_client_refuses_incompatible_server(wire, protocol, package, advice):
    name, version = package.split()
    srv, received = await fake_server(
        wire, wire.hello(protocol=protocol, package=name, version=version, role="listener")
    )
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ProtocolVersionError) as info:
            await connect(f"tcp://127.0.0.1:{port}", timeout=2)
        text = str(info.value)
        ours = "%d.%d" % PROTOCOL_VERSION
        theirs = "%d.%d" % tuple(protocol)
        assert f"protocol {ours}" in text and f"protocol {theirs}" in text
        assert package in text
        assert advice in text
        assert f"tcp://127.0.0.1:{port}" in text
        # the server saw our hello, with our version: it can tell its user too
        await wire.wait_until(lambda: received, what="hello received")
        assert received[0]["protocol"] == list(PROTOCOL_VERSION)
        assert received[0]["version"] == __version__
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.mark.parametrize(
    "first, match",
    [
        ("not a map", "not speaking the distributed protocol"),
        ({"op": "ping"}, "not speaking the distributed protocol"),
        ({"distributed": "hello"}, "without a protocol version"),
        ({"distributed": "hello", "protocol": ["1", "0"]}, "without a protocol version"),
        ("raw:HTTP/1.1 200 OK\r\n\r\n", "did not start with a valid hello"),
        ("raw-frames:\xc1", "did not start with a valid hello"),
    ],
)
@gen_test()
async def test_client_refuses_a_server_that_is_not_ours(wire, first, match):
    if isinstance(first, str) and first.startswith("raw:"):
        data = first[4:].encode()
    elif isinstance(first, str) and first.startswith("raw-frames:"):
        data = wire.frames_of(first[11:].encode("latin-1"))
    else:
        data = wire.packed(first)
    srv, _ = await fake_server(wire, {}, first=data)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises(HandshakeError, match=match):
            await connect(f"tcp://127.0.0.1:{port}", timeout=2)
    finally:
        srv.close()
        await srv.wait_closed()


@gen_test()
async def test_server_refuses_newer_protocol_and_keeps_serving(wire, core_logs):
    async with serve({}) as server:
        async with await wire.RawPeer.open(server.address) as peer:
            their = await peer.read_message()
            assert their["protocol"] == list(PROTOCOL_VERSION)  # the peer learns our version
            await peer.send(wire.packed(wire.hello(protocol=[99, 0], package="future-core")))
            await peer.read_until_closed()
        text = await wire.wait_for_log(core_logs, "refused connection from " + peer.address)
        assert "protocol 1.0" in text and "protocol 99.0" in text
        assert "upgrade distributed-core on this side" in text
        comm = await connect(server.address)
        await comm.write({"op": "ping"})
        assert (await comm.read())["result"] == "pong"
        await comm.close()


@gen_test()
async def test_comm_closed_error_on_peer_close():
    async with serve({"close_me": lambda comm: comm.abort()}) as server:
        comm = await connect(server.address)
        await comm.write({"op": "close_me"})
        with pytest.raises(CommClosedError, match=server.address):
            await comm.read()
        assert comm.closed()
        with pytest.raises(CommClosedError):
            await comm.write({"op": "ping"})
        await comm.close()
