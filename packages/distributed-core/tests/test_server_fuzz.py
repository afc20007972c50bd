"""Fuzz a running Server with seeded random byte strings, before and after the handshake.

``DISTRIBUTED_FUZZ_N`` (default 20000) byte strings are generated; each is sent
once before the handshake (on a raw socket) and once after a successful one.
Every connection ends with a run of 0xff bytes, which completes any message
the fuzz left open within the limits and then breaks the framing, so the
server always closes the connection itself: nothing waits on timeouts, and
the server side ends up with the TIME_WAITs, not our ephemeral ports.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import struct
import time

import msgpack

from distributed_core import Limits, connect, dumps
from distributed_core.protocol import pack_frames
from distributed_core.testing import gen_test, serve

FUZZ_N = int(os.environ.get("DISTRIBUTED_FUZZ_N", "20000"))
IN_FLIGHT = 50
LIMITS = Limits(max_frames=8, max_frame_bytes=4096, max_message_bytes=4096)
# enough to finish any message the limits allow (header + payload), then a bad header
TERMINATOR = b"\xff" * (8 * 9 + 4096 + 64)
PRE_TERMINATOR = b"\xff" * (8 * 5 + Limits.handshake().max_message_bytes + 64)

SEEDS = [
    {"op": "ping"},
    {"op": "echo", "x": [1, 2.5, "three", b"four", None, True]},
    {"op": "echo", "x": {("a", 1): (1, {2, 3}), 5: frozenset({b"x"})}},
    {"op": "identity", "reply": False},
    {"op": "close"},
    ["not", "a", "map"],
    {"no-op": 1},
    {"op": "nope", "k": -(2**63)},
]


def fuzz_cases(n: int, seed: int = 0):
    rng = random.Random(seed)
    seeds = [pack_frames(dumps(s)) for s in SEEDS]
    first_frames = [dumps(s)[0] for s in SEEDS]
    for _ in range(n):
        kind = rng.randrange(6)
        if kind == 0:  # noise
            yield rng.randbytes(rng.randrange(0, 64))
        elif kind == 1:  # a plausible header, random lengths, random content, maybe cut short
            count = rng.randrange(0, 6)
            lengths = [rng.choice([0, 1, 7, 100, 4096, 4097, 2**32, 2**63]) for _ in range(count)]
            body = rng.randbytes(rng.randrange(0, 200))
            yield struct.pack(f"<{count + 1}Q", count, *lengths) + body
        elif kind == 2:  # well framed, random content
            frames = [rng.randbytes(rng.randrange(0, 40)) for _ in range(rng.randrange(1, 4))]
            yield pack_frames(frames)
        elif kind == 3:  # well framed, content msgpack-ish: a valid seed's frame 0 mutated
            payload = bytearray(rng.choice(first_frames))
            for _ in range(rng.randrange(1, 4)):
                payload[rng.randrange(len(payload))] = rng.randrange(256)
            yield pack_frames([bytes(payload)])
        elif kind == 4:  # a valid message with bytes flipped, inserted or removed anywhere
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(len(data))
                op = rng.randrange(3)
                if op == 0:
                    data[i] = rng.randrange(256)
                elif op == 1:
                    data.insert(i, rng.randrange(256))
                else:
                    del data[i]
            yield bytes(data)
        else:  # random extension types, including nested ones
            yield pack_frames([_random_ext(rng, depth=rng.randrange(1, 40))])


def _random_ext(rng, depth: int) -> bytes:
    data = msgpack.packb(rng.choice([[], [1, 2], {"a": 1}, None, b"x"]))
    for _ in range(depth):
        code = rng.choice([0, 1, 2, 3, 5, 6, 127])
        data = msgpack.packb(msgpack.ExtType(code, data if rng.random() < 0.9 else rng.randbytes(8)))
    return data


async def exchange(host: str, port: int, data: bytes) -> None:
    """Send ``data`` and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass  # the server closed with our bytes unread: a reset
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


@gen_test(timeout=300)
async def test_fuzz(caplog):
    caplog.set_level(logging.INFO, logger="distributed_core")
    hello_bytes = pack_frames(
        dumps(
            {
                "distributed": "hello",
                "protocol": [1, 0],
                "package": "fuzzer",
                "version": "0",
                "python": "3",
                "role": "connector",
                "name": "fuzz",
                "auth": False,
                "nonce": os.urandom(32),
            }
        )
    )
    cases = list(fuzz_cases(FUZZ_N))
    jobs = collections.deque()
    for case in cases:
        jobs.append(case + PRE_TERMINATOR)  # before the handshake
        jobs.append(hello_bytes + case + TERMINATOR)  # after it
    start = time.monotonic()
    async with serve({"echo": lambda comm, x: x}, limits=LIMITS) as server:
        host, port = "127.0.0.1", server.port
        bystander = await connect(server.address)

        async def worker():
            while jobs:
                await exchange(host, port, jobs.popleft())

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        elapsed = time.monotonic() - start

        # everything was closed by the server, nothing is left open
        assert server.comms == {c for c in server.comms if c.peer_address == bystander.local_address}
        # the server still works, on a new connection and on the old one
        for comm in [bystander, await connect(server.address)]:
            await comm.write({"op": "ping"})
            assert await comm.read() == {"status": "OK", "result": "pong"}
            await comm.close()

    problems = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not problems, problems[0].getMessage()
    refused = sum("refused connection from tcp://127.0.0.1:" in r.getMessage() for r in caplog.records)
    assert refused > FUZZ_N // 2
    logging.getLogger(__name__).info(
        "fuzz: %d byte strings x 2 in %.1fs (%.0f connections/s)",
        FUZZ_N,
        elapsed,
        2 * FUZZ_N / elapsed,
    )
