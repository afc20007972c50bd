"""Bounds on every wait of a connection (issue 8).

A frame count over the limit closes the connection once its 8 bytes are in;
TCP keepalive and TCP_USER_TIMEOUT on both ends; ``idle_timeout`` on a read
and on an rpc reply; ``connect`` to a host that never answers; IPv6.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys

import pytest

from distributed_core import (
    CommClosedError,
    CommTimeoutError,
    ConnectionPool,
    Timeouts,
    connect,
    rpc,
)
from distributed_core.protocol import pack_frames
from distributed_core.serialize import dumps
from distributed_core.testing import gen_test, serve
from distributed_core.timeouts import DEFAULTS

# -- a frame count over the limit ------------------------------------------------


@gen_test()
async def test_count_over_the_limit_before_the_hello_closes_at_8_bytes(wire, core_logs):
    # a long handshake deadline: only refusing the 8 bytes themselves closes it
    async with serve({}, handshake_timeout=60) as server:
        async with await wire.RawPeer.open(server.address) as peer:
            await peer.send(struct.pack("<Q", 2**40))  # 8 bytes and nothing more
            # the server's hello, then the close (10 s bounds this wait; the
            # old code waited for 8 more bytes or the 60 s handshake deadline)
            await peer.read_until_closed(timeout=10)
        await wire.wait_for_log(core_logs, r"refused connection from .*1099511627776 frames")
        async with rpc(server.address) as r:
            assert await r.ping() == "pong"


@gen_test()
async def test_count_over_the_limit_after_the_hello_closes_at_8_bytes(wire, core_logs):
    async with serve({}) as server:
        comm = await connect(server.address)
        try:
            await comm.stream.write(struct.pack("<Q", 2**40))
            with pytest.raises(CommClosedError):
                await asyncio.wait_for(comm.read(), 10)
        finally:
            await comm.close()
        await wire.wait_for_log(core_logs, r"closing connection from .*1099511627776 frames")


@gen_test()
async def test_client_refuses_a_bad_count_from_the_server_at_8_bytes():
    accepted = []

    async def handle(reader, writer):
        accepted.append(writer)
        writer.write(struct.pack("<Q", 2**40))

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises(Exception, match="1099511627776 frames"):
            await connect(f"tcp://127.0.0.1:{port}", timeout=30)
    finally:
        for w in accepted:
            w.close()
        srv.close()
        await srv.wait_closed()


# -- TCP keepalive and TCP_USER_TIMEOUT ---------------------------------------------


def tcp_options(sock) -> dict:
    opts = {"keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0}
    for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT"):
        if hasattr(socket, name):
            opts[name] = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
    return opts


def expected(t: Timeouts) -> dict:
    want = {
        "keepalive": True,
        "TCP_KEEPIDLE": t.tcp_keepalive_idle,
        "TCP_KEEPINTVL": t.tcp_keepalive_interval,
        "TCP_KEEPCNT": t.tcp_keepalive_count,
        "TCP_USER_TIMEOUT": int(t.tcp_user_timeout * 1000),
    }
    return {k: v for k, v in want.items() if k == "keepalive" or hasattr(socket, k)}


@gen_test()
async def test_keepalive_and_user_timeout_on_both_ends(wire, transport):
    server_t = Timeouts(
        tcp_keepalive_idle=7, tcp_keepalive_interval=2, tcp_keepalive_count=4, tcp_user_timeout=12.5
    )
    client_t = Timeouts(
        tcp_keepalive_idle=3, tcp_keepalive_interval=1, tcp_keepalive_count=6, tcp_user_timeout=9
    )
    async with serve(
        {}, transport.listen, security=transport.server_security, timeouts=server_t
    ) as server:
        comm = await connect(server.address, timeouts=client_t, security=transport.client_security)
        try:
            await wire.wait_until(lambda: server.comms, what="the server's side of the comm")
            (server_side,) = server.comms
            assert tcp_options(comm.stream.socket) == expected(client_t)
            assert tcp_options(server_side.stream.socket) == expected(server_t)
        finally:
            await comm.close()


@gen_test()
async def test_defaults_and_rpc_pool_pass_timeouts(wire):
    t = Timeouts(tcp_keepalive_idle=11, tcp_keepalive_count=2, tcp_user_timeout=4)
    async with serve({}) as server:
        async with rpc(server.address, timeouts=t) as r:
            assert await r.ping() == "pong"
            (idle,) = r.pool._idle[server.address]
            assert tcp_options(idle.stream.socket) == expected(t)
            assert r.pool.connect_timeout == t.connect_timeout
        (server_side,) = server.comms or [None]
        if server_side is not None:  # not yet gone after the client's close
            assert tcp_options(server_side.stream.socket) == expected(DEFAULTS)
        comm = await connect(server.address)
        try:
            assert tcp_options(comm.stream.socket) == expected(DEFAULTS)
        finally:
            await comm.close()


@gen_test()
async def test_keepalive_can_be_turned_off():
    async with serve({}) as server:
        comm = await connect(
            server.address, timeouts=Timeouts(tcp_keepalive_idle=0, tcp_user_timeout=0)
        )
        try:
            sock = comm.stream.socket
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
            if hasattr(socket, "TCP_USER_TIMEOUT"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 0
        finally:
            await comm.close()


def test_pool_connect_timeout_defaults_to_timeouts():
    assert ConnectionPool().connect_timeout == DEFAULTS.connect_timeout
    assert ConnectionPool(timeouts=Timeouts(connect_timeout=2)).connect_timeout == 2
    assert (
        ConnectionPool(connect_timeout=3, timeouts=Timeouts(connect_timeout=2)).connect_timeout == 3
    )


# -- idle_timeout -------------------------------------------------------------------


async def _silent(comm):
    await asyncio.Event().wait()  # never answers (cancelled when the server closes)


@gen_test()
async def test_rpc_idle_timeout_on_a_silent_server():
    async with serve({"silent": _silent}) as server:
        async with rpc(server.address, idle_timeout=0.3) as r:
            with pytest.raises(CommTimeoutError) as info:
                await r.silent()
            assert r.pool.open == 0  # the connection was discarded
            assert await r.ping() == "pong"  # a new one works
    e = info.value
    assert isinstance(e, CommClosedError) and isinstance(e, TimeoutError)
    assert "op 'silent'" in str(e) and server.address in str(e) and "0.3s" in str(e)
    assert "idle_timeout" in str(e)


@gen_test()
async def test_rpc_idle_timeout_and_total_timeout_together():
    async with serve({"silent": _silent}) as server:
        async with rpc(server.address, idle_timeout=0.3, timeout=30) as r:
            with pytest.raises(CommTimeoutError, match="0.3s"):
                await r.silent()


@gen_test()
async def test_comm_read_idle_timeout_names_peer_and_seconds(transport):
    async with serve(
        {"silent": _silent}, transport.listen, security=transport.server_security
    ) as server:
        comm = await connect(server.address, security=transport.client_security)
        try:
            await comm.write({"op": "silent"})
            with pytest.raises(CommTimeoutError) as info:
                await comm.read(idle_timeout=0.2)
            assert comm.closed()
        finally:
            await comm.close()
    assert server.address in str(info.value) and "0.2s" in str(info.value)


TRICKLE_CHUNKS = 30
TRICKLE_GAP = 0.05  # seconds between chunks: far below the idle timeout


async def _trickle(comm, size):
    """Send one message slowly, in chunks: bytes keep flowing for ~1.5 s."""
    data = pack_frames(dumps({"status": "OK", "result": b"x" * size}))
    step = len(data) // TRICKLE_CHUNKS + 1
    for i in range(0, len(data), step):
        await comm.stream.write(data[i : i + step])
        await asyncio.sleep(TRICKLE_GAP)


@pytest.mark.parametrize("size", [1000, 300_000], ids=["small-message", "large-frame"])
@gen_test()
async def test_idle_timeout_does_not_cut_a_transfer_that_keeps_flowing(size, transport):
    idle = 1.0  # less than the whole transfer (30 x 0.05 s), far more than a gap
    async with serve(
        {"trickle": _trickle}, transport.listen, security=transport.server_security
    ) as server:
        comm = await connect(server.address, security=transport.client_security)
        try:
            await comm.write({"op": "trickle", "size": size, "reply": False})
            msg = await comm.read(idle_timeout=idle)
            assert msg == {"status": "OK", "result": b"x" * size}
            assert not comm.closed()
            await comm.write({"op": "ping"})
            assert (await comm.read(idle_timeout=idle))["result"] == "pong"
        finally:
            await comm.close()


@gen_test()
async def test_idle_timeout_must_be_positive():
    with pytest.raises(ValueError, match="idle_timeout"):
        rpc("tcp://127.0.0.1:1", idle_timeout=0)
    async with serve({}) as server:
        comm = await connect(server.address)
        try:
            with pytest.raises(ValueError, match="idle_timeout"):
                await comm.read(idle_timeout=-1)
        finally:
            await comm.close()


# -- connect to an address that never answers ----------------------------------------


@gen_test()
async def test_connect_to_a_host_that_never_answers_is_bounded():
    # A listener whose accept queue is full drops every new SYN, as a host
    # that vanished does (Linux); nothing leaves loopback.
    if not sys.platform.startswith("linux"):
        pytest.skip("relies on Linux dropping SYNs to a full accept queue")
    lsock = socket.socket()
    fillers = []
    try:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(0)
        port = lsock.getsockname()[1]
        for _ in range(8):  # fill the accept queue until a connect hangs
            s = socket.socket()
            s.settimeout(0.3)
            fillers.append(s)
            try:
                s.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            pytest.skip("the kernel accepted every connection; cannot simulate a dead host")
        address = f"tcp://127.0.0.1:{port}"
        with pytest.raises(CommClosedError) as info:
            await asyncio.wait_for(connect(address, timeout=0.5), 10)
        assert address in str(info.value) and "0.5s" in str(info.value)
        assert "connect_timeout" in str(info.value)
        with pytest.raises(CommClosedError, match="within 0.5s"):
            async with rpc(address, connect_timeout=0.5) as r:
                await asyncio.wait_for(r.ping(), 10)
    finally:
        for s in fillers:
            s.close()
        lsock.close()


@gen_test()
async def test_a_listener_that_never_says_hello_is_bounded():
    accepted = []

    async def silent(reader, writer):
        accepted.append(writer)

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises(CommClosedError, match=r"did not answer the hello within .*s"):
            await asyncio.wait_for(connect(f"tcp://127.0.0.1:{port}", timeout=0.2), 10)
    finally:
        for w in accepted:
            w.close()
        srv.close()
        await srv.wait_closed()


# -- IPv6 ------------------------------------------------------------------------------


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1)")


@needs_ipv6
@gen_test()
async def test_ipv6_end_to_end():
    async with serve({"echo": lambda comm, x: x}, "tcp://[::1]:0") as server:
        assert server.address.startswith("tcp://[::1]:")
        assert server.port > 0
        async with rpc(server.address) as r:
            assert await r.echo(x={"a": (1, 2)}) == {"a": (1, 2)}
            assert (await r.identity())["address"] == server.address
        comm = await connect(f"[::1]:{server.port}")
        try:
            assert comm.peer_address == server.address
            assert comm.local_address.startswith("tcp://[::1]:")
            await comm.write({"op": "echo", "x": b"y" * 200_000})
            assert (await comm.read())["result"] == b"y" * 200_000
        finally:
            await comm.close()


@needs_ipv6
@gen_test()
async def test_ipv6_keepalive_and_idle_timeout():
    async with serve({"silent": _silent}, "tcp://[::1]:0") as server:
        async with rpc(server.address, idle_timeout=0.2) as r:
            assert await r.ping() == "pong"
            (idle,) = r.pool._idle[server.address]
            assert tcp_options(idle.stream.socket) == expected(DEFAULTS)
            with pytest.raises(CommTimeoutError, match=r"\[::1\]"):
                await r.silent()
