"""One comm suite, run against every transport (the ``transport`` fixture: tcp, tls)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from distributed_core import CommClosedError, RemoteTraceback, connect, rpc
from distributed_core.testing import gen_test, serve


class Boom(Exception):
    pass


def boom(comm, text):
    raise Boom(text)


async def nap(comm, seconds, tag):
    await asyncio.sleep(seconds)
    return tag


HANDLERS = {"echo": lambda comm, x: x, "boom": boom, "nap": nap}


def served(transport, handlers=HANDLERS):
    return serve(handlers, transport.listen, security=transport.server_security)


@gen_test()
async def test_ping(transport):
    async with served(transport) as server:
        assert server.address.startswith(transport.name + "://")
        comm = await connect(server.address, security=transport.client_security)
        await comm.write({"op": "ping"})
        assert await comm.read() == {"status": "OK", "result": "pong"}
        await comm.close()


@pytest.mark.parametrize("nbytes", [0, 1000, 8_000_000])
@gen_test()
async def test_echo_numpy(transport, nbytes):
    arr = np.random.default_rng(0).integers(0, 255, nbytes, dtype="uint8").reshape(-1, 8)
    async with served(transport) as server:
        async with rpc(server.address, security=transport.client_security) as r:
            out = await r.echo(x={"arr": arr, "key": ("x", 1)})
    assert out["key"] == ("x", 1)
    np.testing.assert_array_equal(out["arr"], arr)
    assert out["arr"].dtype == arr.dtype


@gen_test(timeout=60)
async def test_message_larger_than_tornado_default_buffer(transport):
    # tornado buffers at most 100 MB by default; large frames are read into
    # preallocated buffers instead
    big = bytearray(110 * 2**20)
    big[::4096] = b"x" * len(big[::4096])
    async with served(transport) as server:
        comm = await connect(server.address, security=transport.client_security)
        try:
            await comm.write({"op": "echo", "x": big})
            out = (await comm.read())["result"]
        finally:
            await comm.close()
    assert type(out) is bytearray
    assert out == big


@gen_test()
async def test_error_reply(transport):
    async with served(transport) as server:
        async with rpc(server.address, security=transport.client_security) as r:
            with pytest.raises(Boom, match="kaboom") as info:
                await r.boom(text="kaboom")
            cause = info.value.__cause__
            assert isinstance(cause, RemoteTraceback)
            assert "in boom" in cause.tb and "kaboom" in cause.tb
            # the connection that carried the error is still fine
            assert await r.echo(x=1) == 1
            assert r.pool.open == 1


@gen_test()
async def test_concurrency(transport):
    async with served(transport) as server:
        async with rpc(server.address, security=transport.client_security) as r:
            start = time.monotonic()
            results = await asyncio.gather(*(r.nap(seconds=0.2, tag=i) for i in range(20)))
            elapsed = time.monotonic() - start
            assert results == list(range(20))
            assert elapsed < 3, f"20 concurrent 0.2 s calls took {elapsed:.2f}s (4 s in turn)"
            assert r.pool.open == 20


@gen_test()
async def test_many_messages_both_ways_on_one_connection(transport):
    async with served(transport) as server:
        comm = await connect(server.address, security=transport.client_security)
        try:
            for i in range(50):
                await comm.write({"op": "echo", "x": [i, b"y" * i]})
            for i in range(50):
                assert (await comm.read())["result"] == [i, b"y" * i]
        finally:
            await comm.close()


@gen_test()
async def test_peer_close_is_comm_closed_error(transport):
    async with served(transport, {"hangup": lambda comm: comm.abort()}) as server:
        comm = await connect(server.address, security=transport.client_security)
        await comm.write({"op": "hangup"})
        with pytest.raises(CommClosedError):
            await comm.read()
        await comm.close()
