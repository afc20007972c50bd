"""Throw bad input at a running Server; it must survive every attack.

After each attack: the server answers ``ping`` on a new connection, a
connection opened before the attack still works, memory stayed within
bounds (tracemalloc peak), and the log says what was wrong, naming the peer.
"""

from __future__ import annotations

import contextlib
import re
import tracemalloc

import msgpack
import pytest

from distributed_core import CommClosedError, Failure, Limits, RemoteTraceback, connect
from distributed_core.serialize import EXT_TUPLE
from distributed_core.testing import gen_test, serve

LIMITS = Limits(max_frames=16, max_frame_bytes=2**20, max_message_bytes=2**20)
MEMORY_BUDGET = 2 * 2**20  # peak bytes traced during one attack


def boom(comm):
    raise ValueError("boom")


HANDLERS = {"echo": lambda comm, x: x, "boom": boom}


async def ping(comm) -> None:
    await comm.write({"op": "ping"})
    assert await comm.read() == {"status": "OK", "result": "pong"}


@contextlib.asynccontextmanager
async def attacked_server(**kwargs):
    """A server and a bystander connection; checks the server is fine afterwards."""
    kwargs.setdefault("limits", LIMITS)
    async with serve(HANDLERS, **kwargs) as server:
        bystander = await connect(server.address)
        try:
            await ping(bystander)
            tracemalloc.start()
            try:
                yield server
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert peak < MEMORY_BUDGET, f"attack made the process allocate {peak} bytes"
            comm = await connect(server.address)
            try:
                await ping(comm)
            finally:
                await comm.close()
            await ping(bystander)
        finally:
            await bystander.close()


def nested(depth: int) -> bytes:
    data = msgpack.packb([])
    for _ in range(depth):
        data = msgpack.packb(msgpack.ExtType(EXT_TUPLE, data))
    return data


# -- attacks: each returns the attacking peer's address -------------------------------
# Before the handshake, on raw sockets.


async def raw_then_wait(server, wire, data: bytes, eof: bool = False) -> str:
    async with await wire.RawPeer.open(server.address) as peer:
        await peer.send(data)
        if eof:
            peer.writer.write_eof()
        await peer.read_until_closed()
    return peer.address


async def http_request(server, wire):
    return await raw_then_wait(server, wire, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")


async def random_bytes(server, wire):
    import random

    return await raw_then_wait(server, wire, random.Random(42).randbytes(1000))


async def huge_length_before_hello(server, wire):
    return await raw_then_wait(server, wire, wire.header(1, 2**63))


async def huge_count_before_hello(server, wire):
    return await raw_then_wait(server, wire, wire.header(2**40, 0))


async def truncated_hello(server, wire):
    return await raw_then_wait(server, wire, wire.header(1, 100) + b"x" * 10, eof=True)


async def truncated_header_before_hello(server, wire):
    return await raw_then_wait(server, wire, b"\x01\x00\x00", eof=True)


async def protocol_99(server, wire):
    return await raw_then_wait(server, wire, wire.packed(wire.hello(protocol=[99, 0])))


async def never_speaks(server, wire):
    # short for this connection only: the checks afterwards may run on a
    # loaded machine, where 0.3 s is not always enough for a real handshake
    saved, server.handshake_timeout = server.handshake_timeout, 0.3
    try:
        async with await wire.RawPeer.open(server.address) as peer:
            await peer.read_until_closed()
    finally:
        server.handshake_timeout = saved
    return peer.address


async def hello_not_a_map(server, wire):
    return await raw_then_wait(server, wire, wire.packed([1, 2, 3]))


async def deeply_nested_hello(server, wire):
    return await raw_then_wait(server, wire, wire.frames_of(nested(300)))


async def oversized_hello(server, wire):
    return await raw_then_wait(server, wire, wire.header(1, 10**6) + b"\0" * 1000)


# After a successful handshake, writing raw bytes to comm.stream.


async def on_stream(server, data: bytes, *, hang_up: bool = False) -> str:
    comm = await connect(server.address)
    try:
        await comm.stream.write(data)
        if hang_up:
            comm.abort()
        else:
            with pytest.raises(CommClosedError):
                await comm.read()
    finally:
        await comm.close()
    return comm.local_address


async def huge_length(server, wire):
    return await on_stream(server, wire.header(1, 2**63))


async def huge_count(server, wire):
    return await on_stream(server, wire.header(2**40, 0))


async def zero_count(server, wire):
    return await on_stream(server, wire.header(0, 0))


async def over_message_limit(server, wire):
    # within what Limits allow per frame, over what they allow per message
    return await on_stream(server, wire.header(3, 2**19, 2**19, 2**19))


async def over_frame_limit_small_header(server, wire):
    return await on_stream(server, wire.header(1, 2**28) + b"\0" * 100)


async def disconnect_mid_message(server, wire):
    return await on_stream(server, wire.header(2, 5, 1000) + b"hello" + b"x" * 10, hang_up=True)


async def disconnect_mid_header(server, wire):
    return await on_stream(server, wire.header(3, 5)[:12], hang_up=True)


# Well-framed requests that are wrong: error reply, connection stays usable.


async def expect_error(server, data, type_name: str, match: str) -> str:
    comm = await connect(server.address)
    try:
        if isinstance(data, bytes):
            await comm.stream.write(data)
        else:
            await comm.write(data)
        reply = await comm.read()
        assert reply["status"] == "error", reply
        assert reply["type"] == type_name, reply
        assert re.search(match, reply["message"]), reply["message"]
        await ping(comm)  # still usable
    finally:
        await comm.close()
    return comm.local_address


async def undecodable(server, wire):
    return await expect_error(
        server, wire.frames_of(b"\xc1\xc1"), "DecodeError", "could not decode"
    )


async def deeply_nested(server, wire):
    return await expect_error(
        server, wire.frames_of(nested(300)), "DecodeError", "nested more than"
    )


async def bad_frame_reference(server, wire):
    payload = msgpack.packb({"op": "echo", "x": msgpack.ExtType(5, msgpack.packb([3, 0]))})
    return await expect_error(server, wire.frames_of(payload), "DecodeError", "refers to frame 3")


async def not_a_map(server, wire):
    return await expect_error(server, [1, 2, 3], "TypeError", r"expected a map like \{'op': name")


async def no_op(server, wire):
    return await expect_error(server, {"x": 1}, "KeyError", "no 'op' key")


async def unknown_op(server, wire):
    return await expect_error(
        server,
        {"op": "nope"},
        "ValueError",
        "unknown op 'nope'; this server knows: boom, echo, identity, ping",
    )


async def op_not_a_string(server, wire):
    return await expect_error(server, {"op": ("a", 1)}, "ValueError", r"unknown op \('a', 1\)")


async def wrong_arguments(server, wire):
    return await expect_error(
        server,
        {"op": "echo", "y": 1},
        "TypeError",
        r"wrong arguments for op 'echo'.*expected echo\(x\)",
    )


async def non_string_keyword(server, wire):
    return await expect_error(server, {"op": "echo", "x": 1, 7: 2}, "TypeError", "wrong arguments")


async def handler_raises(server, wire):
    comm = await connect(server.address)
    try:
        await comm.write({"op": "boom"})
        reply = await comm.read()
        with pytest.raises(ValueError, match="boom") as info:
            Failure.from_reply(reply).reraise()
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "in boom" in info.value.__cause__.tb
        await ping(comm)
    finally:
        await comm.close()
    return comm.local_address


ATTACKS = [
    # name, attack, log (regex, {peer} is the attacker's address)
    (
        http_request,
        "refused connection from {peer}: .*did not start with a valid hello: peer sent a message of \\d+ frames",
    ),
    (random_bytes, "refused connection from {peer}: .*did not start with a valid hello"),
    (
        huge_length_before_hello,
        "refused connection from {peer}: .*frame of 9223372036854775808 bytes",
    ),
    (huge_count_before_hello, "refused connection from {peer}: .*message of 1099511627776 frames"),
    (truncated_hello, "connection from {peer} lost during the handshake: .*middle of a message"),
    (
        truncated_header_before_hello,
        "connection from {peer} lost during the handshake: .*middle of a message",
    ),
    (protocol_99, "refused connection from {peer}: incompatible wire protocol.*protocol 99.0"),
    (never_speaks, "closing connection from {peer}: no hello within 0.3s"),
    (hello_not_a_map, "refused connection from {peer}: .*not speaking the distributed protocol"),
    (deeply_nested_hello, "refused connection from {peer}: .*nested more than"),
    (
        oversized_hello,
        "refused connection from {peer}: .*frame of 1000000 bytes; the limit is 65536",
    ),
    (
        huge_length,
        "closing connection from {peer}: peer announced a frame of 9223372036854775808 bytes",
    ),
    (huge_count, "closing connection from {peer}: peer sent a message of 1099511627776 frames"),
    (zero_count, "closing connection from {peer}: peer sent a message with 0 frames"),
    (
        over_message_limit,
        "closing connection from {peer}: .*message of 1572864 bytes; the limit is 1048576",
    ),
    (over_frame_limit_small_header, "closing connection from {peer}: .*frame of 268435456 bytes"),
    (disconnect_mid_message, "connection from {peer} lost: .*middle of a message"),
    (disconnect_mid_header, "connection from {peer} lost: .*middle of a message"),
    (undecodable, "bad message from {peer}: could not decode"),
    (deeply_nested, "bad message from {peer}: .*nested more than"),
    (bad_frame_reference, "bad message from {peer}: .*refers to frame 3"),
    (not_a_map, "bad message from {peer}: expected a map"),
    (no_op, "bad message from {peer}: message has no 'op' key"),
    (unknown_op, "bad request from {peer}: unknown op 'nope'"),
    (op_not_a_string, "bad request from {peer}: unknown op"),
    (wrong_arguments, "bad request from {peer}: wrong arguments for op 'echo'"),
    (non_string_keyword, "bad request from {peer}: wrong arguments for op 'echo'"),
    (handler_raises, "op 'boom' from {peer} raised ValueError: boom"),
]


@pytest.mark.parametrize("attack, log", ATTACKS, ids=[a.__name__ for a, _ in ATTACKS])
@gen_test()
async def test_server_survives(attack, log, wire, core_logs):
    async with attacked_server() as server:
        peer = await attack(server, wire)
        assert peer.startswith("tcp://127.0.0.1:")
        await wire.wait_for_log(core_logs, log.format(peer=re.escape(peer)))


@gen_test()
async def test_slow_handshake_does_not_block_others(wire):
    async with serve(HANDLERS, handshake_timeout=5) as server:
        silent = [await wire.RawPeer.open(server.address) for _ in range(20)]
        try:
            comm = await connect(server.address, timeout=2)
            await ping(comm)
            await comm.close()
        finally:
            for peer in silent:
                await peer.close()


@gen_test()
async def test_connection_stays_usable_after_many_bad_requests(core_logs):
    async with serve(HANDLERS) as server:
        comm = await connect(server.address)
        try:
            for bad in [[1], {"x": 1}, {"op": "nope"}, {"op": "echo"}, {"op": "boom"}] * 20:
                await comm.write(bad)
                assert (await comm.read())["status"] == "error"
            await ping(comm)
        finally:
            await comm.close()


@gen_test()
async def test_unknown_op_without_reply_is_silent_but_logged(core_logs, wire):
    async with serve(HANDLERS) as server:
        comm = await connect(server.address)
        try:
            await comm.write({"op": "nope", "reply": False})
            await ping(comm)  # the next reply is the ping's
        finally:
            await comm.close()
        await wire.wait_for_log(core_logs, "unknown op 'nope'")


@gen_test()
async def test_unserializable_result_is_an_error_reply():
    import threading

    async with serve({"lock": lambda comm: threading.Lock()}) as server:
        comm = await connect(server.address)
        try:
            await comm.write({"op": "lock"})
            reply = await comm.read()
            assert reply["status"] == "error"
            assert reply["type"].endswith("LocalProtocolError")
            assert "_thread.lock" in reply["message"]
            await ping(comm)
        finally:
            await comm.close()
