"""Proposed tests for the typed receive buffers (run against the patched core)."""

import asyncio
import struct

import numpy as np
import pytest

from distributed_core import Server, connect, dumps, rpc
from distributed_core.serialize import OOB_THRESHOLD as OOB

MB = 2**20


def _get(comm, kind):
    if kind == "bytes":
        return b"\x01" * (3 * MB) + b"end"
    if kind == "bytearray":
        return bytearray(b"\x02" * (3 * MB))
    if kind == "numpy":
        return np.arange(3 * MB // 8, dtype=np.int64)
    if kind == "nested":
        return (b"a" * (2 * MB), {b"b" * (2 * MB)}, [bytearray(b"c" * (2 * MB))], np.ones(MB))
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "numpy", "nested"])
def test_large_values_keep_type_and_content(kind):
    async def main():
        server = Server({"get": _get})
        await server.listen("tcp://127.0.0.1:0")
        try:
            async with rpc(server.address) as r:
                return await r.get(kind=kind)
        finally:
            await server.close()

    got = asyncio.run(main())
    if kind == "bytes":
        assert type(got) is bytes and got == _get(None, kind)
        assert hash(got) == hash(_get(None, kind))
    elif kind == "bytearray":
        assert type(got) is bytearray and got == _get(None, kind)
    elif kind == "numpy":
        assert got.flags.writeable and (got == _get(None, kind)).all()
    else:
        a, s, (ba,), arr = got
        assert type(a) is bytes and a == b"a" * (2 * MB)
        assert s == {b"b" * (2 * MB)}
        assert type(ba) is bytearray and ba == bytearray(b"c" * (2 * MB))
        assert arr.flags.writeable and arr.sum() == MB


def test_truncated_large_frame_is_a_clean_error():
    """A peer that announces a large bytes frame and goes away halfway."""

    async def main():
        server = Server({})
        await server.listen("tcp://127.0.0.1:0")
        comm = await connect(server.address)
        frames = dumps({"op": "ping", "x": b"z" * (5 * MB)})
        comm.stream.write(struct.pack("<3Q", 2, len(frames[0]), 5 * MB))
        comm.stream.write(frames[0])
        comm.stream.write(frames[1][:MB])
        await asyncio.sleep(0.1)
        comm.abort()
        for _ in range(200):  # the server drops the connection (within 2 s)
            if not server.comms:
                break
            await asyncio.sleep(0.01)
        assert not server.comms  # the server dropped the connection and is fine
        async with rpc(server.address) as r:
            assert await r.ping() == "pong"
        await server.close()

    asyncio.run(main())


def _small_arrays(comm, n):
    # small arrays: a small message (one piece) or small frames of a larger one
    return [np.arange(i, i + 1000, dtype=np.int64) for i in range(n)]


@pytest.mark.parametrize("n", [1, 200], ids=["small-message", "small-frames-of-large-message"])
def test_small_arrays_arrive_writable(n):
    """Any scheduler gives writable arrays; frames under 64 KiB must not come back read-only."""

    async def main():
        server = Server({"get": _small_arrays})
        await server.listen("tcp://127.0.0.1:0")
        try:
            async with rpc(server.address) as r:
                return await r.get(n=n)
        finally:
            await server.close()

    got = asyncio.run(main())
    assert len(got) == n
    for i, arr in enumerate(got):
        assert arr.flags.writeable, f"array {i} of {n} arrived read-only"
        arr[0] = -1  # and writing works
        assert arr[1] == i + 1


def test_loads_copies_only_small_read_only_buffers():
    from distributed_core import loads

    small = np.arange(10, dtype=np.int64)
    big = np.arange(OOB // 8 * 4, dtype=np.int64)
    frames = [bytes(f) for f in dumps([small, big])]  # every frame immutable bytes
    out_small, out_big = loads(frames)
    assert out_small.flags.writeable
    # a large read-only frame is used in place (never copied): it stays read-only
    assert not out_big.flags.writeable and (out_big == big).all()
