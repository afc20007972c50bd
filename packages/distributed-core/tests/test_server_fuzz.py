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
import contextlib
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
        data = msgpack.packb(
            msgpack.ExtType(code, data if rng.random() < 0.9 else rng.randbytes(8))
        )
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


class Tally(logging.Handler):
    """Counts records without formatting them (pytest's capture costs ~0.2 ms a record)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.counts = collections.Counter()
        self.errors = []

    def emit(self, record):
        self.counts[record.levelname] += 1
        if record.levelno >= logging.ERROR:
            self.errors.append(record)


@contextlib.contextmanager
def tallied(logger_name: str):
    logger = logging.getLogger(logger_name)
    tally = Tally()
    saved = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(tally)
    try:
        yield tally
    finally:
        logger.removeHandler(tally)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def hello_bytes() -> bytes:
    hello = {
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
    return pack_frames(dumps(hello))


@gen_test(timeout=300)
async def test_fuzz():
    hello = hello_bytes()
    jobs = collections.deque()
    for case in fuzz_cases(FUZZ_N):
        jobs.append(case + PRE_TERMINATOR)  # before the handshake
        jobs.append(hello + case + TERMINATOR)  # after it
    start = time.monotonic()
    with tallied("distributed_core") as tally:
        async with serve({"echo": lambda comm, x: x}, limits=LIMITS) as server:
            bystander = await connect(server.address)

            async def worker():
                while jobs:
                    await exchange("127.0.0.1", server.port, jobs.popleft())

            await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
            elapsed = time.monotonic() - start

            # the server closed every fuzzed connection itself
            assert [c.peer_address for c in server.comms] == [bystander.local_address]
            # and still works, on a new connection and on the old one
            for comm in [bystander, await connect(server.address)]:
                await comm.write({"op": "ping"})
                assert await comm.read() == {"status": "OK", "result": "pong"}
                await comm.close()

    assert not tally.errors, tally.errors[0].getMessage()  # "unexpected error serving ..."
    assert tally.counts["WARNING"] > FUZZ_N  # refused / closed / bad message, each logged
    logging.getLogger(__name__).info(
        "fuzz: %d byte strings x 2 in %.1fs (%.0f connections/s); %s",
        FUZZ_N,
        elapsed,
        2 * FUZZ_N / elapsed,
        dict(tally.counts),
    )
